/* The asynchronous disk I/O engine: request bookkeeping shared by both backends (io-uring.c,
 * io-aio.c), engine selection, O_DIRECT opening and aligned buffers.
 *
 * Requests live in one array of `depth` records with a free list, so queueing never allocates
 * and "full" is simply an empty free list (-EAGAIN). Short reads and writes are resubmitted here,
 * once for both backends, so callers only ever see whole transfers, end of file, or an error. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/error.h"
#include "svm/io/internal.h"

enum { DEPTH_MAX = 4096 };

static int pick_backend(enum svm_io_kind kind, const struct svm_io_backend **be, bool *fallback)
{
  const char *env;

  *fallback = false;
  if (kind == SVM_IO_URING) {
    *be = &svm_io_uring_backend;
    return 0;
  }
  if (kind == SVM_IO_AIO) {
    *be = &svm_io_aio_backend;
    return 0;
  }
  if (kind != SVM_IO_AUTO)
    return svm_error(EINVAL, "svm_io_new: unknown engine kind %d", (int)kind);
  env = getenv("SVM_IO_ENGINE");
  if (env == NULL || *env == '\0' || strcmp(env, "auto") == 0) {
    *be = &svm_io_uring_backend;
    *fallback = true;
    return 0;
  }
  if (strcmp(env, "io_uring") == 0 || strcmp(env, "uring") == 0) {
    *be = &svm_io_uring_backend;
    return 0;
  }
  if (strcmp(env, "libaio") == 0 || strcmp(env, "aio") == 0) {
    *be = &svm_io_aio_backend;
    return 0;
  }
  return svm_error(EINVAL, "SVM_IO_ENGINE=%s: unknown I/O engine (use io_uring or libaio)", env);
}

int svm_io_new(enum svm_io_kind kind, unsigned depth, struct svm_io **out)
{
  const struct svm_io_backend *be = NULL;
  struct svm_io *io;
  bool fallback = false;
  int r;

  *out = NULL;
  if (depth < 1 || depth > DEPTH_MAX)
    return svm_error(EINVAL, "svm_io_new: queue depth %u out of range 1-%d", depth, DEPTH_MAX);
  r = pick_backend(kind, &be, &fallback);
  if (r < 0)
    return r;

  io = calloc(1, sizeof *io);
  if (io == NULL)
    return svm_error(ENOMEM, "svm_io_new: out of memory");
  io->depth = depth;
  io->reqs = calloc(depth, sizeof *io->reqs);
  if (io->reqs == NULL) {
    free(io);
    return svm_error(ENOMEM, "svm_io_new: out of memory");
  }
  for (unsigned i = 0; i < depth; i++) {
    io->reqs[i].index = i;
    io->reqs[i].next = i + 1 < depth ? &io->reqs[i + 1] : NULL;
  }
  io->free_list = &io->reqs[0];
  pthread_mutex_init(&io->post_mu, NULL);
  io->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (io->event_fd < 0) {
    r = svm_error(errno, "svm_io_new: eventfd: %s", strerror(errno));
    goto fail;
  }

  io->be = be;
  r = be->init(io);
  if (r < 0 && fallback) {
    /* io_uring may be disabled (sysctl kernel.io_uring_disabled, seccomp, old kernel). */
    io->be = &svm_io_aio_backend;
    r = io->be->init(io);
  }
  if (r < 0)
    goto fail;
  *out = io;
  return 0;

fail:
  pthread_mutex_destroy(&io->post_mu);
  if (io->event_fd >= 0)
    close(io->event_fd);
  free(io->reqs);
  free(io);
  return r;
}

void svm_io_free(struct svm_io *io)
{
  if (io == NULL)
    return;
  /* Buffers may still be owned by the kernel: wait for them, but run no callback, since the
   * caller is tearing down the state those callbacks would touch. */
  for (unsigned i = 0; i < io->depth; i++)
    io->reqs[i].cb = NULL;
  while (io->in_flight > 0) {
    if (io->be->submit(io) < 0)
      break;
    if (io->be->complete(io, 1) < 0)
      break;
  }
  io->be->fini(io);
  for (struct svm_io_posted *p = io->posted, *next; p != NULL; p = next) {
    next = p->next;
    if (p->allocated)
      free(p);
  }
  pthread_mutex_destroy(&io->post_mu);
  close(io->event_fd);
  free(io->reqs);
  free(io);
}

const char *svm_io_name(const struct svm_io *io)
{
  return io->be->name;
}

unsigned svm_io_in_flight(const struct svm_io *io)
{
  return io->in_flight;
}

unsigned svm_io_depth(const struct svm_io *io)
{
  return io->depth;
}

int svm_io_event_fd(struct svm_io *io)
{
  return io->event_fd;
}

void svm_io_internal_signal(struct svm_io *io)
{
  uint64_t one = 1;
  ssize_t n;

  do
    n = write(io->event_fd, &one, sizeof one);
  while (n < 0 && errno == EINTR);
  /* EAGAIN means the counter is already non-zero: the poller wakes anyway. */
}

