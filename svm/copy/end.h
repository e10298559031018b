/* Internal: the ends of a copy. An end is a table of operations and a little common state, so
 * the copy engine (svm/copy/copy.h) runs the same loop whatever it reads from and writes to
 * (nbdcopy's struct rw_ops is the model). Today: a raw file through the I/O engine (file.c), an
 * NBD export through libnbd's asynchronous API (nbd.c), a disk layer stack (layer.c: the
 * mirror's bulk pass) and an NFC stream (nfc.c, declared in nfc.h).
 *
 * Data operations are asynchronous: they queue one request and return 0, or -EAGAIN when the
 * end has no room (the engine retries after reaping), or another -errno when the request could
 * not be queued. The callback runs later, from the end's poll_done or wait, with the byte count
 * (read, write), 0 (zero) or a negative errno. A read that meets the end of a file may complete
 * short; the engine treats the rest as zeros.
 *
 * Event loop: before blocking, the engine calls poll_prepare on each end, which hands queued
 * requests over and says which fd, if any, it waits on; after poll() it calls poll_done with the
 * revents. An end that is the only one busy may be asked to wait() in place of poll(). */
#ifndef SVM_COPY_END_H
#define SVM_COPY_END_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "svm/disk/extents.h"
#include "svm/io/io.h"         /* svm_io_cb */

struct svm_copy_end;

struct svm_copy_end_ops {
  const char *kind;           /* "file", "nbd": for messages */
  /* Get ready for up to `requests` reads or writes in flight (called once by the engine).
   * May be NULL. */
  int (*start)(struct svm_copy_end *e, unsigned requests);
  /* Append the extent map of [0, size) to l (synchronous). */
  int (*extents)(struct svm_copy_end *e, uint64_t size, struct svm_extent_list *l);
  int (*read)(struct svm_copy_end *e, void *buf, size_t len, uint64_t off, svm_io_cb cb,
              void *opaque);
  /* May be NULL. As read, but the end may leave blocks that read as zeros unfilled and say
   * so: bit i of zmap (cleared by the engine) set = the SVM_COPY_ZERO_BLOCK bytes at i *
   * SVM_COPY_ZERO_BLOCK read as zeros and are not in buf. A layer end learns it from block
   * status; filling 1 MiB of holes per 2 MiB chunk and then scanning them for zeros was a
   * third of a move's copying thread. */
  int (*read_sparse)(struct svm_copy_end *e, void *buf, size_t len, uint64_t off,
                     uint64_t *zmap, svm_io_cb cb, void *opaque);
  int (*write)(struct svm_copy_end *e, const void *buf, size_t len, uint64_t off,
               svm_io_cb cb, void *opaque);
  /* Make [off, off+len) read as zeros; allocate: keep it allocated. NULL when the end has no
   * cheap way: the engine then writes zeros. */
  int (*zero)(struct svm_copy_end *e, uint64_t off, uint64_t len, bool allocate, svm_io_cb cb,
              void *opaque);
  /* 1 and *pfd filled when the end waits for something, 0 when idle, or -errno. */
  int (*poll_prepare)(struct svm_copy_end *e, struct pollfd *pfd);
  int (*poll_done)(struct svm_copy_end *e, const struct pollfd *pfd);
  /* Block until at least one request completes and run its callback. May be NULL. */
  int (*wait)(struct svm_copy_end *e);
  /* Make everything written durable and say goodbye (synchronous; writable ends). */
  int (*finish)(struct svm_copy_end *e);
  /* Release the end; requests still in flight are abandoned without their callbacks. */
  void (*free)(struct svm_copy_end *e);
};

struct svm_copy_end {
  const struct svm_copy_end_ops *ops;
  const char *name;           /* as the user gave it, for messages; not owned */
  uint64_t size;
  uint64_t max_request;       /* largest read or write the end takes (0: no limit) */
  bool writable;
  const char *lost_hint;      /* appended to an I/O error that means the connection is gone
                               * (ENOTCONN, ECONNRESET, EPIPE, ESHUTDOWN); NULL: none */
};

/* Dispatch helpers, so callers do not reach into the table. */
static inline int svm_copy_end_extents(struct svm_copy_end *e, uint64_t size,
                                       struct svm_extent_list *l)
{
  return e->ops->extents(e, size, l);
}

static inline int svm_copy_end_finish(struct svm_copy_end *e)
{
  return e->ops->finish != NULL ? e->ops->finish(e) : 0;
}

static inline void svm_copy_end_free(struct svm_copy_end *e)
{
  if (e != NULL)
    e->ops->free(e);
}

/* A raw file (or block device). fd: opened with O_DIRECT when direct, else the same as
 * fd_buffered; fd_buffered serves requests that are not 4 KiB-aligned. Both fds stay the
 * caller's (the file's life, temporary name and fsync belong to whoever opened it). Reads go
 * through the default I/O engine (io_uring, or libaio); writes through libaio where it is
 * available, whose io_submit() allocates O_DIRECT blocks in the order the writes are issued
 * (a compact extent tree), which io_uring's worker threads do not. */
/* For ends whose completions all come through one I/O engine (file.c, layer.c): submit what
 * is queued and, while `busy`, poll the engine's event fd; then reap what fired. */
int svm_copy_io_poll_prepare(struct svm_copy_end *e, struct svm_io *io, bool busy,
                             struct pollfd *pfd);
int svm_copy_io_poll_done(struct svm_copy_end *e, struct svm_io *io, const struct pollfd *pfd);

int svm_copy_file_end_new(const char *name, int fd, int fd_buffered, bool direct, uint64_t size,
                          bool writable, struct svm_copy_end **out);

/* Connect to an NBD URI with libnbd. A writable end refuses a read-only export. base:allocation
 * is asked for so the map skips holes. Returns 0 or -errno with a message naming the URI and
 * the fix. */
int svm_copy_nbd_end_open(const char *uri, bool writable, struct svm_copy_end **out);

/* A gate a layer end passes each read through before issuing it: a table of ranges shared
 * with writers of the same layer (the mirror's region table). enter() returns 0 when the read
 * may go at once, or 1 when it parked it: it then posts go(arg, 0) on io through node
 * (svm_io_post_node) when the range is free, or go(arg, -errno) to fail the read. The range
 * stays the gate's until the copy engine reports the chunk finished (svm_copy_options
 * chunk_done). */
struct svm_copy_gate {
  int (*enter)(void *opaque, uint64_t off, uint64_t len, struct svm_io *io,
               struct svm_io_posted *node, svm_io_cb go, void *arg);
  void *opaque;
};

struct svm_layer;
/* A disk layer stack, read or written through an I/O engine of the copying thread (layer.c).
 * gate may be NULL. Reads skip what the layer's block status says reads as zeros. The layer
 * stays the caller's. */
int svm_copy_layer_end_new(const char *name, struct svm_layer *l, bool writable,
                           const struct svm_copy_gate *gate, struct svm_copy_end **out);
/* The end's I/O engine (after the copy engine started it), e.g. to post to it. */
struct svm_io *svm_copy_layer_end_io(struct svm_copy_end *e);

#endif
