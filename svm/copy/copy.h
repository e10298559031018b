/* Internal: the copy engine. One engine copies a disk from one end to another; what an end is
 * (a raw file through the I/O engine, an NBD export through libnbd, an NFC stream, later a
 * disk layer stack) is hidden behind its table of operations (svm/copy/end.h), as nbdcopy's
 * struct rw_ops hides its backends.
 *
 * Work follows data: the engine walks the source's extent map, reads only data extents, in
 * request-size chunks with many requests in flight, checks each buffer for zeros at 4 KiB
 * granularity and writes only the non-zero runs, in disk order. Zero runs and zero extents are
 * skipped when the destination already reads as zeros, and sent as zero requests otherwise.
 *
 * Single-threaded: one thread runs svm_copy_run(), which drives both ends' completions from
 * one loop; nothing here is thread-safe.
 *
 *     struct svm_copy *c;
 *     struct svm_copy_options o = { .progress = fn, .cancel = &flag };
 *     r = svm_copy_new(src, dst, &o, &c);
 *     r = svm_copy_run(c, map);          map: the source's extents, or NULL to ask the source
 *     svm_copy_get_counters(c, &n);
 *     svm_copy_free(c);                  the ends stay the caller's
 */
#ifndef SVM_COPY_H
#define SVM_COPY_H

#include <stdbool.h>
#include <stdint.h>

#include "svm/copy/end.h"
#include "svm/disk/extents.h"

enum {
  SVM_COPY_ZERO_BLOCK = 4096,           /* zero detection granularity, as qemu-img -S 4k */
  SVM_COPY_DEFAULT_REQUEST = 2 << 20,
  SVM_COPY_DEFAULT_REQUESTS = 32,
};

/* done: bytes of the virtual disk dealt with so far (holes count once passed); total: its size.
 * Called from the copying thread. */
typedef void (*svm_copy_progress_fn)(void *opaque, uint64_t done, uint64_t total);

struct svm_copy_options {
  uint64_t request_size;    /* bytes per read, a multiple of 4096 (0: 2 MiB); clipped to the
                               ends' maximum request */
  unsigned requests;        /* requests in flight (0: 32) */
  /* The destination reads as zeros wherever it is not written (a fresh file, an export found
   * all zero): zeros are then skipped, never sent. */
  bool dst_reads_zero;
  /* Zero requests must leave the range allocated (thick and eager-zeroed provisioning). */
  bool zero_allocates;
  svm_copy_progress_fn progress;
  void *progress_opaque;
  volatile int *cancel;     /* set (e.g. by a signal handler) to stop with -ECANCELED */
  /* Optional: the engine is finished with the chunk [off, off+len) on both ends - its
   * writes completed (res 0), or it was given up (res < 0: failed, or the copy is failing).
   * For a caller that shares the source with writers and holds each chunk's range while it
   * is copied (a gate of svm/copy/end.h). Called from the copying thread. */
  void (*chunk_done)(void *opaque, uint64_t off, uint64_t len, int res);
  void *chunk_opaque;
  /* Optional: how much may be in flight now, asked before each read is started: at most
   * *slots chunks (set to `requests`; kept within 1..requests) of at most *bytes each (set to
   * the request size; kept within 4096..request size, rounded down to 4096). For a copy that
   * shares its source with a guest: the mirror eases off while the guest writes. Called from
   * the copying thread. */
  void (*pace)(void *opaque, unsigned *slots, uint64_t *bytes);
  void *pace_opaque;
};

struct svm_copy_counters {
  uint64_t bytes_read;          /* read from the source (data extents only) */
  uint64_t bytes_written;       /* data written to the destination */
  uint64_t bytes_skipped_zero;  /* read, found all zero in 4 KiB blocks, not written */
  uint64_t bytes_zeroed;        /* zero extents of the source said to the destination (zero
                                   requests, or writes of zeros where it has none) */
};

struct svm_copy;

/* src and dst stay the caller's and must outlive svm_copy_run(). o may be NULL (defaults).
 * Returns 0 or -errno (-ENOMEM, -EINVAL for an end that cannot read or write). */
int svm_copy_new(struct svm_copy_end *src, struct svm_copy_end *dst,
                 const struct svm_copy_options *o, struct svm_copy **out);

/* Copy [0, src size). map: the source's extent map, or NULL to read it from the source. Returns
 * 0, -ECANCELED when the cancel flag was set, or the first failure's -errno (svm_last_error()
 * names the end, the offset and the fix). Runs once. */
int svm_copy_run(struct svm_copy *c, const struct svm_extent_list *map);

void svm_copy_get_counters(const struct svm_copy *c, struct svm_copy_counters *out);
/* After a failed run, free the ends first: an end whose loop failed may still have requests
 * in flight on the engine's buffers until it is freed (a file end waits for them, an NBD end
 * drops them). */
void svm_copy_free(struct svm_copy *c);

#endif
