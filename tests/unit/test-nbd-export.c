/* The export in process, driven by real libnbd clients, over layer stacks: the data path through
 * a test filter layer (a probe that counts what it sees, fails on demand, and parks requests
 * that the test later completes from its own thread with svm_io_post), block status for
 * base:allocation and a provider's context, the real change-tracking layer, pause (nested,
 * with a deadline that expires), flush while paused, and a swap of a two-layer stack.
 * Nothing here sleeps: where a test needs to know that something happened, it waits for it. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libnbd.h>
#include <svmotion/cbt.h>
#include <svmotion/error.h>

#include "svm/disk/track.h"
#include "svm/nbd/export.h"

enum { DISK = 8 << 20, BLK = 4096, SEC = 1000 * 1000 * 1000 };

/* ---- the probe: a test filter layer ---- */

enum { SEEN_WRITE = 1, SEEN_ZERO = 2, SEEN_TRIM = 4, SEEN_FLUSH = 8 };

/* A request the probe holds until the test lets it go on. */
struct parked {
  struct parked *next;
  struct svm_layer *l;
  struct svm_io *io;
  const void *buf;
  size_t len;
  uint64_t off;
  unsigned flags;
  svm_io_cb cb;
  void *opaque;
};

struct probe {
  atomic_uint writes, zeroes, trims, flushes;
  atomic_ullong bytes;          /* written, zeroed and trimmed */
  atomic_uint kinds;            /* SEEN_* */
  atomic_uint flags;            /* SVM_LAYER_* seen on any request */
  atomic_uint fua_writes;
  atomic_ullong fail_at;        /* fail a write at this offset (+1; 0 = none) with EIO */
  atomic_int park;              /* hold writes until released */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct parked *parked;        /* under mu */
  unsigned nparked;             /* under mu */
};

static void probe_init(struct probe *p)
{
  memset(p, 0, sizeof *p);
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
}

static void probe_fini(struct probe *p)
{
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
}

static void probe_count(struct probe *p, atomic_uint *kind, unsigned seen, uint64_t len,
                        unsigned flags)
{
  atomic_fetch_add(kind, 1);
  atomic_fetch_add(&p->bytes, len);
  atomic_fetch_or(&p->kinds, seen);
  atomic_fetch_or(&p->flags, flags);
}

static int probe_write(struct svm_layer *l, struct svm_io *io, const void *buf, size_t len,
                       uint64_t off, unsigned flags, svm_io_cb cb, void *opaque)
{
  struct probe *p = l->priv;

  if (atomic_load(&p->fail_at) == off + 1) {
    cb(opaque, -EIO);             /* the data never reaches the layer below */
    return 0;
  }
  probe_count(p, &p->writes, SEEN_WRITE, len, flags);
  if (flags & SVM_LAYER_FUA)
    atomic_fetch_add(&p->fua_writes, 1);
  if (atomic_load(&p->park)) {
    struct parked *q = calloc(1, sizeof *q);
    if (q == NULL)
      return -ENOMEM;
    *q = (struct parked){ .l = l, .io = io, .buf = buf, .len = len, .off = off,
                          .flags = flags, .cb = cb, .opaque = opaque };
    pthread_mutex_lock(&p->mu);
    q->next = p->parked;
    p->parked = q;
    p->nparked++;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return 0;
  }
  return svm_layer_write(l->below, io, buf, len, off, flags, cb, opaque);
}

static int probe_zero(struct svm_layer *l, struct svm_io *io, uint64_t off, uint64_t len,
                      unsigned flags, svm_io_cb cb, void *opaque)
{
  struct probe *p = l->priv;
  probe_count(p, &p->zeroes, SEEN_ZERO, len, flags);
  return svm_layer_zero(l->below, io, off, len, flags, cb, opaque);
}

static int probe_trim(struct svm_layer *l, struct svm_io *io, uint64_t off, uint64_t len,
                      unsigned flags, svm_io_cb cb, void *opaque)
{
  struct probe *p = l->priv;
  probe_count(p, &p->trims, SEEN_TRIM, len, flags);
  return svm_layer_trim(l->below, io, off, len, flags, cb, opaque);
}

static int probe_flush(struct svm_layer *l, struct svm_io *io, svm_io_cb cb, void *opaque)
{
  struct probe *p = l->priv;
  probe_count(p, &p->flushes, SEEN_FLUSH, 0, 0);
  return svm_layer_flush(l->below, io, cb, opaque);
}

