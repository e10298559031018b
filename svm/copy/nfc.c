/* The NFC ends of the copy engine (see nfc.h): the sending end (a destination that turns the
 * engine's writes into DATA and ZERO frames), the receiving sink (frames into the I/O engine),
 * and the put of a file in several streams, each a copy engine of its own on its own thread,
 * over its own share of the file's data. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "svm/copy/nfc.h"
#include "svm/disk/extents.h"
#include "svm/disk/provision.h"
#include "svm/io/io.h"

enum {
  RECV_BUFFERS = 16,          /* chunks the receiver has in flight to the disk */
  RECV_BUFFER = 2 << 20,
};

/* ==== the sending end ========================================================================
 * A write is sent at once (a blocking send on the connection, which TCP and TLS pipeline: the
 * engine keeps its reads in flight meanwhile and the receiver acknowledges nothing until END).
 * Callbacks may not run inside write(), so completions wait in a queue behind an eventfd until
 * the engine polls. */

struct done {
  svm_io_cb cb;
  void *opaque;
  int64_t res;
};

struct nfc_end {
  struct svm_copy_end e;      /* first: the engine sees this */
  struct nfc_conn *conn;
  int efd;
  struct done *q;
  size_t qn, qcap;
};

static struct nfc_end *NE(struct svm_copy_end *e)
{
  return (struct nfc_end *)e;
}

static int queue_done(struct nfc_end *n, svm_io_cb cb, void *opaque, int64_t res)
{
  if (n->qn == n->qcap) {
    size_t cap = n->qcap ? n->qcap * 2 : 256;
    struct done *q = realloc(n->q, cap * sizeof *q);
    if (q == NULL)
      return svm_error(ENOMEM, "out of memory");
    n->q = q;
    n->qcap = cap;
  }
  n->q[n->qn++] = (struct done){ cb, opaque, res };
  if (n->qn == 1) {
    uint64_t one = 1;
    if (write(n->efd, &one, sizeof one) < 0)
      return svm_error(errno, "eventfd: %s", strerror(errno));
  }
  return 0;
}

static void run_done(struct nfc_end *n)
{
  size_t k = n->qn;

  n->qn = 0;                  /* callbacks only queue engine work, never call back in here */
  for (size_t i = 0; i < k; i++)
    n->q[i].cb(n->q[i].opaque, n->q[i].res);
}

static int ne_extents(struct svm_copy_end *e, uint64_t size, struct svm_extent_list *l)
{
  (void)size, (void)l;
  return svm_error(EINVAL, "%s: internal error: an NFC end is not a source", e->name);
}

static int ne_read(struct svm_copy_end *e, void *buf, size_t len, uint64_t off, svm_io_cb cb,
                   void *opaque)
{
  (void)buf, (void)len, (void)off, (void)cb, (void)opaque;
  return svm_error(EINVAL, "%s: internal error: an NFC end is not a source", e->name);
}

static int ne_write(struct svm_copy_end *e, const void *buf, size_t len, uint64_t off,
                    svm_io_cb cb, void *opaque)
{
  struct nfc_end *n = NE(e);
  int r = nfc_send_data(n->conn, off, buf, (uint32_t)len);

  return r < 0 ? svm_error_prefix("%s", e->name) : queue_done(n, cb, opaque, (int64_t)len);
}

static int ne_zero(struct svm_copy_end *e, uint64_t off, uint64_t len, bool allocate,
                   svm_io_cb cb, void *opaque)
{
  struct nfc_end *n = NE(e);
  int r = nfc_send_zero(n->conn, off, len);

  (void)allocate;             /* the receiver's provisioning decides */
  return r < 0 ? svm_error_prefix("%s", e->name) : queue_done(n, cb, opaque, 0);
}

static int ne_poll_prepare(struct svm_copy_end *e, struct pollfd *pfd)
{
  struct nfc_end *n = NE(e);

  if (n->qn == 0)
    return 0;
  *pfd = (struct pollfd){ .fd = n->efd, .events = POLLIN };
  return 1;
}

static int ne_poll_done(struct svm_copy_end *e, const struct pollfd *pfd)
{
  struct nfc_end *n = NE(e);
  uint64_t cnt;

  if (!(pfd->revents & POLLIN))
    return 0;
  if (read(n->efd, &cnt, sizeof cnt) < 0 && errno != EAGAIN)
    return svm_error(errno, "%s: eventfd: %s", e->name, strerror(errno));
  run_done(n);
  return 0;
}

static int ne_wait(struct svm_copy_end *e)
{
  struct nfc_end *n = NE(e);
  uint64_t cnt;

  if (read(n->efd, &cnt, sizeof cnt) < 0 && errno != EAGAIN)
    return svm_error(errno, "%s: eventfd: %s", e->name, strerror(errno));
  run_done(n);
  return 0;
}

