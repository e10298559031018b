/* Shared by the mirror's tests: temporary raw files as layers, a fault-injecting filter for
 * the destination (fails or hangs from its n-th request on, counts flushes and FUA), and
 * synchronous layer calls on a thread's own I/O engine. */
#ifndef TEST_MIRROR_COMMON_H
#define TEST_MIRROR_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "svm/disk/layer.h"
#include "svm/io/io.h"

/* ---- files ---- */

static inline char *tmp_file(uint64_t size)
{
  char *p = strdup("/tmp/svm-mirror-test-XXXXXX");
  int fd = mkstemp(p);

  if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
    abort();
  fchmod(fd, 0600);
  close(fd);
  return p;
}

static inline void file_pwrite(const char *path, const void *buf, size_t len, uint64_t off)
{
  int fd = open(path, O_WRONLY);
  if (fd < 0 || pwrite(fd, buf, len, (off_t)off) != (ssize_t)len)
    abort();
  close(fd);
}

static inline char *file_read_all(const char *path, uint64_t size)
{
  char *b = malloc(size);
  int fd = open(path, O_RDONLY);
  if (b == NULL || fd < 0 || pread(fd, b, size, 0) != (ssize_t)size)
    abort();
  close(fd);
  return b;
}

/* ---- a fault-injecting filter ---- */

struct held {
  struct held *next;
  svm_io_cb cb;
  void *opaque;
};

struct fault {
  atomic_int requests;          /* write/zero/trim/flush seen */
  int fail_at, fail_errno;      /* from the fail_at-th request on: fail with -fail_errno */
  int hang_at;                  /* from the hang_at-th request on: never complete */
  int eagain_at;                /* the eagain_at-th request: on_eagain(arg), then -EAGAIN, as
                                   a full engine would answer */
  void (*on_eagain)(void *arg);
  void *eagain_arg;
  bool no_fast_zero;            /* fast zeros fail with -ENOTSUP (and change nothing) */
  atomic_int flushes, fuas, zeros_no_hole, trims, fast_zeros;
  atomic_int writes_in_flight, writes_in_flight_max;
  _Atomic uint64_t write_len_max;
  pthread_mutex_t mu;
  struct held *held;
  unsigned nheld;
};

/* 0: pass the request on; 1: answered (failed) or held here; -EAGAIN: refused, as a full
 * engine refuses. */
static inline int fault_check(struct svm_layer *l, svm_io_cb cb, void *opaque)
{
  struct fault *f = l->priv;
  int n = atomic_fetch_add(&f->requests, 1) + 1;

  if (f->eagain_at && n == f->eagain_at) {
    if (f->on_eagain)
      f->on_eagain(f->eagain_arg);
    return -EAGAIN;
  }
  if (f->fail_at && n >= f->fail_at) {
    cb(opaque, -f->fail_errno);
    return 1;
  }
  if (f->hang_at && n >= f->hang_at) {
    struct held *h = malloc(sizeof *h);
    if (h == NULL)
      abort();
    h->cb = cb;
    h->opaque = opaque;
    pthread_mutex_lock(&f->mu);
    h->next = f->held;
    f->held = h;
    f->nheld++;
    pthread_mutex_unlock(&f->mu);
    return 1;
  }
  return 0;
}

/* A write passed below, counted while in flight. */
struct counted {
  struct fault *f;
  svm_io_cb cb;
  void *opaque;
};

static inline void counted_done(void *opaque, int64_t res)
{
  struct counted *c = opaque;
  svm_io_cb cb = c->cb;
  void *o = c->opaque;

  atomic_fetch_sub(&c->f->writes_in_flight, 1);
  free(c);
  cb(o, res);
}

static inline int fault_write(struct svm_layer *l, struct svm_io *io, const void *buf,
                              size_t len, uint64_t off, unsigned flags, svm_io_cb cb,
                              void *opaque)
{
  struct fault *f = l->priv;
  struct counted *c;
  uint64_t max;
  int n, r;
  if (flags & SVM_LAYER_FUA)
    atomic_fetch_add(&f->fuas, 1);
  if ((r = fault_check(l, cb, opaque)) != 0)
    return r < 0 ? r : 0;
  if ((c = malloc(sizeof *c)) == NULL)
    return -ENOMEM;
  *c = (struct counted){ .f = f, .cb = cb, .opaque = opaque };
  n = atomic_fetch_add(&f->writes_in_flight, 1) + 1;
  for (int m = atomic_load(&f->writes_in_flight_max);
       n > m && !atomic_compare_exchange_weak(&f->writes_in_flight_max, &m, n);)
    ;
  for (max = atomic_load(&f->write_len_max);
       len > max && !atomic_compare_exchange_weak(&f->write_len_max, &max, len);)
    ;
  r = svm_layer_write(l->below, io, buf, len, off, flags, counted_done, c);
  if (r < 0) {
    atomic_fetch_sub(&f->writes_in_flight, 1);
    free(c);
  }
  return r;
}

