/* Internal to svm-convert's library side: its options, and the steps of svm_convert() that
 * live in their own files (source.c, dest.c). The copy itself is the copy engine's
 * (svm/copy/copy.h). */
#ifndef SVM_CONVERT_INTERNAL_H
#define SVM_CONVERT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <svmotion/convert.h>

#include "svm/copy/copy.h"
#include "svm/disk/extents.h"

enum { SVM_CONVERT_SECTOR = 512 };

struct svm_convert_options {
  enum svm_provisioning prov;
  bool force;
  svm_convert_progress_fn progress;
  void *progress_opaque;
  uint64_t request;
  unsigned requests;
  volatile int *cancel;
};

/* The defaults, for callers that pass no options. */
void svm_conv_options_defaults(struct svm_convert_options *o);

/* A raw file end's descriptors, owned by the converter (the copy end borrows them). */
struct svm_conv_file {
  int fd;                   /* O_DIRECT where the file system allows it, else buffered */
  int fd_buffered;          /* for requests that are not 4 KiB aligned, fsync, provisioning */
  int lock_fd;              /* the one of the two that holds the image lock, or -1 */
  bool direct;
};

/* One conversion's state, from the opened source to the renamed destination. */
struct svm_conv {
  const struct svm_convert_options *o;
  const char *src_name, *dst_name;
  struct svm_copy_end *src, *dst;
  struct svm_conv_file src_file, dst_file;
  char *tmp;                /* a file destination's temporary name; unlinked unless renamed */
  mode_t src_mode;          /* permission bits the destination gets (a file source's own) */
  int dst_lock_fd;          /* an existing DST (--force), write-locked until it is replaced */
  bool dst_reads_zero;      /* the destination reads as zeros wherever it is not written */
  struct svm_extent_list map;
  struct svm_copy *copy;
  struct svm_convert_stats st;
};

/* A disk size must be a non-zero multiple of 512. */
int svm_conv_check_size(const char *name, uint64_t size);

/* source.c: open SRC (a file or an NBD URI) read-only, check its size and map its extents. */
int svm_conv_open_source(struct svm_conv *c);

/* dest.c: check and open DST for a copy of c->st.size bytes of which data_bytes are data: an
 * NBD export, or a temporary file next to DST on a file system with room for it. */
int svm_conv_open_dest(struct svm_conv *c, uint64_t data_bytes);
/* Complete the destination: provisioning, durability, and for a file the rename into place. */
int svm_conv_finish_dest(struct svm_conv *c);
/* Release both ends; a temporary file still there is removed. */
void svm_conv_close(struct svm_conv *c);

#endif