/* read, block_status and flush_sync pass through (NULL); the fixture owns the probe. */
static const struct svm_layer_ops probe_ops = {
  .kind = "probe",
  .write = probe_write,
  .zero = probe_zero,
  .trim = probe_trim,
  .flush = probe_flush,
};

/* On the worker, posted by the test's thread: the parked write goes on down. */
static void parked_resume(void *opaque, int64_t res)
{
  struct parked *q = opaque;
  int r;

  (void)res;
  r = svm_layer_write(q->l->below, q->io, q->buf, q->len, q->off, q->flags, q->cb, q->opaque);
  if (r < 0)
    q->cb(q->opaque, r);
  free(q);
}

/* Wait until n requests are parked (fails after 10 s rather than hanging the suite). */
static void probe_wait_parked(struct probe *p, unsigned n)
{
  struct timespec dl;
  int r = 0;

  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += 10;
  pthread_mutex_lock(&p->mu);
  while (p->nparked < n && r != ETIMEDOUT)
    r = pthread_cond_timedwait(&p->cv, &p->mu, &dl);
  pthread_mutex_unlock(&p->mu);
  if (r == ETIMEDOUT)
    fail_msg("expected %u parked requests, %u came", n, p->nparked);
}

/* Let every parked request go on: completed from this thread, run on each one's worker. */
static void probe_release(struct probe *p)
{
  struct parked *q, *next;

  atomic_store(&p->park, 0);
  pthread_mutex_lock(&p->mu);
  q = p->parked;
  p->parked = NULL;
  p->nparked = 0;
  pthread_mutex_unlock(&p->mu);
  for (; q; q = next) {
    next = q->next;
    assert_int_equal(svm_io_post(q->io, parked_resume, q, 0), 0);
  }
}

static struct svm_layer *probe_stack(const char *path, struct probe *p)
{
  struct svm_layer *raw, *top;
  assert_int_equal(svm_layer_open_raw(path, false, &raw), 0);
  assert_int_equal(svm_layer_new_filter(&probe_ops, p, raw, &top), 0);
  return top;
}

/* ---- fixture ---- */

struct fixture {
  char dir[64];
  char path[128];
  char sock[128];
  char uri[256];
  struct svm_export *e;
  struct probe probe;
};

static void write_file(const char *path, uint64_t size, int pattern)
{
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  char buf[BLK];
  assert_true(fd >= 0);
  assert_int_equal(ftruncate(fd, (off_t)size), 0);
  if (pattern >= 0) {
    memset(buf, pattern, sizeof buf);
    for (uint64_t o = 0; o < size; o += BLK)
      assert_int_equal(pwrite(fd, buf, BLK, (off_t)o), BLK);
  }
  close(fd);
}

static struct fixture *fixture_new(void)
{
  struct fixture *f = calloc(1, sizeof *f);

