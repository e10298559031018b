/* Internal to the I/O engine: the request record and the table each backend fills in.
 * io.c owns request bookkeeping (free list, in-flight count, short-transfer resubmission);
 * a backend only moves requests to and from its kernel interface. */
#ifndef SVM_IO_INTERNAL_H
#define SVM_IO_INTERNAL_H

#include <pthread.h>

#include "svm/io/io.h"

enum svm_io_op { SVM_OP_READ, SVM_OP_WRITE, SVM_OP_FSYNC, SVM_OP_FALLOCATE };

struct svm_io_req {
  enum svm_io_op op;
  int fd;
  bool datasync;          /* fsync */
  int mode;               /* fallocate */
  char *buf;              /* read/write: start of the caller's buffer */
  uint64_t len;           /* read/write: bytes asked for; fallocate: range length */
  uint64_t off;           /* start offset asked for */
  uint64_t done;          /* read/write: bytes transferred so far */
  svm_io_cb cb;
  void *opaque;
  unsigned index;         /* position in io->reqs, for backends that keep parallel arrays */
  struct svm_io_req *next;  /* free list */
};

struct svm_io_backend {
  const char *name;
  int (*init)(struct svm_io *io);
  void (*fini)(struct svm_io *io);
  /* Queue (or re-queue, after a short transfer) the remaining part of a request. */
  int (*queue)(struct svm_io *io, struct svm_io_req *req);
  /* Hand queued requests to the kernel; returns the number handed or -errno. */
  int (*submit)(struct svm_io *io);
  /* Wait until at least `wait` kernel completions are available (0: none), then pass every
   * available one to svm_io_internal_complete(). Returns the number passed or -errno. */
  int (*complete)(struct svm_io *io, unsigned wait);
};

struct svm_io {
  const struct svm_io_backend *be;
  unsigned depth;
  unsigned in_flight;       /* requests taken from the free list and not yet completed */
  unsigned finished;        /* requests whose callback ran during the current reap */
  int event_fd;
  struct svm_io_req *reqs;
  struct svm_io_req *free_list;
  void *priv;               /* backend state */
  /* completions posted by other threads (svm_io_post), newest first, under post_mu */
  pthread_mutex_t post_mu;
  struct svm_io_posted *posted;
  /* steps waiting for a request to complete (svm_io_post_on_room), oldest first; the owning
   * thread's only */
  struct svm_io_posted *room_head, *room_tail;
};

extern const struct svm_io_backend svm_io_uring_backend;
extern const struct svm_io_backend svm_io_aio_backend;

/* Called by a backend for each kernel completion: resubmits short transfers, otherwise runs the
 * callback and returns the request to the free list. */
void svm_io_internal_complete(struct svm_io *io, struct svm_io_req *req, int64_t res);

/* Wake a poll() loop on the event fd (for completions a backend produces without the kernel). */
void svm_io_internal_signal(struct svm_io *io);

#endif
