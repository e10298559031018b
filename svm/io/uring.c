/* io_uring backend (liburing): the default engine. The ring has at least `depth` submission
 * entries, so a request always finds one (at most `depth` requests exist at a time). */
#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "svm/io/internal.h"

enum { BATCH = 64, MAX_RW = 1 << 30 };

struct uring {
  struct io_uring ring;
};

static int uring_init(struct svm_io *io)
{
  struct uring *u = calloc(1, sizeof *u);
  int r;

  if (u == NULL)
    return svm_error(ENOMEM, "io_uring: out of memory");
  r = io_uring_queue_init(io->depth, &u->ring, 0);
  if (r < 0) {
    free(u);
    return svm_error(-r, "io_uring: cannot set up a ring of %u entries: %s "
                     "(set SVM_IO_ENGINE=libaio to use libaio)", io->depth, strerror(-r));
  }
  r = io_uring_register_eventfd(&u->ring, io->event_fd);
  if (r < 0) {
    io_uring_queue_exit(&u->ring);
    free(u);
    return svm_error(-r, "io_uring: cannot register the event fd: %s", strerror(-r));
  }
  io->priv = u;
  return 0;
}

static void uring_fini(struct svm_io *io)
{
  struct uring *u = io->priv;

  io_uring_queue_exit(&u->ring);
  free(u);
  io->priv = NULL;
}

static int uring_queue(struct svm_io *io, struct svm_io_req *req)
{
  struct uring *u = io->priv;
  struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
  uint64_t left = req->len - req->done;
  unsigned n = left > MAX_RW ? MAX_RW : (unsigned)left;

  if (sqe == NULL) {
    int r = io_uring_submit(&u->ring);
    if (r < 0)
      return r;
    sqe = io_uring_get_sqe(&u->ring);
    if (sqe == NULL)
      return -EAGAIN;
  }
  switch (req->op) {
  case SVM_OP_READ:
    io_uring_prep_read(sqe, req->fd, req->buf + req->done, n, req->off + req->done);
    break;
  case SVM_OP_WRITE:
    io_uring_prep_write(sqe, req->fd, req->buf + req->done, n, req->off + req->done);
    break;
  case SVM_OP_FSYNC:
    io_uring_prep_fsync(sqe, req->fd, req->datasync ? IORING_FSYNC_DATASYNC : 0);
    break;
  case SVM_OP_FALLOCATE:
    io_uring_prep_fallocate(sqe, req->fd, req->mode, (off_t)req->off, (off_t)req->len);
    break;
  }
  io_uring_sqe_set_data(sqe, req);
  return 0;
}

static int uring_submit(struct svm_io *io)
{
  struct uring *u = io->priv;
  int r;

  do
    r = io_uring_submit(&u->ring);
  while (r == -EINTR);
  /* Out of kernel resources, or completions to reap first: io_uring_enter(2) says to wait for
   * some completions and try again. While the kernel holds some, that is what the caller's
   * reap does next (the rest stay queued for the next submit). Failing here made the reap
   * skip the completions, so an error that lasts until they are reaped (EBUSY) lasted for
   * ever. aio.c treats io_submit's EAGAIN the same way. */
  if ((r == -EAGAIN || r == -EBUSY) && io->in_flight > io_uring_sq_ready(&u->ring))
    return 0;
  return r;
}

static int uring_complete(struct svm_io *io, unsigned wait)
{
  struct uring *u = io->priv;
  struct io_uring_cqe *cqes[BATCH];
  struct svm_io_req *reqs[BATCH];
  int64_t res[BATCH];
  unsigned n, total = 0;
  int r;

  if (wait > 0) {
    struct io_uring_cqe *cqe;
    do
      r = io_uring_wait_cqe(&u->ring, &cqe);
    while (r == -EINTR);
    if (r < 0)
      return r;
  }
  /* Copy a batch out and release its slots before running callbacks, which may queue more. */
  while ((n = io_uring_peek_batch_cqe(&u->ring, cqes, BATCH)) > 0) {
    for (unsigned i = 0; i < n; i++) {
      reqs[i] = io_uring_cqe_get_data(cqes[i]);
      res[i] = cqes[i]->res;
    }
    io_uring_cq_advance(&u->ring, n);
    for (unsigned i = 0; i < n; i++)
      svm_io_internal_complete(io, reqs[i], res[i]);
    total += n;
  }
  return (int)total;
}

const struct svm_io_backend svm_io_uring_backend = {
  .name = "io_uring",
  .init = uring_init,
  .fini = uring_fini,
  .queue = uring_queue,
  .submit = uring_submit,
  .complete = uring_complete,
};