  strcpy(f->dir, "/tmp/svm-nbd-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->path, sizeof f->path, "%s/disk.raw", f->dir);
  snprintf(f->sock, sizeof f->sock, "%s/nbd.sock", f->dir);
  snprintf(f->uri, sizeof f->uri, "nbd+unix:///vm1/disk0?socket=%s", f->sock);
  write_file(f->path, DISK, -1);
  probe_init(&f->probe);
  return f;
}

static void fixture_export(struct fixture *f, struct svm_layer *top)
{
  struct svm_export_opts o = { .name = "vm1/disk0", .threads = 2, .queue_depth = 16 };
  assert_int_equal(svm_export_new(&o, top, &f->e), 0);
  assert_int_equal(svm_export_listen_unix(f->e, f->sock), 0);
}

static int setup(void **st)
{
  struct fixture *f = fixture_new();
  fixture_export(f, probe_stack(f->path, &f->probe));
  *st = f;
  return 0;
}

static int teardown(void **st)
{
  struct fixture *f = *st;
  char cmd[256];
  probe_release(&f->probe);       /* a failed test may leave requests parked: free waits */
  svm_export_free(f->e);
  probe_fini(&f->probe);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
  assert_int_equal(system(cmd), 0);
  free(f);
  return 0;
}

static struct nbd_handle *client(struct fixture *f, const char *ctx)
{
  struct nbd_handle *h = nbd_create();
  assert_non_null(h);
  if (ctx)
    assert_int_equal(nbd_add_meta_context(h, ctx), 0);
  if (nbd_connect_uri(h, f->uri) < 0)
    fail_msg("connect %s: %s", f->uri, nbd_get_error());
  return h;
}

/* Wait for an asynchronous command; returns nbd_aio_command_completed's answer (1 or -1). */
static int wait_cmd(struct nbd_handle *h, int64_t cookie)
{
  int r;
  while ((r = nbd_aio_command_completed(h, (uint64_t)cookie)) == 0)
    assert_true(nbd_poll(h, -1) >= 0);
  return r;
}

static void read_file(const char *path, uint64_t off, void *buf, size_t len)
{
  int fd = open(path, O_RDONLY);
  assert_true(fd >= 0);
  assert_int_equal(pread(fd, buf, len, (off_t)off), (ssize_t)len);
  close(fd);
}

/* ---- data path ---- */

static void test_data_path(void **st)
{
  struct fixture *f = *st;
  struct probe *p = &f->probe;
  struct nbd_handle *h = client(f, NULL);
  static char buf[64 * 1024], back[64 * 1024];

  assert_int_equal(nbd_get_size(h), DISK);
  assert_int_equal(nbd_can_multi_conn(h), 1);
  assert_int_equal(nbd_can_fua(h), 1);
  assert_int_equal(nbd_can_trim(h), 1);
  assert_int_equal(nbd_can_zero(h), 1);
  assert_int_equal(nbd_can_fast_zero(h), 1);
  memset(buf, 0x5a, sizeof buf);
  assert_int_equal(nbd_pwrite(h, buf, sizeof buf, 3 * BLK, 0), 0);
  assert_int_equal(nbd_pwrite(h, buf, 100, 1, LIBNBD_CMD_FLAG_FUA), 0);   /* unaligned */
  assert_int_equal(nbd_pread(h, back, sizeof back, 3 * BLK, 0), 0);
  assert_memory_equal(buf, back, sizeof buf);
  assert_int_equal(nbd_pread(h, back, 102, 0, 0), 0);
  assert_int_equal(back[0], 0);
  assert_int_equal(back[1], 0x5a);
  assert_int_equal(back[100], 0x5a);
  assert_int_equal(back[101], 0);
  assert_int_equal(nbd_flush(h, 0), 0);
  assert_int_equal(atomic_load(&p->writes), 2);
  assert_int_equal(atomic_load(&p->fua_writes), 1);
  assert_int_equal(atomic_load(&p->flushes), 1);
  assert_true(atomic_load(&p->bytes) == sizeof buf + 100);

  /* zero (punch, then NO_HOLE, then FAST), trim: each reaches the layer with its flags */
  assert_int_equal(nbd_zero(h, 3 * BLK, BLK, 0), 0);
  assert_int_equal(nbd_zero(h, 4 * BLK, BLK, LIBNBD_CMD_FLAG_NO_HOLE | LIBNBD_CMD_FLAG_FUA), 0);
  assert_int_equal(nbd_pread(h, back, 8 * BLK, 0, 0), 0);
  for (int i = BLK; i < 5 * BLK; i++)
    assert_int_equal(back[i], 0);
  assert_int_equal(back[5 * BLK], 0x5a);
  /* a fast zero on ext4/xfs/tmpfs is a fallocate: it works; elsewhere ENOTSUP is right */
  if (nbd_zero(h, BLK, BLK, LIBNBD_CMD_FLAG_FAST_ZERO) < 0)
    if (nbd_get_errno() != ENOTSUP)
      fail_msg("fast zero: %s", nbd_get_error());
  assert_int_equal(nbd_trim(h, 16 * BLK, 3 * BLK, LIBNBD_CMD_FLAG_FUA), 0);
  assert_int_equal(atomic_load(&p->zeroes), 3);
  assert_int_equal(atomic_load(&p->trims), 1);
  assert_int_equal(atomic_load(&p->kinds), SEEN_WRITE | SEEN_ZERO | SEEN_TRIM | SEEN_FLUSH);
  assert_int_equal(atomic_load(&p->flags), SVM_LAYER_FUA | SVM_LAYER_NO_HOLE | SVM_LAYER_FAST);
  /* libnbd's zero and trim take the count first: 3 + 4 + 1 blocks zeroed, 16 trimmed */
  assert_true(atomic_load(&p->bytes) == sizeof buf + 100 + (3 + 4 + 1 + 16) * BLK);

  /* errors: past the end, and a layer that fails (EIO, the data is not written) */
  assert_int_equal(nbd_set_strict_mode(h, 0), 0);
  assert_int_equal(nbd_pread(h, back, BLK, DISK - 1, 0), -1);
  assert_int_equal(nbd_get_errno(), EINVAL);
  assert_int_equal(nbd_pwrite(h, buf, BLK, DISK, 0), -1);
  assert_int_equal(nbd_get_errno(), ENOSPC);
  atomic_store(&p->fail_at, (uint64_t)100 * BLK + 1);
  assert_int_equal(nbd_pwrite(h, buf, BLK, 100 * BLK, 0), -1);
  assert_int_equal(nbd_get_errno(), EIO);
  atomic_store(&p->fail_at, 0);
  assert_int_equal(nbd_pread(h, back, BLK, 100 * BLK, 0), 0);
  assert_int_equal(back[0], 0);
  /* still usable after the errors */
  assert_int_equal(nbd_pwrite(h, buf, BLK, 100 * BLK, 0), 0);
  assert_int_equal(nbd_pread(h, back, BLK, 100 * BLK, 0), 0);
  assert_int_equal(back[0], 0x5a);
  assert_int_equal(nbd_shutdown(h, 0), 0);
  nbd_close(h);
}

/* Requests parked in a layer complete from another thread (svm_io_post): the client gets its
 * replies, and nothing completes before the release. */
static void test_cross_thread_completion(void **st)
{
  struct fixture *f = *st;
  struct probe *p = &f->probe;
  struct nbd_handle *h = client(f, NULL);
  static char bufs[3][BLK], back[BLK];
  int64_t c[3];

  atomic_store(&p->park, 1);
  for (int i = 0; i < 3; i++) {
    memset(bufs[i], 'a' + i, BLK);
    c[i] = nbd_aio_pwrite(h, bufs[i], BLK, (uint64_t)i * BLK, NBD_NULL_COMPLETION,
                          i == 2 ? LIBNBD_CMD_FLAG_FUA : 0);
    assert_true(c[i] > 0);
  }
  while (1) {                     /* until all three are parked, serving the socket meanwhile */
    pthread_mutex_lock(&p->mu);
    unsigned n = p->nparked;
    pthread_mutex_unlock(&p->mu);
    if (n == 3)
      break;
    assert_true(nbd_poll(h, 10) >= 0);
  }
  probe_wait_parked(p, 3);
  assert_true(nbd_poll(h, 0) >= 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(nbd_aio_command_completed(h, (uint64_t)c[i]), 0);
  probe_release(p);
  for (int i = 0; i < 3; i++)
    assert_int_equal(wait_cmd(h, c[i]), 1);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(nbd_pread(h, back, BLK, (uint64_t)i * BLK, 0), 0);
    assert_memory_equal(back, bufs[i], BLK);
  }
  assert_int_equal(atomic_load(&p->fua_writes), 1);
  nbd_close(h);
}

/* ---- block status ---- */

struct map {
  uint64_t off[64], len[64];
  uint32_t flags[64];
  int n;
  uint64_t at;
};

static int map_cb(void *opaque, const char *ctx, uint64_t offset, uint32_t *entries,
                  size_t nr, int *error)
{
  struct map *m = opaque;
  uint64_t at = offset;
  (void)ctx;
  (void)error;
  for (size_t i = 0; i + 1 < nr && m->n < 64; i += 2) {
    m->off[m->n] = at;
    m->len[m->n] = entries[i];
    m->flags[m->n++] = entries[i + 1];
    at += entries[i];
  }
  return 0;
}

static void test_base_allocation(void **st)
{
  struct fixture *f = *st;
  struct nbd_handle *h = client(f, "base:allocation");
  struct map m = { 0 };
  static char buf[2 * BLK];

  assert_int_equal(nbd_can_meta_context(h, "base:allocation"), 1);
  memset(buf, 1, sizeof buf);
  assert_int_equal(nbd_pwrite(h, buf, sizeof buf, 1 << 20, 0), 0);
  assert_int_equal(nbd_block_status(h, DISK, 0,
                                    (nbd_extent_callback){ .callback = map_cb, .user_data = &m },
                                    0), 0);
  assert_int_equal(m.n, 3);
  assert_true(m.off[1] == 1 << 20 && m.len[1] == 2 * BLK && m.flags[1] == 0);
  assert_int_equal(m.flags[0], LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO);
  assert_int_equal(m.flags[2], LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO);
  assert_true(m.off[2] + m.len[2] == DISK);
  /* REQ_ONE: a single extent */
  memset(&m, 0, sizeof m);
  assert_int_equal(nbd_block_status(h, DISK, 0,
                                    (nbd_extent_callback){ .callback = map_cb, .user_data = &m },
                                    LIBNBD_CMD_FLAG_REQ_ONE), 0);
  assert_int_equal(m.n, 1);
  nbd_close(h);
}

/* A provider whose context "test:odd" calls every odd MiB changed. */
static int odd_resolve(void *opaque, const char *name)
{
  (void)opaque;
  return strcmp(name, "test:odd") == 0 ? 0 : -ENOENT;
}

static int odd_extents(void *opaque, const char *name, uint64_t off, uint64_t len,
                       struct svm_meta_extent **out, size_t *n)
{
  (void)opaque;
  (void)name;
  *out = calloc(8, sizeof **out);
  *n = 0;
  for (uint64_t mb = 1; mb < 8; mb += 2) {
    uint64_t s = mb << 20, e = s + (1 << 20);
    if (e <= off || s >= off + len)
      continue;
    (*out)[(*n)++] = (struct svm_meta_extent){ s, e - s };
  }
  return 0;
}

static void test_provider(void **st)
{
  struct fixture *f = *st;
  struct svm_meta_provider p = { .prefix = "test:", .resolve = odd_resolve,
                                 .extents = odd_extents };
  struct nbd_handle *h;
  struct map m = { 0 };

  assert_int_equal(svm_export_add_meta_provider(f->e, &p), 0);
  h = nbd_create();
  assert_int_equal(nbd_add_meta_context(h, "test:odd"), 0);
  assert_int_equal(nbd_add_meta_context(h, "test:nope"), 0);
  assert_int_equal(nbd_connect_uri(h, f->uri), 0);
  assert_int_equal(nbd_can_meta_context(h, "test:odd"), 1);
  assert_int_equal(nbd_can_meta_context(h, "test:nope"), 0);
  assert_int_equal(nbd_can_meta_context(h, "base:allocation"), 0);
  assert_int_equal(nbd_block_status(h, 3 << 20, 512 * 1024,
                                    (nbd_extent_callback){ .callback = map_cb, .user_data = &m },
                                    0), 0);
  /* [0.5M, 1M) clean, [1M, 2M) dirty, [2M, 3M) clean, [3M, 3.5M) dirty */
  assert_int_equal(m.n, 4);
  assert_true(m.off[0] == 512 * 1024 && m.len[0] == 512 * 1024 && m.flags[0] == 0);
  assert_true(m.off[1] == 1 << 20 && m.len[1] == 1 << 20 && m.flags[1] == 1);
  assert_true(m.flags[2] == 0 && m.flags[3] == 1);
  assert_true(m.off[3] + m.len[3] == (3 << 20) + 512 * 1024);
  nbd_close(h);
}

/* ---- pause, flush, swap ---- */

static void test_pause(void **st)
{
  struct fixture *f = *st;
  struct nbd_handle *h = client(f, NULL);
  struct svm_export_stats s0, s1;
  static char buf[BLK];
  uint64_t ns = 0;
  int64_t c;

  assert_int_equal(svm_export_pause(f->e, 0), -EINVAL);     /* no deadline: refused */
  assert_int_equal(svm_export_pause(f->e, 10ull * SEC), 0);
  svm_export_get_stats(f->e, &s0);
  c = nbd_aio_pwrite(h, buf, BLK, 0, NBD_NULL_COMPLETION, 0);
  assert_true(c > 0);
  assert_true(nbd_poll(h, 0) >= 0);
  /* Paused: the request waits; the client is still connected. */
  assert_int_equal(svm_export_pause(f->e, 10ull * SEC), 0);      /* nested */
  assert_int_equal(svm_export_resume(f->e, NULL), 0);
  assert_int_equal(nbd_aio_command_completed(h, (uint64_t)c), 0);
  svm_export_get_stats(f->e, &s1);
  assert_true(s1.requests == s0.requests);
  assert_int_equal(atomic_load(&f->probe.writes), 0);
  assert_int_equal(svm_export_resume(f->e, &ns), 0);
  assert_true(ns > 0);
  assert_int_equal(wait_cmd(h, c), 1);
  assert_int_equal(atomic_load(&f->probe.writes), 1);
  assert_int_equal(svm_export_resume(f->e, NULL), -EINVAL);            /* not paused */
  nbd_close(h);
}

/* A request parked in a layer keeps the drain from finishing: the pause gives up at its
 * deadline with -ETIMEDOUT, and the export goes on serving as if it had not been asked. */
static void test_pause_deadline(void **st)
{
  struct fixture *f = *st;
  struct probe *p = &f->probe;
  struct nbd_handle *h = client(f, NULL);
  static char buf[BLK], back[BLK];
  uint64_t ns;
  int64_t c;

  memset(buf, 0x77, sizeof buf);
  atomic_store(&p->park, 1);
  c = nbd_aio_pwrite(h, buf, BLK, 5 * BLK, NBD_NULL_COMPLETION, 0);
  assert_true(c > 0);
  while (1) {
    pthread_mutex_lock(&p->mu);
    unsigned n = p->nparked;
    pthread_mutex_unlock(&p->mu);
    if (n == 1)
      break;
    assert_true(nbd_poll(h, 10) >= 0);
  }
  atomic_store(&p->park, 0);      /* later writes go through */
  assert_int_equal(svm_export_pause(f->e, 50ull * 1000 * 1000), -ETIMEDOUT);
  assert_non_null(strstr(svm_last_error(), "still in flight"));
  assert_int_equal(svm_export_resume(f->e, &ns), -EINVAL);     /* it is not paused */
  /* still serving: a read and a write on the same connection complete */
  assert_int_equal(nbd_pread(h, back, BLK, 0, 0), 0);
  assert_int_equal(nbd_pwrite(h, buf, BLK, 6 * BLK, 0), 0);
  assert_int_equal(nbd_aio_command_completed(h, (uint64_t)c), 0);
  probe_release(p);
  assert_int_equal(wait_cmd(h, c), 1);
  assert_int_equal(nbd_pread(h, back, BLK, 5 * BLK, 0), 0);
  assert_memory_equal(back, buf, BLK);
  /* and with nothing parked a pause drains at once */
  assert_int_equal(svm_export_pause(f->e, 10ull * SEC), 0);
  assert_int_equal(svm_export_resume(f->e, NULL), 0);
  nbd_close(h);
}

struct flusher {
  struct svm_export *e;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done;
  int rc;
};

static void *flusher_main(void *arg)
{
  struct flusher *fl = arg;
  int rc = svm_export_flush(fl->e);
  pthread_mutex_lock(&fl->mu);
  fl->rc = rc;
  fl->done = true;
  pthread_cond_signal(&fl->cv);
  pthread_mutex_unlock(&fl->mu);
  return NULL;
}

/* svm_export_flush works while the caller holds the export paused (a move pauses, flushes the
 * destination, swaps, resumes): it must return without a resume. */
static void test_flush_while_paused(void **st)
{
  struct fixture *f = *st;
  struct flusher fl = { .e = f->e, .mu = PTHREAD_MUTEX_INITIALIZER,
                        .cv = PTHREAD_COND_INITIALIZER };
  struct timespec dl;
  pthread_t t;
  int r = 0;

  assert_int_equal(svm_export_flush(f->e), 0);
  assert_int_equal(svm_export_pause(f->e, 10ull * SEC), 0);
  assert_int_equal(pthread_create(&t, NULL, flusher_main, &fl), 0);
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += 10;
  pthread_mutex_lock(&fl.mu);
  while (!fl.done && r != ETIMEDOUT)
    r = pthread_cond_timedwait(&fl.cv, &fl.mu, &dl);
  pthread_mutex_unlock(&fl.mu);
  assert_int_equal(svm_export_resume(f->e, NULL), 0);   /* lets a stuck flusher finish */
  assert_int_equal(pthread_join(t, NULL), 0);
  if (r == ETIMEDOUT)
    fail_msg("svm_export_flush did not return while the export was paused");
  assert_int_equal(fl.rc, 0);
}

/* The swap under a writing client: tests/unit/test-export-model.c (a shadow model, H5). */

/* Swap a whole two-layer stack (raw + probe) under a connected client: later requests go
 * through the new probe to the new file, the old stack sees nothing more. */
static void test_swap_stack(void **st)
{
  struct fixture *f = *st;
  struct nbd_handle *h = client(f, NULL);
  struct probe p2;
  char path2[160], small[160];
  struct svm_layer *top2, *bad, *old = NULL;
  static char buf[BLK], back[BLK];
  uint64_t ns = 0;

  probe_init(&p2);
  snprintf(path2, sizeof path2, "%s/disk2.raw", f->dir);
  snprintf(small, sizeof small, "%s/small.raw", f->dir);
  write_file(path2, DISK, 0x11);
  write_file(small, DISK / 2, -1);
  memset(buf, 0x22, sizeof buf);
  assert_int_equal(nbd_pwrite(h, buf, BLK, 0, 0), 0);
  assert_int_equal(atomic_load(&f->probe.writes), 1);

  /* a stack of the wrong size is refused, and the export keeps serving the old one */
  bad = probe_stack(small, &p2);
  assert_true(svm_export_swap(f->e, bad, &old, NULL) < 0);
  assert_null(old);
  svm_layer_free(bad);

  top2 = probe_stack(path2, &p2);
  assert_int_equal(svm_export_pause(f->e, 10ull * SEC), 0);
  assert_int_equal(svm_export_flush(f->e), 0);
  assert_int_equal(svm_export_swap(f->e, top2, &old, NULL), 0);
  assert_int_equal(svm_export_resume(f->e, &ns), 0);
  assert_true(ns > 0);
  assert_non_null(old);
  assert_ptr_equal(old->priv, &f->probe);
  svm_layer_free(old);            /* the whole old stack, top-down */

  assert_int_equal(nbd_pread(h, back, BLK, 0, 0), 0);
  assert_int_equal(back[0], 0x11);                      /* the new file's content */
  assert_int_equal(nbd_pwrite(h, buf, BLK, BLK, LIBNBD_CMD_FLAG_FUA), 0);
  assert_int_equal(nbd_trim(h, BLK, 2 * BLK, 0), 0);     /* count, offset */
  assert_int_equal(atomic_load(&p2.writes), 1);
  assert_int_equal(atomic_load(&p2.fua_writes), 1);
  assert_int_equal(atomic_load(&p2.trims), 1);
  assert_int_equal(atomic_load(&f->probe.writes), 1);   /* the old stack saw nothing more */
  read_file(path2, BLK, back, BLK);
  assert_memory_equal(back, buf, BLK);
  read_file(f->path, BLK, back, BLK);
  assert_int_equal(back[0], 0);
  nbd_close(h);
  /* the export owns top2 now: freed by teardown, before the probe it points at */
  svm_export_free(f->e);
  f->e = NULL;
  probe_fini(&p2);
}

/* ---- the real change-tracking layer ---- */

struct track_fixture {
  struct fixture *f;
  char ctk[160];
  struct cbt *t;
};

static int setup_track(void **st)
{
  struct track_fixture *tf = calloc(1, sizeof *tf);
  struct svm_layer *raw, *top;

  tf->f = fixture_new();
  snprintf(tf->ctk, sizeof tf->ctk, "%s/disk.ctk", tf->f->dir);
  assert_int_equal(cbt_open(tf->ctk, "test-disk", DISK, 64 * 1024, &tf->t), 0);
  assert_int_equal(svm_layer_open_raw(tf->f->path, false, &raw), 0);
  assert_int_equal(svm_layer_open_track(tf->t, raw, &top), 0);
  fixture_export(tf->f, top);
  *st = tf;
  return 0;
}

static int teardown_track(void **st)
{
  struct track_fixture *tf = *st;
  void *f = tf->f;
  svm_export_free(tf->f->e);      /* the stack first: the layer does not own the tracker */
  tf->f->e = NULL;
  cbt_close(tf->t);
  free(tf);
  return teardown(&f);
}

/* Is every byte of [off, off+len) inside the query's extents? */
static bool covered(const struct cbt_extent *e, size_t n, uint64_t off, uint64_t len)
{
  for (size_t i = 0; i < n; i++)
    if (e[i].offset <= off && off + len <= e[i].offset + e[i].length)
      return true;
  return false;
}

/* ---- exports share the process-wide threads ---- */

/* A second export beside the fixture's: both run on the same pool. A pause of one does not
 * hold the other's clients; freeing one while its client is connected drops that client only,
 * and the other export goes on serving. */
static void test_shared_pool(void **st)
{
  struct fixture *f = *st;
  struct svm_export_opts o = { .name = "vm2/disk0" };
  struct svm_layer *raw2 = NULL;
  struct svm_export *e2 = NULL;
  struct nbd_handle *h1, *h2;
  char path2[160], sock2[160], uri2[320], buf[BLK];

  snprintf(path2, sizeof path2, "%s/disk2.raw", f->dir);
  snprintf(sock2, sizeof sock2, "%s/nbd2.sock", f->dir);
  snprintf(uri2, sizeof uri2, "nbd+unix:///vm2/disk0?socket=%s", sock2);
  write_file(path2, DISK, 0x42);
  assert_int_equal(svm_layer_open_raw(path2, false, &raw2), 0);
  assert_int_equal(svm_export_new(&o, raw2, &e2), 0);
  assert_int_equal(svm_export_listen_unix(e2, sock2), 0);

  h1 = client(f, NULL);
  h2 = nbd_create();
  assert_non_null(h2);
  if (nbd_connect_uri(h2, uri2) < 0)
    fail_msg("connect %s: %s", uri2, nbd_get_error());

  /* the first export paused: the second one's client is served all the same */
  assert_int_equal(svm_export_pause(f->e, 10ull * SEC), 0);
  assert_int_equal(nbd_pread(h2, buf, sizeof buf, 0, 0), 0);
  assert_int_equal(buf[0], 0x42);
  assert_int_equal(svm_export_resume(f->e, NULL), 0);

  memset(buf, 0x17, sizeof buf);
  assert_int_equal(nbd_pwrite(h1, buf, sizeof buf, 0, 0), 0);

  /* the second export goes while its client is connected */
  svm_export_free(e2);
  assert_true(nbd_pread(h2, buf, sizeof buf, 0, 0) < 0);
  memset(buf, 0, sizeof buf);
  assert_int_equal(nbd_pread(h1, buf, sizeof buf, 0, 0), 0);
  assert_int_equal(buf[0], 0x17);
  nbd_close(h2);
  nbd_close(h1);
}

static void test_track(void **st)
{
  struct track_fixture *tf = *st;
  struct nbd_handle *h = client(tf->f, NULL);
  static char bufs[64][BLK];
  struct cbt_extent *ext = NULL;
  struct cbt_info info;
  int64_t c[64];
  char id[CBT_CHANGEID_MAX];
  size_t n = 0;

  /* 64 first marks at once, in 64 blocks of 64 KiB: they wait on the mark threads together */
  for (int i = 0; i < 64; i++) {
    memset(bufs[i], i + 1, BLK);
    c[i] = nbd_aio_pwrite(h, bufs[i], BLK, (uint64_t)i * 64 * 1024 + 512, NBD_NULL_COMPLETION,
                          i % 8 == 0 ? LIBNBD_CMD_FLAG_FUA : 0);
    assert_true(c[i] > 0);
  }
  for (int i = 0; i < 64; i++)
    assert_int_equal(wait_cmd(h, c[i]), 1);
  /* acknowledged, so marked: visible through the tracker, and on the fast path now */
  assert_int_equal(cbt_query(tf->t, "*", 0, 0, &ext, &n), 0);
  for (int i = 0; i < 64; i++) {
    if (!covered(ext, n, (uint64_t)i * 64 * 1024 + 512, BLK))
      fail_msg("write %d not reported by cbt_query", i);
    assert_int_equal(cbt_mark_try(tf->t, (uint64_t)i * 64 * 1024, 64 * 1024), 1);
  }
  free(ext);
  assert_int_equal(cbt_mark_try(tf->t, 6 << 20, BLK), 0);     /* never written */
  /* the data went down too */
  static char back[BLK];
  assert_int_equal(nbd_pread(h, back, BLK, 7 * 64 * 1024 + 512, 0), 0);
  assert_memory_equal(back, bufs[7], BLK);

  /* a new epoch: a rewrite (first mark again), a zero and a trim are changes */
  assert_int_equal(cbt_changeid(tf->t, id, sizeof id), 0);
  assert_int_equal(nbd_pwrite(h, bufs[0], BLK, 0, 0), 0);
  assert_int_equal(nbd_pwrite(h, bufs[0], BLK, BLK, 0), 0);   /* same block: fast path */
  assert_int_equal(nbd_zero(h, 128 * 1024, 5 << 20, 0), 0);   /* count, offset */
  assert_int_equal(nbd_trim(h, 64 * 1024, 6 << 20, 0), 0);
  assert_int_equal(cbt_query(tf->t, id, 0, 0, &ext, &n), 0);
  assert_int_equal(n, 3);
  assert_true(ext[0].offset == 0 && ext[0].length == 64 * 1024);
  assert_true(ext[1].offset == 5 << 20 && ext[1].length == 128 * 1024);
  assert_true(ext[2].offset == 6 << 20 && ext[2].length == 64 * 1024);
  free(ext);
  assert_int_equal(cbt_get_info(tf->t, &info), 0);
  assert_true(info.blocks_marked >= 64 + 3);
  /* reads and block status pass through */
  assert_int_equal(nbd_pread(h, back, BLK, 5 << 20, 0), 0);
  assert_int_equal(back[0], 0);
  nbd_close(h);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_data_path, setup, teardown),
    cmocka_unit_test_setup_teardown(test_cross_thread_completion, setup, teardown),
    cmocka_unit_test_setup_teardown(test_base_allocation, setup, teardown),
    cmocka_unit_test_setup_teardown(test_provider, setup, teardown),
    cmocka_unit_test_setup_teardown(test_pause, setup, teardown),
    cmocka_unit_test_setup_teardown(test_pause_deadline, setup, teardown),
    cmocka_unit_test_setup_teardown(test_flush_while_paused, setup, teardown),
    cmocka_unit_test_setup_teardown(test_swap_stack, setup, teardown),
    cmocka_unit_test_setup_teardown(test_shared_pool, setup, teardown),
    cmocka_unit_test_setup_teardown(test_track, setup_track, teardown_track),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
