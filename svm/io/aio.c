/* libaio backend: used where io_uring cannot be set up, or forced with SVM_IO_ENGINE=libaio.
 *
 * Linux AIO reads and writes go to the kernel; fsync and fallocate are not asynchronous on every
 * kernel, so they run synchronously when queued and complete on the next reap (the event fd is
 * signalled so that a poll() loop wakes for them). io_submit() refuses a bad iocb (bad fd, bad
 * alignment) synchronously; such a request also completes with that error on the next reap. */
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "svm/io/internal.h"

enum { MAX_RW = 1 << 30 };

struct aio {
  io_context_t ctx;
  struct iocb *iocbs;            /* parallel to io->reqs */
  struct iocb **pending;         /* queued, not yet accepted by io_submit() */
  unsigned npending;
  unsigned in_kernel;
  struct io_event *events;
  struct svm_io_req **ready;     /* completed without the kernel, delivered on the next reap */
  int64_t *ready_res;
  unsigned nready;
  struct svm_io_req **batch;     /* snapshot of ready[] while its callbacks run */
  int64_t *batch_res;
};

static void aio_free_arrays(struct aio *a)
{
  free(a->iocbs);
  free(a->pending);
  free(a->events);
  free(a->ready);
  free(a->ready_res);
  free(a->batch);
  free(a->batch_res);
  free(a);
}

static int aio_init(struct svm_io *io)
{
  struct aio *a = calloc(1, sizeof *a);
  unsigned d = io->depth;
  int r;

  if (a == NULL)
    return svm_error(ENOMEM, "libaio: out of memory");
  a->iocbs = calloc(d, sizeof *a->iocbs);
  a->pending = calloc(d, sizeof *a->pending);
  a->events = calloc(d, sizeof *a->events);
  a->ready = calloc(d, sizeof *a->ready);
  a->ready_res = calloc(d, sizeof *a->ready_res);
  a->batch = calloc(d, sizeof *a->batch);
  a->batch_res = calloc(d, sizeof *a->batch_res);
  if (!a->iocbs || !a->pending || !a->events || !a->ready || !a->ready_res || !a->batch ||
      !a->batch_res) {
    aio_free_arrays(a);
    return svm_error(ENOMEM, "libaio: out of memory");
  }
  r = io_setup((int)d, &a->ctx);
  if (r < 0) {
    aio_free_arrays(a);
    return svm_error(-r, "libaio: io_setup(%u): %s (raise fs.aio-max-nr or lower the depth)", d,
                     strerror(-r));
  }
  io->priv = a;
  return 0;
}

static void aio_fini(struct svm_io *io)
{
  struct aio *a = io->priv;

  io_destroy(a->ctx);
  aio_free_arrays(a);
  io->priv = NULL;
}

static void make_ready(struct svm_io *io, struct svm_io_req *req, int64_t res)
{
  struct aio *a = io->priv;

  a->ready[a->nready] = req;
  a->ready_res[a->nready] = res;
  a->nready++;
  svm_io_internal_signal(io);
}

static int aio_queue(struct svm_io *io, struct svm_io_req *req)
{
  struct aio *a = io->priv;
  struct iocb *cb = &a->iocbs[req->index];
  uint64_t left = req->len - req->done;
  size_t n = left > MAX_RW ? MAX_RW : (size_t)left;
  int r;

  switch (req->op) {
  case SVM_OP_READ:
    io_prep_pread(cb, req->fd, req->buf + req->done, n, (long long)(req->off + req->done));
    break;
  case SVM_OP_WRITE:
    io_prep_pwrite(cb, req->fd, req->buf + req->done, n, (long long)(req->off + req->done));
    break;
  case SVM_OP_FSYNC:
    r = req->datasync ? fdatasync(req->fd) : fsync(req->fd);
    make_ready(io, req, r < 0 ? -errno : 0);
    return 0;
  case SVM_OP_FALLOCATE:
    r = fallocate(req->fd, req->mode, (off_t)req->off, (off_t)req->len);
    make_ready(io, req, r < 0 ? -errno : 0);
    return 0;
  }
  io_set_eventfd(cb, io->event_fd);
  cb->data = req;
  a->pending[a->npending++] = cb;
  return 0;
}

static int aio_submit(struct svm_io *io)
{
  struct aio *a = io->priv;
  unsigned total = 0;
  int r;

  while (a->npending > 0) {
    r = io_submit(a->ctx, (long)a->npending, a->pending);
    if (r == -EINTR)
      continue;
    if (r == -EAGAIN) {
      if (a->in_kernel > 0)
        break;          /* out of kernel resources: retry after some complete */
      return -EAGAIN;
    }
    if (r < 0) {
      /* The first iocb was refused: complete it with that error, go on with the others. */
      make_ready(io, a->pending[0]->data, r);
      r = 1;
    } else {
      a->in_kernel += (unsigned)r;
      total += (unsigned)r;
    }
    a->npending -= (unsigned)r;
    memmove(a->pending, a->pending + r, a->npending * sizeof *a->pending);
  }
  return (int)total;
}

static int aio_complete(struct svm_io *io, unsigned wait)
{
  struct aio *a = io->priv;
  struct timespec zero = { 0, 0 };
  unsigned n = a->nready, total = 0;
  int r;

  if (n > 0) {
    memcpy(a->batch, a->ready, n * sizeof *a->batch);
    memcpy(a->batch_res, a->ready_res, n * sizeof *a->batch_res);
    a->nready = 0;
    for (unsigned i = 0; i < n; i++)
      svm_io_internal_complete(io, a->batch[i], a->batch_res[i]);
    total = n;
    wait = 0;
  }
  if (a->in_kernel == 0)
    return (int)total;
  do
    r = io_getevents(a->ctx, wait > 0 ? 1 : 0, (long)io->depth, a->events,
                     wait > 0 ? NULL : &zero);
  while (r == -EINTR);
  if (r < 0)
    return r;
  a->in_kernel -= (unsigned)r;
  for (int i = 0; i < r; i++) {
    struct io_event *ev = &a->events[i];
    /* res is unsigned long in the ABI; errors arrive as negative values cast to it. */
    svm_io_internal_complete(io, ev->data, (int64_t)(long)ev->res);
  }
  return (int)total + r;
}

const struct svm_io_backend svm_io_aio_backend = {
  .name = "libaio",
  .init = aio_init,
  .fini = aio_fini,
  .queue = aio_queue,
  .submit = aio_submit,
  .complete = aio_complete,
};
