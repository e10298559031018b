/* svmotion disk conversion: copy a disk between raw files and NBD exports in the provisioning
 * asked for (thin, thick, eager-zeroed thick), or make a raw disk thin in place.
 *
 * Work follows data: only allocated extents are read (SEEK_DATA/SEEK_HOLE for files,
 * base:allocation block status for NBD), many requests in flight. A raw file destination is
 * written as a temporary file next to it and renamed into place only when complete and durable;
 * on any failure nothing of it is left and the source is never written.
 *
 * Functions return 0 or a negative errno and set the message svm_last_error() (svmotion/error.h).
 */
#ifndef SVMOTION_CONVERT_H
#define SVMOTION_CONVERT_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum svm_provisioning {
  SVM_PROVISIONING_THIN = 0,      /* sparse: zero blocks never allocated */
  SVM_PROVISIONING_THICK,         /* lazy-zeroed: all allocated, data written */
  SVM_PROVISIONING_EAGER,         /* eager-zeroed thick: every byte allocated and written */
};

/* "thin", "thick", "eager-zeroed-thick" */
const char *svm_provisioning_to_string(enum svm_provisioning p);
/* Accepts the names above; returns 0 or -EINVAL (with a message listing them). */
int svm_provisioning_from_string(const char *s, enum svm_provisioning *out);

struct svm_convert_options;

/* progress(opaque, done, total): bytes of the virtual disk dealt with so far (holes count as
 * dealt with as soon as they are passed), and its size. Called from the copying thread. */
typedef void (*svm_convert_progress_fn)(void *opaque, uint64_t done, uint64_t total);

struct svm_convert_options *svm_convert_options_new(void);   /* NULL when out of memory */
void svm_convert_options_free(struct svm_convert_options *o);
void svm_convert_options_set_provisioning(struct svm_convert_options *o, enum svm_provisioning p);
/* Overwrite an existing destination file (default: refuse). */
void svm_convert_options_set_force(struct svm_convert_options *o, bool force);
void svm_convert_options_set_progress(struct svm_convert_options *o, svm_convert_progress_fn fn,
                                      void *opaque);
/* Tuning: request size in bytes (a multiple of 4096, 64 KiB..32 MiB; default 2 MiB) and the
 * number of requests in flight (1..256; default 32). Returns 0 or -EINVAL. */
int svm_convert_options_set_request_size(struct svm_convert_options *o, uint64_t bytes);
int svm_convert_options_set_requests(struct svm_convert_options *o, unsigned n);
/* A flag the caller may set (e.g. from a SIGINT handler) to stop a conversion; it then fails
 * with -ECANCELED and cleans up as for any failure. */
void svm_convert_options_set_cancel_flag(struct svm_convert_options *o,
                                         volatile int *cancel);

struct svm_convert_stats {
  uint64_t size;                 /* virtual size of the disk */
  uint64_t bytes_read;           /* read from the source (data extents only) */
  uint64_t bytes_written;        /* data written to the destination (zeros included) */
  uint64_t bytes_skipped_zero;   /* read, found all zero, not written */
  uint64_t bytes_punched;        /* --punch-zeroes: made into holes */
  double seconds;
};

/* Copy SRC to DST. src, dst: a raw file path or an NBD URI (nbd://, nbds://, nbd+unix://...).
 * stats may be NULL. */
int svm_convert(const char *src, const char *dst, const struct svm_convert_options *o,
                struct svm_convert_stats *stats);

/* Punch holes over the allocated all-zero blocks of a raw disk file in place. */
int svm_convert_punch_zeroes(const char *disk, const struct svm_convert_options *o,
                             struct svm_convert_stats *stats);

/* True when s looks like an NBD URI rather than a file path. */
bool svm_convert_is_nbd_uri(const char *s);

#ifdef __cplusplus
}
#endif
#endif