void svm_io_post_node(struct svm_io *io, struct svm_io_posted *node, svm_io_cb cb, void *opaque,
                      int64_t res)
{
  bool first;

  node->cb = cb;
  node->opaque = opaque;
  node->res = res;
  pthread_mutex_lock(&io->post_mu);
  first = io->posted == NULL;
  node->next = io->posted;
  __atomic_store_n(&io->posted, node, __ATOMIC_RELEASE);   /* read unlocked by run_posted */
  pthread_mutex_unlock(&io->post_mu);
  /* One signal per batch: the owner takes the whole list at once. */
  if (first)
    svm_io_internal_signal(io);
}

int svm_io_post(struct svm_io *io, svm_io_cb cb, void *opaque, int64_t res)
{
  struct svm_io_posted *node = malloc(sizeof *node);

  if (node == NULL)
    return -ENOMEM;
  node->allocated = true;
  svm_io_post_node(io, node, cb, opaque, res);
  return 0;
}

void svm_io_post_on_room(struct svm_io *io, struct svm_io_posted *node, svm_io_cb cb,
                         void *opaque)
{
  if (io->in_flight < io->depth) {
    svm_io_post_node(io, node, cb, opaque, 0);      /* the refusal was not for room */
    return;
  }
  node->cb = cb;
  node->opaque = opaque;
  node->res = 0;
  node->next = NULL;
  if (io->room_tail)
    io->room_tail->next = node;
  else
    io->room_head = node;
  io->room_tail = node;
}

/* On the owning thread, once requests have completed: the steps that waited for room, oldest
 * first. One that finds the engine full again waits anew, on a list of its own. */
static unsigned run_room(struct svm_io *io)
{
  struct svm_io_posted *list = io->room_head, *next;
  unsigned n = 0;

  if (list == NULL || io->in_flight == io->depth)
    return 0;
  io->room_head = io->room_tail = NULL;
  for (; list != NULL; list = next, n++) {
    next = list->next;
    list->cb(list->opaque, list->res);
  }
  return n;
}

/* On the owning thread: run what other threads posted, oldest first. */
static unsigned run_posted(struct svm_io *io)
{
  struct svm_io_posted *list, *rev = NULL, *next;
  unsigned n = 0;

  if (__atomic_load_n(&io->posted, __ATOMIC_RELAXED) == NULL)
    return 0;                     /* the common case costs no lock */
  pthread_mutex_lock(&io->post_mu);
  list = io->posted;
  __atomic_store_n(&io->posted, NULL, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&io->post_mu);
  for (; list != NULL; list = next) {
    next = list->next;
    list->next = rev;
    rev = list;
  }
  for (; rev != NULL; rev = next, n++) {
    svm_io_cb cb = rev->cb;
    void *opaque = rev->opaque;
    int64_t res = rev->res;

    next = rev->next;
    if (rev->allocated)
      free(rev);                  /* before the callback, which may free the node's owner */
    cb(opaque, res);
  }
  return n;
}

static void put_req(struct svm_io *io, struct svm_io_req *req)
{
  req->cb = NULL;
  req->opaque = NULL;
  req->next = io->free_list;
  io->free_list = req;
  io->in_flight--;
}

static int queue(struct svm_io *io, enum svm_io_op op, int fd, void *buf, uint64_t len,
                 uint64_t off, svm_io_cb cb, void *opaque, struct svm_io_req **out)
{
  struct svm_io_req *req = io->free_list;

  if (fd < 0)
    return -EBADF;
  if (req == NULL)
    return -EAGAIN;
  io->free_list = req->next;
  req->next = NULL;
  req->op = op;
  req->fd = fd;
  req->buf = buf;
  req->len = len;
  req->off = off;
  req->done = 0;
  req->mode = 0;
  req->datasync = false;
  req->cb = cb;
  req->opaque = opaque;
  io->in_flight++;
  *out = req;
  return 0;
}

static int hand_to_backend(struct svm_io *io, struct svm_io_req *req)
{
  int r = io->be->queue(io, req);

  if (r < 0)
    put_req(io, req);
  return r;
}

static int check_rw(uint64_t len, uint64_t off)
{
  if (len == 0 || len > (uint64_t)SSIZE_MAX || off > (uint64_t)INT64_MAX - len)
    return -EINVAL;
  return 0;
}

int svm_io_pread(struct svm_io *io, int fd, void *buf, size_t len, uint64_t off,
                 svm_io_cb cb, void *opaque)
{
  struct svm_io_req *req;
  int r = check_rw(len, off);

  if (r < 0)
    return r;
  r = queue(io, SVM_OP_READ, fd, buf, len, off, cb, opaque, &req);
  return r < 0 ? r : hand_to_backend(io, req);
}

