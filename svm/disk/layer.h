/* Internal: a disk is a stack of layers, top first (DESIGN.md, Layers and snapshots).
 *
 * Each layer carries a table of operations, so that the export serves any stack the same way:
 * today only raw-file layers exist (svm_layer_open_raw); a delta layer will add an allocation
 * map and send reads of grains it does not hold to `below`. Data operations are asynchronous on
 * the caller's I/O engine (one per thread, svm/io.h) and complete through the callback with the
 * byte count (read/write), 0 (zero/trim/flush) or a negative errno; block_status is synchronous
 * (it only asks the file system where data is).
 */
#ifndef SVM_LAYER_H
#define SVM_LAYER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "svm/io/io.h"

struct svm_layer;

/* Flags of write/zero/trim. */
enum {
  SVM_LAYER_FUA = 1,        /* durable before the callback runs */
  SVM_LAYER_NO_HOLE = 2,    /* zero: keep the range allocated */
  SVM_LAYER_FAST = 4,       /* zero: fail with -ENOTSUP rather than write zeros slowly */
};

/* An extent as block_status reports it. */
struct svm_layer_extent {
  uint64_t length;
  uint32_t flags;           /* NBD_STATE_HOLE | NBD_STATE_ZERO, base:allocation's meaning */
};

struct svm_layer_ops {
  const char *kind;
  int (*read)(struct svm_layer *l, struct svm_io *io, void *buf, size_t len, uint64_t off,
              svm_io_cb cb, void *opaque);
  int (*write)(struct svm_layer *l, struct svm_io *io, const void *buf, size_t len,
               uint64_t off, unsigned flags, svm_io_cb cb, void *opaque);
  int (*zero)(struct svm_layer *l, struct svm_io *io, uint64_t off, uint64_t len,
              unsigned flags, svm_io_cb cb, void *opaque);
  int (*trim)(struct svm_layer *l, struct svm_io *io, uint64_t off, uint64_t len,
              unsigned flags, svm_io_cb cb, void *opaque);
  int (*flush)(struct svm_layer *l, struct svm_io *io, svm_io_cb cb, void *opaque);
  /* Synchronous: up to `max` extents covering [off, off+len) from `off` on; *n set. */
  int (*block_status)(struct svm_layer *l, uint64_t off, uint64_t len,
                      struct svm_layer_extent *ext, size_t max, size_t *n);
  int (*flush_sync)(struct svm_layer *l);
  void (*close)(struct svm_layer *l);
};

struct svm_layer {
  const struct svm_layer_ops *ops;
  struct svm_layer *below;  /* next layer down, NULL for a base */
  char *path;
  uint64_t size;            /* virtual size, the same for every layer of a stack */
  bool readonly;
  int fd;
  bool inline_io;           /* page-cache fast path (see layer.c); SVM_NBD_INLINE=0 disables */
  int nowait_writes;        /* RWF_NOWAIT buffered writes: -1 not known yet, 0 no, 1 yes */
};

/* Open a raw image (thin, thick or eager-zeroed thick) as a base layer. Buffered I/O, like
 * qemu-nbd --cache=writeback: FLUSH and FUA make data durable with fdatasync. */
int svm_layer_open_raw(const char *path, bool readonly, struct svm_layer **out);
void svm_layer_free(struct svm_layer *l);          /* frees the whole chain below it too */
uint64_t svm_layer_size(const struct svm_layer *l);
const char *svm_layer_path(const struct svm_layer *l);

#endif
