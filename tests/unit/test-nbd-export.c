/* The export in process, driven by real libnbd clients: data path, write hook, block status
 * for base:allocation and a provider's context, pause/drain, and a swap of the layer stack
 * under a client that keeps writing. */
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
#include <unistd.h>

#include <cmocka.h>
#include <libnbd.h>

#include "svm/nbd/export.h"

enum { DISK = 8 << 20, BLK = 4096 };

struct fixture {
  char dir[64];
  char path[128];
  char sock[128];
  char uri[256];
  struct svm_export *e;
  atomic_uint hook_calls;
  atomic_ullong hook_bytes;
  atomic_uint hook_kinds;
  atomic_int hook_fail;
  atomic_int hook_slow;         /* sleep this many us in every hook call */
  atomic_ullong hook_fail_at;   /* fail the hook for writes at this offset (+1; 0 = none) */
  atomic_int hook_now, hook_max;   /* hooks running at once */
};

static int hook(void *opaque, uint64_t off, uint64_t len, unsigned kind)
{
  struct fixture *f = opaque;
  if (f->hook_fail)
    return -EIO;
  if (atomic_load(&f->hook_slow)) {
    int now = atomic_fetch_add(&f->hook_now, 1) + 1, max = atomic_load(&f->hook_max);
    while (now > max && !atomic_compare_exchange_weak(&f->hook_max, &max, now))
      ;
    usleep((useconds_t)atomic_load(&f->hook_slow));
    atomic_fetch_sub(&f->hook_now, 1);
  }
  if (atomic_load(&f->hook_fail_at) == off + 1)
    return -EIO;
  atomic_fetch_add(&f->hook_calls, 1);
  atomic_fetch_add(&f->hook_bytes, len);
  atomic_fetch_or(&f->hook_kinds, kind);
  (void)off;
  return 0;
}

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