int svm_io_pwrite(struct svm_io *io, int fd, const void *buf, size_t len, uint64_t off,
                  svm_io_cb cb, void *opaque)
{
  struct svm_io_req *req;
  int r = check_rw(len, off);

  if (r < 0)
    return r;
  /* The engine never writes through buf; the cast only lets one record serve both ops. */
  r = queue(io, SVM_OP_WRITE, fd, (void *)buf, len, off, cb, opaque, &req);
  return r < 0 ? r : hand_to_backend(io, req);
}

int svm_io_fsync(struct svm_io *io, int fd, bool datasync, svm_io_cb cb, void *opaque)
{
  struct svm_io_req *req;
  int r = queue(io, SVM_OP_FSYNC, fd, NULL, 0, 0, cb, opaque, &req);

  if (r < 0)
    return r;
  req->datasync = datasync;
  return hand_to_backend(io, req);
}

int svm_io_fallocate(struct svm_io *io, int fd, int mode, uint64_t off, uint64_t len,
                     svm_io_cb cb, void *opaque)
{
  struct svm_io_req *req;
  int r;

  if (len == 0 || off > (uint64_t)INT64_MAX - len)
    return -EINVAL;
  r = queue(io, SVM_OP_FALLOCATE, fd, NULL, len, off, cb, opaque, &req);
  if (r < 0)
    return r;
  req->mode = mode;
  return hand_to_backend(io, req);
}

void svm_io_internal_complete(struct svm_io *io, struct svm_io_req *req, int64_t res)
{
  svm_io_cb cb;
  void *opaque;

  if (req->op == SVM_OP_READ || req->op == SVM_OP_WRITE) {
    if (res > 0) {
      req->done += (uint64_t)res;
      if (req->done < req->len && req->cb != NULL) {
        /* Short transfer: ask for the rest. A read that was short because of end of file
         * comes back with 0 (or -EINVAL for an O_DIRECT fd at an unaligned offset). */
        int r = io->be->queue(io, req);
        if (r == 0)
          return;
        res = r;
      } else {
        res = (int64_t)req->done;
      }
    }
    if (res == 0 && req->op == SVM_OP_WRITE && req->done < req->len)
      res = -EIO;         /* a write that makes no progress would loop for ever */
    if (res <= 0 && req->op == SVM_OP_READ && req->done > 0)
      res = (int64_t)req->done;   /* end of file; a real error shows on the next read */
  }
  cb = req->cb;
  opaque = req->opaque;
  put_req(io, req);
  io->finished++;
  if (cb != NULL)
    cb(opaque, res);
}

int svm_io_submit(struct svm_io *io)
{
  return io->be->submit(io);
}

int svm_io_reap(struct svm_io *io, unsigned min_complete)
{
  unsigned saved = io->finished, done;
  int r;

  io->finished = 0;
  if (min_complete > io->in_flight)
    min_complete = io->in_flight;
  for (;;) {
    io->finished += run_posted(io);
    r = io->be->submit(io);
    if (r < 0)
      break;
    r = io->be->complete(io, io->finished < min_complete ? 1 : 0);
    if (r < 0)
      break;
    io->finished += run_room(io);
    if (io->finished >= min_complete)
      break;
  }
  /* Callbacks and short transfers may have queued more: hand those over too. */
  if (r >= 0)
    r = io->be->submit(io);
  done = io->finished;
  io->finished = saved + done;   /* a reap nested in a callback still counts for the outer one */
  return r < 0 ? r : (int)done;
}

int svm_io_open_file(const char *path, int flags, mode_t mode, bool want_direct, bool *direct)
{
  int fd, fl;

  if (direct != NULL)
    *direct = false;
  /* Open buffered, then switch O_DIRECT on with fcntl: an O_CREAT|O_EXCL open that fails only
   * because the file system refuses O_DIRECT would otherwise have created the file already. */
  fd = open(path, (flags & ~O_DIRECT) | O_CLOEXEC, mode);
  if (fd < 0)
    return svm_error(errno, "%s: %s", path, strerror(errno));
  if (want_direct) {
    fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && fcntl(fd, F_SETFL, fl | O_DIRECT) == 0) {
      if (direct != NULL)
        *direct = true;
    }
  }
  return fd;
}

void *svm_io_alloc_buffer(size_t len)
{
  enum { HUGE = 2 << 20 };
  void *p = NULL;

  if (len == 0)
    len = SVM_IO_ALIGN;
  /* Large buffers in transparent huge pages: physically contiguous memory lets an O_DIRECT
   * request reach the device whole instead of split at its segment limit. */
  if (len >= HUGE) {
    if (posix_memalign(&p, HUGE, len) != 0)
      return NULL;
    madvise(p, len / HUGE * HUGE, MADV_HUGEPAGE);
    return p;
  }
  if (posix_memalign(&p, SVM_IO_ALIGN, len) != 0)
    return NULL;
  return p;
}
