/* Internal: a disk is a stack of layers, top first (DESIGN.md, Layers and snapshots).
 *
 * Each layer carries a table of operations and a private state (`priv`), so that the export
 * serves any stack the same way. Base layers hold data (svm_layer_open_raw; a delta layer will
 * add an allocation map). Policy layers are filters, as nbdkit's filters and QEMU's filter
 * nodes: they see every write, zero, trim and flush with its flags, act, and pass it down to
 * `below` (change tracking: svm/disk/track.h; the mirror will be one too). A NULL operation in a
 * filter's table passes straight through, so a filter implements only what it acts on.
 *
 * Calls go through svm_layer_read() and friends, which find the first layer from `l` down that
 * implements the operation. Data operations are asynchronous on the caller's I/O engine (one per
 * thread, svm/io/io.h) and complete through the callback with the byte count (read/write), 0
 * (zero/trim/flush) or a negative errno; a negative return means the callback will not run.
 * The callback may run before the call returns (inline fast paths). A layer may take several
 * steps per request (a mark, then the write below), and a step may run on another thread:
 * the layer then comes back to the caller's thread with svm_io_post() on the caller's engine,
 * so a request's callback always runs on the thread that owns `io`. block_status and
 * flush_sync are synchronous.
 *
 * Ownership: a filter owns the stack below it; svm_layer_free() frees a stack top-down, each
 * layer's close() freeing its own priv.
 */
#ifndef SVM_LAYER_H
#define SVM_LAYER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "svm/disk/extents.h"
#include "svm/io/io.h"

struct svm_layer;

/* Flags of write/zero/trim. */
enum {
  SVM_LAYER_FUA = 1,        /* durable before the callback runs */
  SVM_LAYER_NO_HOLE = 2,    /* zero: keep the range allocated */
  SVM_LAYER_FAST = 4,       /* zero: fail with -ENOTSUP rather than write zeros slowly */
};

/* Extent flags of block_status (SVM_EXTENT_HOLE: not allocated in the file; SVM_EXTENT_ZERO:
 * reads as zeros) are those of extent maps (svm/disk/extents.h): the disk's own meaning, which
 * the NBD server maps to its base:allocation bits. */

/* An extent as block_status reports it. */
struct svm_layer_extent {
  uint64_t length;
  uint32_t flags;           /* SVM_EXTENT_* */
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
  /* Optional, a hint: start writing cached data back, without waiting for it (a later flush
   * then has less to do). */
  void (*writeback)(struct svm_layer *l);
  void (*close)(struct svm_layer *l);   /* frees priv (not the layers below); may be NULL */
};

struct svm_layer {
  const struct svm_layer_ops *ops;
  struct svm_layer *below;  /* next layer down, NULL for a base */
  void *priv;               /* the layer's own state */
  char *path;               /* a base layer's file; NULL for a filter */
  uint64_t size;            /* virtual size, the same for every layer of a stack */
  bool readonly;
};

/* Open a raw image (thin, thick or eager-zeroed thick) as a base layer. Buffered I/O, like
 * qemu-nbd --cache=writeback: FLUSH and FUA make data durable with fdatasync. */
int svm_layer_open_raw(const char *path, bool readonly, struct svm_layer **out);

/* A filter over `below` with the operations of `ops` (NULL ones pass through) and state
 * `priv`. On success the filter owns `below` (and priv, which ops->close frees); on failure
 * the caller keeps both. Size and read-only-ness are those of below. */
int svm_layer_new_filter(const struct svm_layer_ops *ops, void *priv, struct svm_layer *below,
                         struct svm_layer **out);

void svm_layer_free(struct svm_layer *l);          /* frees the whole chain below it too */
uint64_t svm_layer_size(const struct svm_layer *l);
const char *svm_layer_path(const struct svm_layer *l);   /* the base file under l */

/* Run an operation on the stack from `l` down (see the top). */
int svm_layer_read(struct svm_layer *l, struct svm_io *io, void *buf, size_t len, uint64_t off,
                   svm_io_cb cb, void *opaque);
int svm_layer_write(struct svm_layer *l, struct svm_io *io, const void *buf, size_t len,
                    uint64_t off, unsigned flags, svm_io_cb cb, void *opaque);
int svm_layer_zero(struct svm_layer *l, struct svm_io *io, uint64_t off, uint64_t len,
                   unsigned flags, svm_io_cb cb, void *opaque);
int svm_layer_trim(struct svm_layer *l, struct svm_io *io, uint64_t off, uint64_t len,
                   unsigned flags, svm_io_cb cb, void *opaque);
int svm_layer_flush(struct svm_layer *l, struct svm_io *io, svm_io_cb cb, void *opaque);
int svm_layer_block_status(struct svm_layer *l, uint64_t off, uint64_t len,
                           struct svm_layer_extent *ext, size_t max, size_t *n);
int svm_layer_flush_sync(struct svm_layer *l);
void svm_layer_writeback(struct svm_layer *l);     /* a no-op where no layer has one */

#endif