static int setup(void **st)
{
  struct fixture *f = calloc(1, sizeof *f);
  struct svm_export_opts o = { .name = "vm1/disk0", .threads = 2, .queue_depth = 16 };
  struct svm_layer *l;

  strcpy(f->dir, "/tmp/svm-nbd-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->path, sizeof f->path, "%s/disk.raw", f->dir);
  snprintf(f->sock, sizeof f->sock, "%s/nbd.sock", f->dir);
  snprintf(f->uri, sizeof f->uri, "nbd+unix:///vm1/disk0?socket=%s", f->sock);
  write_file(f->path, DISK, -1);
  assert_int_equal(svm_layer_open_raw(f->path, false, &l), 0);
  assert_int_equal(svm_export_new(&o, l, &f->e), 0);
  assert_int_equal(svm_export_set_write_hook(f->e, hook, f), 0);
  assert_int_equal(svm_export_listen_unix(f->e, f->sock), 0);
  *st = f;
  return 0;
}

static int teardown(void **st)
{
  struct fixture *f = *st;
  char cmd[256];
  svm_export_free(f->e);
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

static void test_data_path(void **st)
{
  struct fixture *f = *st;
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
  assert_int_equal(atomic_load(&f->hook_calls), 2);
  assert_true(atomic_load(&f->hook_bytes) == sizeof buf + 100);

  /* zero (punch, then NO_HOLE, then FAST), trim */
  assert_int_equal(nbd_zero(h, 3 * BLK, BLK, 0), 0);
  assert_int_equal(nbd_zero(h, 4 * BLK, BLK, LIBNBD_CMD_FLAG_NO_HOLE | LIBNBD_CMD_FLAG_FUA), 0);
  assert_int_equal(nbd_pread(h, back, 8 * BLK, 0, 0), 0);
  for (int i = BLK; i < 5 * BLK; i++)
    assert_int_equal(back[i], 0);
  assert_int_equal(back[5 * BLK], 0x5a);
  /* a fast zero on ext4/xfs/tmpfs is a fallocate: it works; elsewhere ENOTSUP is right */
  if (nbd_zero(h, BLK, 0, LIBNBD_CMD_FLAG_FAST_ZERO) < 0)
    if (nbd_get_errno() != ENOTSUP)
      fail_msg("fast zero: %s", nbd_get_error());
  assert_int_equal(nbd_trim(h, 16 * BLK, 3 * BLK, LIBNBD_CMD_FLAG_FUA), 0);
  assert_int_equal(atomic_load(&f->hook_kinds), SVM_WRITE_DATA | SVM_WRITE_ZEROES |
                                                SVM_WRITE_TRIM);

  /* errors: past the end, and a failing hook (EIO, the data is not written) */
  assert_int_equal(nbd_set_strict_mode(h, 0), 0);
  assert_int_equal(nbd_pread(h, back, BLK, DISK - 1, 0), -1);
  assert_int_equal(nbd_get_errno(), EINVAL);
  assert_int_equal(nbd_pwrite(h, buf, BLK, DISK, 0), -1);
  assert_int_equal(nbd_get_errno(), ENOSPC);
  f->hook_fail = 1;   /* read by the I/O threads only while a request runs: set while idle */
  assert_int_equal(nbd_pwrite(h, buf, BLK, 100 * BLK, 0), -1);
  assert_int_equal(nbd_get_errno(), EIO);
  f->hook_fail = 0;
  assert_int_equal(nbd_pread(h, back, BLK, 100 * BLK, 0), 0);
  assert_int_equal(back[0], 0);
  /* still usable after the errors */
  assert_int_equal(nbd_pread(h, back, BLK, 3 * BLK + BLK * 16, 0), 0);
  assert_int_equal(nbd_shutdown(h, 0), 0);
  nbd_close(h);
}

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
  assert_int_equal(m.flags[0], 3);
  assert_int_equal(m.flags[2], 3);
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

/* ---- pause and swap under a writing client ---- */

struct writer {
  struct fixture *f;
  atomic_int stop;
  atomic_uint rounds;
  int errors;
  unsigned nblocks;
  uint32_t last[DISK / BLK];   /* the round each block was last written in */
};

static void fill(char *buf, unsigned blk, uint32_t round)
{
  for (int i = 0; i < BLK; i += 8) {
    uint32_t v[2] = { blk, round };
    memcpy(buf + i, v, 8);
  }
}

/* Writes every block in turn, 32 requests in flight, until told to stop. */
static void *writer_main(void *arg)
{
  struct writer *w = arg;
  struct nbd_handle *h = client(w->f, NULL);
  static char bufs[32][BLK];
  int64_t cookies[32] = { 0 };
  unsigned blk = 0, round = 1;

  while (!atomic_load(&w->stop)) {
    for (int i = 0; i < 32; i++) {
      fill(bufs[i], blk, round);
      cookies[i] = nbd_aio_pwrite(h, bufs[i], BLK, (uint64_t)blk * BLK,
                                  NBD_NULL_COMPLETION, 0);
      if (cookies[i] < 0)
        w->errors++;
      w->last[blk] = round;
      if (++blk == w->nblocks) {
        blk = 0;
        round++;
        atomic_store(&w->rounds, round);
      }
    }
    for (int i = 0; i < 32; i++) {
      while (cookies[i] > 0 && nbd_aio_command_completed(h, (uint64_t)cookies[i]) == 0)
        if (nbd_poll(h, -1) < 0)
          break;
      if (cookies[i] > 0 && nbd_aio_command_completed(h, (uint64_t)cookies[i]) < 0)
        w->errors++;
    }
  }
  if (nbd_flush(h, 0) < 0)
    w->errors++;
  nbd_close(h);
  return NULL;
}

static void test_pause(void **st)
{
  struct fixture *f = *st;
  struct nbd_handle *h = client(f, NULL);
  static char buf[BLK];
  uint64_t ns = 0;
  int64_t c;

  assert_int_equal(svm_export_pause(f->e), 0);
  c = nbd_aio_pwrite(h, buf, BLK, 0, NBD_NULL_COMPLETION, 0);
  assert_true(c > 0);
  /* Paused: the request waits; the client is still connected. */
  for (int i = 0; i < 20; i++) {
    assert_true(nbd_poll(h, 5) >= 0);
    assert_int_equal(nbd_aio_command_completed(h, (uint64_t)c), 0);
  }
  assert_int_equal(svm_export_pause(f->e), 0);      /* nested */
  assert_int_equal(svm_export_resume(f->e, NULL), 0);
  assert_int_equal(nbd_aio_command_completed(h, (uint64_t)c), 0);
  assert_int_equal(svm_export_resume(f->e, &ns), 0);
  assert_true(ns > 0);
  while (nbd_aio_peek_command_completed(h) == 0)
    assert_true(nbd_poll(h, -1) >= 0);
  assert_int_equal(nbd_aio_command_completed(h, (uint64_t)c), 1);
  assert_int_equal(svm_export_resume(f->e, NULL), -EINVAL);            /* not paused */
  nbd_close(h);
}

struct flusher {
  struct svm_export *e;
  atomic_int done;
  int rc;
};

static void *flusher_main(void *arg)
{
  struct flusher *fl = arg;
  fl->rc = svm_export_flush(fl->e);
  atomic_store(&fl->done, 1);
  return NULL;
}

/* svm_export_flush: works, and waits out a pause (a swap may be closing the fd under it). */
static void test_flush(void **st)
{
  struct fixture *f = *st;
  struct flusher fl = { .e = f->e };
  pthread_t t;

  assert_int_equal(svm_export_flush(f->e), 0);
  assert_int_equal(svm_export_pause(f->e), 0);
  assert_int_equal(pthread_create(&t, NULL, flusher_main, &fl), 0);
  usleep(20000);
  assert_int_equal(atomic_load(&fl.done), 0);
  assert_int_equal(svm_export_resume(f->e, NULL), 0);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(atomic_load(&fl.done), 1);
  assert_int_equal(fl.rc, 0);
}

static void copy(const char *from, const char *to)
{
  char cmd[512];
  snprintf(cmd, sizeof cmd, "cp --sparse=always '%s' '%s'", from, to);
  assert_int_equal(system(cmd), 0);
}

static void test_swap_under_writer(void **st)
{
  struct fixture *f = *st;
  struct writer *w = calloc(1, sizeof *w);
  char copy_path[160];
  struct svm_layer *nl, *old = NULL, *bad;
  uint64_t ns = 0;
  pthread_t t;
  char *buf = malloc(BLK), *want = malloc(BLK);
  int fd;

  w->f = f;
  w->nblocks = 512;                 /* 2 MiB, rewritten over and over */
  snprintf(copy_path, sizeof copy_path, "%s/disk-copy.raw", f->dir);
  assert_int_equal(pthread_create(&t, NULL, writer_main, w), 0);
  while (atomic_load(&w->rounds) < 3)
    usleep(1000);

  /* what a datastore move does at switchover: drain, copy the rest, switch, resume */
  assert_int_equal(svm_export_pause(f->e), 0);
  copy(f->path, copy_path);
  assert_int_equal(svm_layer_open_raw(copy_path, false, &nl), 0);
  /* a stack of the wrong size is refused, and the export keeps serving */
  {
    char small[160];
    snprintf(small, sizeof small, "%s/small.raw", f->dir);
    write_file(small, DISK / 2, -1);
    assert_int_equal(svm_layer_open_raw(small, false, &bad), 0);
    assert_true(svm_export_swap(f->e, bad, &old, NULL) < 0);
    assert_null(old);
    svm_layer_free(bad);
  }
  assert_int_equal(svm_export_swap(f->e, nl, &old, &ns), 0);
  assert_int_equal(svm_export_resume(f->e, NULL), 0);
  assert_non_null(old);
  svm_layer_free(old);

  unsigned at_swap = atomic_load(&w->rounds);
  while (atomic_load(&w->rounds) < at_swap + 3)
    usleep(1000);
  atomic_store(&w->stop, 1);
  pthread_join(t, NULL);
  assert_int_equal(w->errors, 0);

  /* the copy holds every block as last written; the old file stopped at the swap */
  fd = open(copy_path, O_RDONLY);
  assert_true(fd >= 0);
  for (unsigned b = 0; b < w->nblocks; b++) {
    assert_int_equal(pread(fd, buf, BLK, (off_t)b * BLK), BLK);
    fill(want, b, w->last[b]);
    if (memcmp(buf, want, BLK) != 0)
      fail_msg("block %u: not the last write (round %u)", b, w->last[b]);
  }
  close(fd);
  free(buf);
  free(want);
  free(w);
}

/* A slow hook (as CBT's first marks are): the I/O threads hand hooks to the hook threads,
 * where many run at once; every write still passes its hook before its data, failures still
 * fail their request, and the data is all there. */
static void test_slow_hook(void **st)
{
  struct fixture *f = *st;
  struct nbd_handle *h = client(f, NULL);
  static char bufs[64][BLK], back[BLK];
  int64_t cookies[64];
  unsigned calls0 = atomic_load(&f->hook_calls);

  atomic_store(&f->hook_slow, 300);
  atomic_store(&f->hook_fail_at, (uint64_t)17 * BLK + 1);
  for (int round = 0; round < 4; round++) {
    for (int i = 0; i < 64; i++) {
      memset(bufs[i], 'a' + round, BLK);
      cookies[i] = nbd_aio_pwrite(h, bufs[i], BLK, (uint64_t)i * BLK, NBD_NULL_COMPLETION, 0);
      assert_true(cookies[i] > 0);
    }
    for (int i = 0; i < 64; i++) {
      int r;
      while ((r = nbd_aio_command_completed(h, (uint64_t)cookies[i])) == 0)
        assert_true(nbd_poll(h, -1) >= 0);
      if (i == 17) {
        assert_int_equal(r, -1);
        assert_int_equal(nbd_get_errno(), EIO);
      } else {
        assert_int_equal(r, 1);
      }
    }
  }
  atomic_store(&f->hook_slow, 0);
  assert_int_equal(atomic_load(&f->hook_calls) - calls0, 4 * 63);
  /* one client, so one I/O thread: hooks ran side by side only on the hook threads */
  assert_true(atomic_load(&f->hook_max) > 1);
  for (int i = 0; i < 64; i++) {
    assert_int_equal(nbd_pread(h, back, BLK, (uint64_t)i * BLK, 0), 0);
    assert_int_equal(back[0], i == 17 ? 0 : 'd');
    assert_int_equal(back[BLK - 1], i == 17 ? 0 : 'd');
  }
  nbd_close(h);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_data_path, setup, teardown),
    cmocka_unit_test_setup_teardown(test_base_allocation, setup, teardown),
    cmocka_unit_test_setup_teardown(test_provider, setup, teardown),
    cmocka_unit_test_setup_teardown(test_pause, setup, teardown),
    cmocka_unit_test_setup_teardown(test_slow_hook, setup, teardown),
    cmocka_unit_test_setup_teardown(test_flush, setup, teardown),
    cmocka_unit_test_setup_teardown(test_swap_under_writer, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