static int ne_finish(struct svm_copy_end *e)
{
  int r = nfc_send_end(NE(e)->conn);
  return r < 0 ? svm_error_prefix("%s", e->name) : 0;
}

static void ne_free(struct svm_copy_end *e)
{
  struct nfc_end *n = NE(e);

  close(n->efd);
  free(n->q);
  free(n);
}

static const struct svm_copy_end_ops nfc_end_ops = {
  .kind = "nfc",
  .extents = ne_extents,
  .read = ne_read,
  .write = ne_write,
  .zero = ne_zero,
  .poll_prepare = ne_poll_prepare,
  .poll_done = ne_poll_done,
  .wait = ne_wait,
  .finish = ne_finish,
  .free = ne_free,
};

int svm_copy_nfc_end_new(const char *name, struct nfc_conn *conn, uint64_t size,
                         struct svm_copy_end **out)
{
  struct nfc_end *n = calloc(1, sizeof *n);

  if (n == NULL)
    return svm_error(ENOMEM, "%s: out of memory", name);
  if ((n->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
    int e = errno;
    free(n);
    return svm_error(e, "eventfd: %s", strerror(e));
  }
  n->e = (struct svm_copy_end){ .ops = &nfc_end_ops, .name = name, .size = size,
                                .max_request = NFC_MAX_DATA, .writable = true };
  n->conn = conn;
  *out = &n->e;
  return 0;
}

/* ==== the receiving sink =====================================================================
 * Payload is read straight into one of a few buffers and written through the I/O engine while
 * the next frames arrive; sync() waits for the writes and makes them durable. */

struct rbuf {
  struct rfile *f;
  char *p;
  size_t cap;
  bool busy;
};

struct rfile {
  int fd;
  struct svm_io *io;
  enum svm_provisioning prov;
  char name[NFC_MAX_NAME + 1];
  struct rbuf b[RECV_BUFFERS];
  int err;
};

static void on_written(void *opaque, int64_t res)
{
  struct rbuf *b = opaque;

  b->busy = false;
  if (res < 0 && b->f->err == 0)
    b->f->err = (int)res;
}

static int rfile_err(struct rfile *f)
{
  int e = -f->err;
  return svm_error(e, "%s: write failed: %s%s", f->name, strerror(e),
                   e == ENOSPC ? " (the destination datastore is full: free some space)" : "");
}

static int rfile_reap(struct rfile *f, unsigned min)
{
  int r = svm_io_reap(f->io, min);

  if (r < 0)
    return svm_error(-r, "%s: I/O engine: %s", f->name, strerror(-r));
  return f->err < 0 ? rfile_err(f) : 0;
}

static int sink_open(void *opaque, int dirfd, const struct nfc_open *o, bool fresh, void **out)
{
  CLEANUP_CLOSE int fd = -1;
  struct stat st;
  struct rfile *f;
  int r;

  (void)opaque;
  /* O_NOFOLLOW: a symbolic link planted in the folder is never followed out of it. */
  fd = openat(dirfd, o->name, O_RDWR | O_CLOEXEC | O_NOFOLLOW | (fresh ? O_CREAT : 0), 0600);
  if (fd < 0)
    return svm_error(errno, "%s: cannot open%s: %s", o->name,
                     fresh ? "" : " to resume (the first stream did not create it?)",
                     strerror(errno));
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
    return svm_error(EINVAL, "%s: not a regular file: refusing to write it", o->name);
  if (fresh) {
    if ((r = svm_provision_prepare(fd, o->name, o->size, (enum svm_provisioning)o->provisioning))
        < 0)
      return r;
  } else if ((uint64_t)st.st_size != o->size) {
    return svm_error(EINVAL, "%s: has %llu bytes, the sender says %llu: start the copy over",
                     o->name, (unsigned long long)st.st_size, (unsigned long long)o->size);
  }
  if ((f = calloc(1, sizeof *f)) == NULL)
    return svm_error(ENOMEM, "out of memory");
  if ((r = svm_io_new(SVM_IO_AUTO, RECV_BUFFERS, &f->io)) < 0) {
    free(f);
    return svm_error_prefix("%s", o->name);
  }
  f->prov = (enum svm_provisioning)o->provisioning;
  snprintf(f->name, sizeof f->name, "%s", o->name);
  for (unsigned i = 0; i < RECV_BUFFERS; i++)
    f->b[i].f = f;
  f->fd = fd;
  fd = -1;
  *out = f;
  return 0;
}

static int sink_buffer(void *file, uint32_t len, void **buf)
{
  struct rfile *f = file;
  int r;

  for (;;) {
    if (f->err < 0)
      return rfile_err(f);
    for (unsigned i = 0; i < RECV_BUFFERS; i++) {
      struct rbuf *b = &f->b[i];
      if (b->busy)
        continue;
      if (b->cap < len) {
        size_t cap = len < RECV_BUFFER ? RECV_BUFFER : len;
        free(b->p);
        if ((b->p = svm_io_alloc_buffer(cap)) == NULL) {
          b->cap = 0;
          return svm_error(ENOMEM, "out of memory");
        }
        b->cap = cap;
      }
      *buf = b->p;
      return 0;
    }
    if ((r = rfile_reap(f, 1)) < 0)
      return r;
  }
}

static int sink_write(void *file, void *buf, uint32_t len, uint64_t off)
{
  struct rfile *f = file;
  struct rbuf *b = NULL;
  int r;

  for (unsigned i = 0; i < RECV_BUFFERS; i++)
    if (f->b[i].p == buf)
      b = &f->b[i];
  if (b == NULL)
    return svm_error(EINVAL, "internal error: unknown receive buffer");
  b->busy = true;
  while ((r = svm_io_pwrite(f->io, f->fd, buf, len, off, on_written, b)) == -EAGAIN)
    if ((r = rfile_reap(f, 1)) < 0)
      return r;
  if (r < 0) {
    b->busy = false;
    return svm_error(-r, "%s: write at offset %" PRIu64 ": %s", f->name, off, strerror(-r));
  }
  if ((r = svm_io_submit(f->io)) < 0)
    return svm_error(-r, "%s: I/O engine: %s", f->name, strerror(-r));
  return 0;
}

static int sink_discard(void *file, uint64_t off, uint64_t len)
{
  struct rfile *f = file;
  int mode = FALLOC_FL_KEEP_SIZE | (f->prov == SVM_PROVISIONING_THIN ? FALLOC_FL_PUNCH_HOLE
                                                                     : FALLOC_FL_ZERO_RANGE);

  if (fallocate(f->fd, mode, (off_t)off, (off_t)len) == 0)
    return 0;
  if (errno == EOPNOTSUPP && mode & FALLOC_FL_ZERO_RANGE &&
      fallocate(f->fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, (off_t)off, (off_t)len) == 0 &&
      fallocate(f->fd, 0, (off_t)off, (off_t)len) == 0)
    return 0;
  return svm_error(errno, "%s: cannot clear [%" PRIu64 ", +%" PRIu64 ") to resume: %s",
                   f->name, off, len, strerror(errno));
}

static int sink_sync(void *file)
{
  struct rfile *f = file;
  int r;

  while (svm_io_in_flight(f->io) > 0)
    if ((r = rfile_reap(f, 1)) < 0)
      return r;
  if (f->err < 0)
    return rfile_err(f);
  if (fdatasync(f->fd) < 0)
    return svm_error(errno, "%s: fdatasync: %s", f->name, strerror(errno));
  return 0;
}

static void sink_close(void *file)
{
  struct rfile *f = file;

  svm_io_free(f->io);         /* waits for writes still in flight */
  for (unsigned i = 0; i < RECV_BUFFERS; i++)
    free(f->b[i].p);
  close(f->fd);
  free(f);
}

static int sink_commit(void *opaque, int dirfd, const struct nfc_open *o)
{
  CLEANUP_CLOSE int fd = openat(dirfd, o->name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  int r;

  (void)opaque;
  if (fd < 0)
    return svm_error(errno, "%s: cannot open to commit: %s", o->name, strerror(errno));
  if ((r = svm_provision_finish(fd, o->name, o->size, (enum svm_provisioning)o->provisioning,
                                NULL)) < 0)
    return r;
  if (fsync(fd) < 0)
    return svm_error(errno, "%s: fsync: %s", o->name, strerror(errno));
  return 0;
}

/* GET: the file goes back as a one-stream put on the same connection. */
static int sink_get(void *opaque, int dirfd, const struct nfc_open *o, struct nfc_conn *c)
{
  struct svm_nfc_put_options po = { .provisioning = (enum svm_provisioning)o->provisioning };

  (void)opaque;
  return svm_nfc_put_on(c, dirfd, o->name, &po, NULL);
}

static const struct nfc_sink_ops io_sink = {
  .open = sink_open,
  .buffer = sink_buffer,
  .write = sink_write,
  .discard = sink_discard,
  .sync = sink_sync,
  .close = sink_close,
  .commit = sink_commit,
  .get = sink_get,
};

int svm_nfc_serve(struct nfc_conn *c, int dirfd, const struct nfc_recv_options *o,
                  struct nfc_recv_counters *n)
{
  return nfc_recv_serve(c, dirfd, &io_sink, NULL, o, n);
}

int svm_nfc_get(struct nfc_conn *c, const char *name, enum svm_provisioning p, int dirfd,
                const struct nfc_recv_options *o, struct nfc_recv_counters *n)
{
  return nfc_recv_get(c, name, (uint32_t)p, dirfd, &io_sink, NULL, o, n);
}
