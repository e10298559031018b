/* Internal: the asynchronous disk I/O engine.
 *
 * One small interface, two implementations: io_uring through liburing (the default) and libaio
 * (chosen when io_uring cannot be set up, or forced with SVM_IO_ENGINE=libaio; SVM_IO_ENGINE=
 * io_uring forces the other). An engine instance is NOT thread-safe: use one per thread; only
 * svm_io_post() / svm_io_post_node() may be called from other threads.
 *
 * Requests are queued with svm_io_pread/pwrite/fsync/fallocate, handed to the kernel by
 * svm_io_submit(), and completed by svm_io_reap(), which runs each request's callback with the
 * result: the full byte count for reads and writes (short transfers are resubmitted by the engine
 * itself; a read that hits end of file completes with the bytes it got), 0 for fsync/fallocate,
 * or a negative errno. At most `depth` requests are in flight; queueing one more returns -EAGAIN
 * and the caller reaps first.
 *
 * Callbacks may queue new requests but must not call svm_io_reap() themselves. fsync covers the
 * writes that have completed before it is queued (as with io_uring: no ordering with requests
 * still in flight). A bad fd fails with -EBADF, either at queue time or in the callback.
 * With libaio, fsync and fallocate run synchronously when queued and complete on the next reap.
 *
 * O_DIRECT: svm_io_open_file() opens with O_DIRECT where the file system allows it and reports
 * whether it did; callers then use buffers from svm_io_alloc_buffer() and 4 KiB-aligned offsets
 * and lengths (or fall back to a buffered fd for unaligned tails).
 */
#ifndef SVM_IO_H
#define SVM_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct svm_io;

enum svm_io_kind {
  SVM_IO_AUTO = 0,     /* SVM_IO_ENGINE from the environment, else io_uring, else libaio */
  SVM_IO_URING,
  SVM_IO_AIO,
};

typedef void (*svm_io_cb)(void *opaque, int64_t res);

enum { SVM_IO_ALIGN = 4096 };

/* Create an engine with room for `depth` requests in flight (1..4096). */
int svm_io_new(enum svm_io_kind kind, unsigned depth, struct svm_io **out);
/* Waits for requests still in flight (their buffers may still be in use) and runs no callback. */
void svm_io_free(struct svm_io *io);
const char *svm_io_name(const struct svm_io *io);   /* "io_uring" or "libaio" */

int svm_io_pread(struct svm_io *io, int fd, void *buf, size_t len, uint64_t off,
                 svm_io_cb cb, void *opaque);
int svm_io_pwrite(struct svm_io *io, int fd, const void *buf, size_t len, uint64_t off,
                  svm_io_cb cb, void *opaque);
/* datasync: fdatasync semantics rather than fsync */
int svm_io_fsync(struct svm_io *io, int fd, bool datasync, svm_io_cb cb, void *opaque);
/* mode as fallocate(2): 0, FALLOC_FL_KEEP_SIZE|FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE... */
int svm_io_fallocate(struct svm_io *io, int fd, int mode, uint64_t off, uint64_t len,
                     svm_io_cb cb, void *opaque);

/* Hand queued requests to the kernel. Returns the number submitted or -errno. */
int svm_io_submit(struct svm_io *io);
/* Submit, then wait until at least min_complete requests have completed (0: do not wait) and
 * run their callbacks. Returns the number completed or -errno. Callbacks may queue new
 * requests. */
int svm_io_reap(struct svm_io *io, unsigned min_complete);
unsigned svm_io_in_flight(const struct svm_io *io);
unsigned svm_io_depth(const struct svm_io *io);

/* Cross-thread completions. An engine belongs to one thread, but a request may take a step
 * elsewhere (a layer that must block, such as a first change-tracking mark, does it on a thread
 * of its own) and continue on the engine's thread. Any thread may post a completion; the next
 * svm_io_reap() on the owning thread runs cb(opaque, res) there, in posting order, counted with
 * the engine's completions, and the event fd is signalled so that a poll() loop wakes for it.
 * A posted completion is not "in flight" (svm_io_in_flight); a reap waiting for min_complete
 * engine requests does not wait for posts, so the owner must know it expects one (the NBD
 * worker does: its request is still counted as active). svm_io_free() drops posts never reaped.
 *
 * svm_io_post_node() uses caller-owned storage, valid until the callback runs, and cannot
 * fail: for a step that must never lose its request. svm_io_post() allocates it (-ENOMEM). */
struct svm_io_posted {
  struct svm_io_posted *next;
  svm_io_cb cb;
  void *opaque;
  int64_t res;
  bool allocated;
};
void svm_io_post_node(struct svm_io *io, struct svm_io_posted *node, svm_io_cb cb, void *opaque,
                      int64_t res);
int svm_io_post(struct svm_io *io, svm_io_cb cb, void *opaque, int64_t res);

/* On the owning thread, for a step whose request was refused for want of room (-EAGAIN): run
 * cb (res 0) from the reap that completes one of the engine's requests, not from the next
 * turn, which finds the engine as full and would spin on it for as long as it stays full. At
 * once (as svm_io_post_node) when the engine has room or nothing in flight. */
void svm_io_post_on_room(struct svm_io *io, struct svm_io_posted *node, svm_io_cb cb,
                         void *opaque);

/* An eventfd that becomes readable when completions (engine or posted) are ready, for
 * poll()-based loops (the NBD server). Read it (8 bytes) and then call svm_io_reap(io, 0). */
int svm_io_event_fd(struct svm_io *io);

/* open(2) with O_DIRECT where the file system allows it (falls back to buffered and says so in
 * *direct). flags as open(2), O_DIRECT added by this call. Returns fd or -errno. */
int svm_io_open_file(const char *path, int flags, mode_t mode, bool want_direct, bool *direct);

/* Page-aligned buffer for O_DIRECT (2 MiB-aligned in transparent huge pages from 2 MiB up),
 * free with free(). NULL on failure. */
void *svm_io_alloc_buffer(size_t len);

#endif