static inline int fault_zero(struct svm_layer *l, struct svm_io *io, uint64_t off,
                             uint64_t len, unsigned flags, svm_io_cb cb, void *opaque)
{
  struct fault *f = l->priv;
  int r;
  if (flags & SVM_LAYER_NO_HOLE)
    atomic_fetch_add(&f->zeros_no_hole, 1);
  if (flags & SVM_LAYER_FAST)
    atomic_fetch_add(&f->fast_zeros, 1);
  if ((flags & SVM_LAYER_FAST) && f->no_fast_zero) {
    cb(opaque, -ENOTSUP);
    return 0;
  }
  if ((r = fault_check(l, cb, opaque)) != 0)
    return r < 0 ? r : 0;
  return svm_layer_zero(l->below, io, off, len, flags, cb, opaque);
}

static inline int fault_trim(struct svm_layer *l, struct svm_io *io, uint64_t off,
                             uint64_t len, unsigned flags, svm_io_cb cb, void *opaque)
{
  struct fault *f = l->priv;
  int r;
  atomic_fetch_add(&f->trims, 1);
  if ((r = fault_check(l, cb, opaque)) != 0)
    return r < 0 ? r : 0;
  return svm_layer_trim(l->below, io, off, len, flags, cb, opaque);
}

static inline int fault_flush(struct svm_layer *l, struct svm_io *io, svm_io_cb cb,
                              void *opaque)
{
  struct fault *f = l->priv;
  int r;
  atomic_fetch_add(&f->flushes, 1);
  if ((r = fault_check(l, cb, opaque)) != 0)
    return r < 0 ? r : 0;
  return svm_layer_flush(l->below, io, cb, opaque);
}

/* The late completions of hung requests, from the test's thread (as a destination that comes
 * back after the drop would). */
static inline unsigned fault_release(struct svm_layer *l, int64_t res)
{
  struct fault *f = l->priv;
  struct held *h, *list;
  unsigned n = 0;

  pthread_mutex_lock(&f->mu);
  list = f->held;
  f->held = NULL;
  f->nheld = 0;
  pthread_mutex_unlock(&f->mu);
  while ((h = list) != NULL) {
    list = h->next;
    h->cb(h->opaque, res);
    free(h);
    n++;
  }
  return n;
}

static inline void fault_close(struct svm_layer *l)
{
  struct fault *f = l->priv;
  fault_release(l, -EIO);
  pthread_mutex_destroy(&f->mu);
  free(f);
}

static const struct svm_layer_ops fault_ops = {
  .kind = "test-fault",
  .write = fault_write,
  .zero = fault_zero,
  .trim = fault_trim,
  .flush = fault_flush,
  .close = fault_close,
};

/* A raw layer of path under a fault filter. */
static inline struct svm_layer *fault_layer(const char *path, struct fault **fp)
{
  struct svm_layer *raw, *l;
  struct fault *f = calloc(1, sizeof *f);

  if (f == NULL || svm_layer_open_raw(path, false, &raw) < 0)
    abort();
  pthread_mutex_init(&f->mu, NULL);
  if (svm_layer_new_filter(&fault_ops, f, raw, &l) < 0)
    abort();
  *fp = f;
  return l;
}

/* ---- synchronous calls on this thread's engine ---- */

struct done_flag {
  bool done;
  int64_t res;
};

static inline void done_cb(void *opaque, int64_t res)
{
  struct done_flag *d = opaque;
  d->res = res;
  d->done = true;
}

/* Reap until d is done: completions come from the engine or as posts (parked requests). */
static inline int64_t wait_done(struct svm_io *io, struct done_flag *d)
{
  svm_io_reap(io, 0);
  while (!d->done) {
    struct pollfd p = { .fd = svm_io_event_fd(io), .events = POLLIN };
    uint64_t v;
    if (poll(&p, 1, -1) > 0 && read(p.fd, &v, sizeof v) < 0) { /* raced: fine */ }
    svm_io_reap(io, 0);
  }
  return d->res;
}

static inline int64_t sync_write(struct svm_layer *l, struct svm_io *io, const void *buf,
                                 size_t len, uint64_t off, unsigned flags)
{
  struct done_flag d = { 0 };
  int r = svm_layer_write(l, io, buf, len, off, flags, done_cb, &d);
  return r < 0 ? r : wait_done(io, &d);
}

static inline int64_t sync_zero(struct svm_layer *l, struct svm_io *io, uint64_t off,
                                uint64_t len, unsigned flags)
{
  struct done_flag d = { 0 };
  int r = svm_layer_zero(l, io, off, len, flags, done_cb, &d);
  return r < 0 ? r : wait_done(io, &d);
}

static inline int64_t sync_trim(struct svm_layer *l, struct svm_io *io, uint64_t off,
                                uint64_t len)
{
  struct done_flag d = { 0 };
  int r = svm_layer_trim(l, io, off, len, 0, done_cb, &d);
  return r < 0 ? r : wait_done(io, &d);
}

static inline int64_t sync_flush(struct svm_layer *l, struct svm_io *io)
{
  struct done_flag d = { 0 };
  int r = svm_layer_flush(l, io, done_cb, &d);
  return r < 0 ? r : wait_done(io, &d);
}

#endif
