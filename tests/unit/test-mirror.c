/* The mirror layer and its bulk copy, one behaviour at a time, on temporary raw files: the
 * copy itself (holes, a destination that does or does not read as zeros), what goes where
 * before and after a range is copied (FUA and FLUSH on both sides), provisioning of zeros and
 * trims, and every way the destination can fail (ENOSPC, EIO, a hang past the timeout, a
 * cancel) without a guest request failing. The racing model is test-mirror-model.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <svmotion/error.h>

#include "svm/mirror/mirror.h"
#include "test-mirror-common.h"

enum { SIZE = 8 << 20, CHUNK = 256 << 10 };

struct fixture {
  char *src_path, *dst_path;
  struct svm_layer *top, *dst;
  struct fault *f;
  struct svm_mirror *m;
  struct svm_io *io;
};

static void fill(char *b, size_t len, unsigned seed)
{
  for (size_t i = 0; i < len; i++)
    b[i] = (char)(((i * 31) ^ seed) % 251 + 1);
}

/* src: data at [1, 3) MiB and [5 MiB, 5 MiB + 12 KiB), holes elsewhere. */
static void make(struct fixture *x, const struct svm_mirror_opts *o, bool dst_garbage)
{
  struct svm_layer *src;
  char *b = malloc(2 << 20);

  x->src_path = tmp_file(SIZE);
  x->dst_path = tmp_file(SIZE);
  fill(b, 2 << 20, 7);
  file_pwrite(x->src_path, b, 2 << 20, 1 << 20);
  file_pwrite(x->src_path, b, 12 << 10, 5 << 20);
  if (dst_garbage)
    for (uint64_t off = 0; off < SIZE; off += 2 << 20)
      file_pwrite(x->dst_path, b, 2 << 20, off);
  free(b);
  assert_int_equal(svm_layer_open_raw(x->src_path, false, &src), 0);
  x->dst = fault_layer(x->dst_path, &x->f);
  assert_int_equal(svm_mirror_new(src, x->dst, o, &x->top, &x->m), 0);
  assert_int_equal(svm_io_new(SVM_IO_AUTO, 64, &x->io), 0);
}

static void unmake(struct fixture *x)
{
  svm_io_free(x->io);
  svm_layer_free(x->top);
  svm_layer_free(x->dst);
  unlink(x->src_path);
  unlink(x->dst_path);
  free(x->src_path);
  free(x->dst_path);
}

static void assert_same(struct fixture *x)
{
  char *a = file_read_all(x->src_path, SIZE), *b = file_read_all(x->dst_path, SIZE);
  for (uint64_t i = 0; i < SIZE; i++)
    if (a[i] != b[i])
      fail_msg("src and dst differ at offset %llu", (unsigned long long)i);
  free(a);
  free(b);
}

static uint64_t allocated(const char *path)
{
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  return (uint64_t)st.st_blocks * 512;
}

static void test_copy_fresh(void **state)
{
  struct svm_mirror_opts o = { .request_size = CHUNK, .requests = 4, .dst_reads_zero = true };
  struct svm_mirror_counters c;
  struct fixture x;

  (void)state;
  make(&x, &o, false);
  assert_int_equal(svm_mirror_run(x.m), 0);
  assert_int_equal(svm_mirror_status(x.m), 0);
  assert_same(&x);
  svm_mirror_get_counters(x.m, &c);
  assert_int_equal(c.total, SIZE);
  assert_int_equal(c.done, SIZE);
  assert_int_equal(c.bytes_copied, (2 << 20) + (12 << 10));
  /* holes stayed holes: only the data (and not a block more than a little) */
  assert_true(allocated(x.dst_path) < (3u << 20));
  assert_int_equal(svm_mirror_run(x.m), -EINVAL);      /* once */
  unmake(&x);
}

/* A source that a guest's 4 KiB writes into holes have cut into 4 KiB pieces: 32 data
 * extents per chunk, with 8 chunks in flight, ask the source's engine for more reads than it
 * holds (8 per chunk). The copy must read such a chunk whole, not fail with EAGAIN (a loaded
 * bench/migrate.sh move did: "read at offset ...: Resource temporarily unavailable"). */
static void test_fragmented_source(void **state)
{
  struct svm_mirror_opts o = { .request_size = CHUNK, .requests = 8, .dst_reads_zero = true };
  struct fixture x;
  char b[4096];

  (void)state;
  make(&x, &o, false);
  fill(b, sizeof b, 3);
  for (uint64_t off = 0; off < SIZE; off += 8192)
    file_pwrite(x.src_path, b, sizeof b, off);
  assert_int_equal(svm_mirror_run(x.m), 0);
  assert_same(&x);
  unmake(&x);
}

/* A destination full of old data: the zeros of the source must be written there. */
static void test_copy_garbage(void **state)
{
  struct svm_mirror_opts o = { .request_size = CHUNK, .requests = 3 };
  struct fixture x;

  (void)state;
  make(&x, &o, true);
  assert_int_equal(svm_mirror_run(x.m), 0);
  assert_same(&x);
  unmake(&x);
}

/* Before its range is copied a write goes to the source only; after, to both, with FUA on
 * both; a flush reaches both. */
static void test_routing(void **state)
{
  struct svm_mirror_opts o = { .request_size = CHUNK, .requests = 2, .dst_reads_zero = true };
  struct svm_mirror_counters c;
  struct fixture x;
  char w[8192], *d;

  (void)state;
  make(&x, &o, false);
  memset(w, 'A', sizeof w);
  assert_int_equal(sync_write(x.top, x.io, w, sizeof w, 7 << 20, 0), (int64_t)sizeof w);
  d = file_read_all(x.dst_path, SIZE);
  assert_int_equal(d[7 << 20], 0);                       /* not copied yet: source only */
  free(d);
  assert_int_equal(atomic_load(&x.f->requests), 0);
  assert_int_equal(sync_flush(x.top, x.io), 0);
  assert_int_equal(atomic_load(&x.f->flushes), 1);

  assert_int_equal(svm_mirror_run(x.m), 0);
  assert_same(&x);                                       /* the copier carried it */
  assert_int_equal(atomic_load(&x.f->flushes), 2);      /* and made it durable */

  memset(w, 'B', sizeof w);
  assert_int_equal(sync_write(x.top, x.io, w, sizeof w, 4096, SVM_LAYER_FUA),
                   (int64_t)sizeof w);
  assert_int_equal(atomic_load(&x.f->fuas), 1);
  assert_int_equal(sync_zero(x.top, x.io, 1 << 20, 64 << 10, SVM_LAYER_FAST), 0);
  assert_int_equal(atomic_load(&x.f->fast_zeros), 0);   /* never fast on dst */
  assert_int_equal(sync_trim(x.top, x.io, 2 << 20, 64 << 10), 0);
  assert_int_equal(atomic_load(&x.f->trims), 1);
  assert_int_equal(sync_flush(x.top, x.io), 0);
  assert_int_equal(atomic_load(&x.f->flushes), 3);
  assert_same(&x);
  svm_mirror_get_counters(x.m, &c);
  assert_int_equal(c.bytes_mirrored, sizeof w + (128 << 10));
  unmake(&x);
}

/* A thick destination keeps zeroed and trimmed ranges allocated. */
static void test_thick(void **state)
{
  struct svm_mirror_opts o = { .request_size = CHUNK, .requests = 2, .zero_allocates = true };
  struct fixture x;

  (void)state;
  make(&x, &o, true);
  assert_int_equal(svm_mirror_run(x.m), 0);
  assert_true(atomic_load(&x.f->zeros_no_hole) > 0);    /* the copier's zero runs */
  int before = atomic_load(&x.f->zeros_no_hole);
  assert_int_equal(sync_trim(x.top, x.io, 1 << 20, 64 << 10), 0);
  assert_int_equal(atomic_load(&x.f->trims), 0);        /* said as a zero keeping blocks */
  assert_int_equal(atomic_load(&x.f->zeros_no_hole), before + 1);
  assert_int_equal(sync_zero(x.top, x.io, 3 << 20, 64 << 10, 0), 0);
  assert_int_equal(atomic_load(&x.f->zeros_no_hole), before + 2);
  assert_same(&x);
  unmake(&x);
}

/* The destination fails from its n-th request on: run() says so, naming the destination and
 * the fix; guest writes before and after complete on the source. */
static void fail_case(int err, int at, const char *word)
{
  struct svm_mirror_opts o = { .request_size = 64 << 10, .requests = 4, .dst_reads_zero = true };
  struct fixture x;
  char w[4096], msg[512], *s;

  make(&x, &o, false);
  x.f->fail_at = at;
  x.f->fail_errno = err;
  assert_int_equal(svm_mirror_run(x.m), -err);
  assert_non_null(strstr(svm_last_error(), x.dst_path));
  assert_non_null(strstr(svm_last_error(), word));
  assert_int_equal(svm_mirror_status(x.m), -err);
  assert_int_equal(svm_mirror_status_msg(x.m, msg, sizeof msg), -err);
  assert_string_equal(msg, svm_last_error());
  memset(w, 'C', sizeof w);
  int before = atomic_load(&x.f->requests);
  assert_int_equal(sync_write(x.top, x.io, w, sizeof w, 1 << 20, SVM_LAYER_FUA),
                   (int64_t)sizeof w);
  assert_int_equal(sync_flush(x.top, x.io), 0);
  assert_int_equal(atomic_load(&x.f->requests), before);   /* dropped: dst sees nothing */
  s = file_read_all(x.src_path, SIZE);
  assert_memory_equal(s + (1 << 20), w, sizeof w);
  free(s);
  unmake(&x);
}

static void test_enospc(void **state)
{
  (void)state;
  fail_case(ENOSPC, 5, "full");
}

static void test_eio(void **state)
{
  (void)state;
  fail_case(EIO, 1, "Input/output error");
}

/* A mirrored guest write whose destination fails still completes on the source. */
static void test_guest_write_dst_fails(void **state)
{
  struct svm_mirror_opts o = { .request_size = CHUNK, .requests = 2, .dst_reads_zero = true };
  struct fixture x;
  char w[4096];

  (void)state;
  make(&x, &o, false);
  assert_int_equal(svm_mirror_run(x.m), 0);
  x.f->fail_at = atomic_load(&x.f->requests) + 1;
  x.f->fail_errno = EIO;
  memset(w, 'D', sizeof w);
  assert_int_equal(sync_write(x.top, x.io, w, sizeof w, 0, 0), (int64_t)sizeof w);
  assert_int_equal(svm_mirror_status(x.m), -EIO);
  unmake(&x);
}

/* The destination stops answering: past the timeout it is dropped, the guest's write
 * completes, run() returns -ETIMEDOUT; the late completions touch only the mirror's memory. */
static void test_hang(void **state)
{
  struct svm_mirror_opts o = { .request_size = CHUNK, .requests = 4, .dst_reads_zero = true,
                               .dst_timeout_ns = 100 * 1000 * 1000 };
  struct fixture x;
  char w[4096];

  (void)state;
  make(&x, &o, false);
  x.f->hang_at = 2;
  assert_int_equal(svm_mirror_run(x.m), -ETIMEDOUT);
  assert_non_null(strstr(svm_last_error(), "has not completed"));
  assert_non_null(strstr(svm_last_error(), x.dst_path));
  memset(w, 'E', sizeof w);
  assert_int_equal(sync_write(x.top, x.io, w, sizeof w, 0, 0), (int64_t)sizeof w);
  assert_true(fault_release(x.dst, -EIO) > 0);          /* it comes back, too late */
  unmake(&x);
}

/* A guest write mirrored to a hung destination completes after the timeout. */
static void test_hang_guest(void **state)
{
  struct svm_mirror_opts o = { .request_size = CHUNK, .requests = 4, .dst_reads_zero = true,
                               .dst_timeout_ns = 100 * 1000 * 1000 };
  struct fixture x;
  char w[4096];

  (void)state;
  make(&x, &o, false);
  assert_int_equal(svm_mirror_run(x.m), 0);
  x.f->hang_at = atomic_load(&x.f->requests) + 1;
  memset(w, 'F', sizeof w);
  assert_int_equal(sync_write(x.top, x.io, w, sizeof w, 0, SVM_LAYER_FUA), (int64_t)sizeof w);
  assert_int_equal(svm_mirror_status(x.m), -ETIMEDOUT);
  svm_layer_free(x.top);                                 /* the mirror goes first ... */
  x.top = NULL;
  assert_int_equal(fault_release(x.dst, 0), 1);          /* ... its late completion after */
  svm_io_free(x.io);
  svm_layer_free(x.dst);
  unlink(x.src_path);
  unlink(x.dst_path);
  free(x.src_path);
  free(x.dst_path);
}

/* A fast zero the source cannot do fails for the guest and changes nothing, on either side. */
static void test_fast_zero(void **state)
{
  struct svm_mirror_opts o = { .request_size = CHUNK, .requests = 2, .dst_reads_zero = true };
  struct svm_layer *src, *top;
  struct svm_mirror *m;
  struct fault *fs;
  struct fixture x;

  (void)state;
  make(&x, &o, false);
  svm_layer_free(x.top);                                 /* again, with a source that ... */
  src = fault_layer(x.src_path, &fs);
  fs->no_fast_zero = true;                               /* ... cannot zero fast */
  assert_int_equal(svm_mirror_new(src, x.dst, &o, &top, &m), 0);
  assert_int_equal(svm_mirror_run(m), 0);
  int before = atomic_load(&x.f->requests);
  assert_int_equal(sync_zero(top, x.io, 1 << 20, 64 << 10, SVM_LAYER_FAST), -ENOTSUP);
  assert_int_equal(atomic_load(&x.f->requests), before); /* dst untouched */
  assert_int_equal(sync_zero(top, x.io, 1 << 20, 64 << 10, 0), 0);
  assert_int_equal(atomic_load(&x.f->requests), before + 1);
  assert_int_equal(svm_mirror_status(m), 0);
  x.top = top;
  x.m = m;
  assert_same(&x);
  unmake(&x);
}

/* An engine with room for one request: the mirror's second side waits for the engine's next
 * turn instead of failing the guest or dropping the destination. */
static void test_engine_full(void **state)
{
  struct svm_mirror_opts o = { .request_size = CHUNK, .requests = 2, .dst_reads_zero = true };
  struct fixture x;
  struct svm_io *small;
  char w[4096];

  (void)state;
  make(&x, &o, false);
  assert_int_equal(svm_mirror_run(x.m), 0);
  assert_int_equal(svm_io_new(SVM_IO_AUTO, 1, &small), 0);
  memset(w, 'G', sizeof w);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(sync_write(x.top, small, w, sizeof w, (uint64_t)i << 20, SVM_LAYER_FUA),
                     (int64_t)sizeof w);
    assert_int_equal(sync_flush(x.top, small), 0);
  }
  assert_int_equal(svm_mirror_status(x.m), 0);
  assert_int_equal(atomic_load(&x.f->fuas), 4);
  assert_same(&x);
  svm_io_free(small);
  unmake(&x);
}

static void test_cancel(void **state)
{
  struct svm_mirror_opts o = { .request_size = CHUNK };
  struct fixture x;

  (void)state;
  make(&x, &o, false);
  svm_mirror_cancel(x.m);
  assert_int_equal(svm_mirror_run(x.m), -ECANCELED);
  assert_int_equal(svm_mirror_status(x.m), -ECANCELED);
  unmake(&x);
}

static void test_bad_sizes(void **state)
{
  char *a = tmp_file(SIZE), *b = tmp_file(SIZE / 2);
  struct svm_layer *la, *lb, *top;
  struct svm_mirror *m;

  (void)state;
  assert_int_equal(svm_layer_open_raw(a, false, &la), 0);
  assert_int_equal(svm_layer_open_raw(b, false, &lb), 0);
  assert_int_equal(svm_mirror_new(la, lb, NULL, &top, &m), -EINVAL);
  assert_null(top);
  assert_non_null(strstr(svm_last_error(), "sizes differ"));
  svm_layer_free(la);
  svm_layer_free(lb);
  unlink(a);
  unlink(b);
  free(a);
  free(b);
}

static void cancel_mirror(void *arg)
{
  svm_mirror_cancel(arg);
}

/* A write that waited for budget is issued from its post, finds the engine full and, while it
 * is down there, the destination is dropped: the guest's write still completes, once, and
 * nothing is left behind for an engine freed right after (ASan's leak check is the judge). */
static void test_drop_during_retry(void **state)
{
  struct svm_mirror_opts o = { .request_size = CHUNK, .requests = 2, .dst_reads_zero = true,
                               .buffer_budget = 4096 };
  struct done_flag a = { 0 }, b = { 0 };
  struct fixture x;
  char wa[4096], wb[4096];
  int n;

  (void)state;
  make(&x, &o, false);
  assert_int_equal(svm_mirror_run(x.m), 0);
  n = atomic_load(&x.f->requests);
  x.f->hang_at = n + 1;                 /* a's destination write waits here ... */
  x.f->eagain_at = n + 2;               /* ... b's, granted its budget by a's end, meets a full
                                           engine while the move is cancelled */
  x.f->on_eagain = cancel_mirror;
  x.f->eagain_arg = x.m;
  memset(wa, 'A', sizeof wa);
  memset(wb, 'B', sizeof wb);
  assert_int_equal(svm_layer_write(x.top, x.io, wa, sizeof wa, 0, 0, done_cb, &a), 0);
  assert_int_equal(svm_layer_write(x.top, x.io, wb, sizeof wb, 1 << 20, 0, done_cb, &b), 0);
  x.f->hang_at = 0;
  assert_int_equal(fault_release(x.dst, 0), 1);
  assert_int_equal(wait_done(x.io, &a), (int64_t)sizeof wa);
  assert_int_equal(wait_done(x.io, &b), (int64_t)sizeof wb);
  assert_int_equal(svm_mirror_status(x.m), -ECANCELED);
  unmake(&x);
}

/* A write granted its budget on another thread, its issue post not yet run on its own engine,
 * when the destination is dropped: that post answers it, once, and the drop does not answer
 * it too (an answer ahead of the post would let its owner finish and free the engine with the
 * post, and the request, never run). */
static void test_drop_while_granted(void **state)
{
  struct svm_mirror_opts o = { .request_size = CHUNK, .requests = 2, .dst_reads_zero = true,
                               .buffer_budget = 4096 };
  struct done_flag a = { 0 }, b = { 0 };
  struct fixture x;
  struct svm_io *io_b;
  char wa[4096], wb[4096];

  (void)state;
  make(&x, &o, false);
  assert_int_equal(svm_mirror_run(x.m), 0);
  assert_int_equal(svm_io_new(SVM_IO_AUTO, 8, &io_b), 0);
  x.f->hang_at = atomic_load(&x.f->requests) + 1;       /* a's destination write waits */
  memset(wa, 'A', sizeof wa);
  memset(wb, 'B', sizeof wb);
  assert_int_equal(svm_layer_write(x.top, x.io, wa, sizeof wa, 0, 0, done_cb, &a), 0);
  assert_int_equal(svm_layer_write(x.top, io_b, wb, sizeof wb, 1 << 20, 0, done_cb, &b), 0);
  x.f->hang_at = 0;
  assert_int_equal(fault_release(x.dst, 0), 1);          /* a done: b granted, posted to io_b */
  svm_mirror_cancel(x.m);                                /* ... and dropped before it runs */
  assert_int_equal(wait_done(x.io, &a), (int64_t)sizeof wa);
  assert_int_equal(wait_done(io_b, &b), (int64_t)sizeof wb);
  assert_int_equal(svm_io_reap(io_b, 0), 0);             /* nothing more for b's engine */
  assert_int_equal(svm_mirror_status(x.m), -ECANCELED);
  svm_io_free(io_b);
  unmake(&x);
}

/* While the guest writes, the copier keeps to its small window (one chunk of
 * busy_request_size); quiet, it uses its whole window. guest_quiet_ns is long here, so that
 * the test does not depend on how fast the machine is. */
static void test_pace(void **state)
{
  struct svm_mirror_opts o = { .request_size = CHUNK, .requests = 8, .dst_reads_zero = true,
                               .busy_requests = 1, .busy_request_size = 16384,
                               .guest_quiet_ns = 3600ull * 1000000000u };
  struct fixture x;
  char w[4096];

  (void)state;
  make(&x, &o, false);                  /* quiet: the whole window */
  assert_int_equal(svm_mirror_run(x.m), 0);
  assert_true(atomic_load(&x.f->write_len_max) > 16384);
  assert_same(&x);
  unmake(&x);

  make(&x, &o, false);
  memset(w, 'P', sizeof w);             /* the guest writes (where nothing is copied yet) */
  assert_int_equal(sync_write(x.top, x.io, w, sizeof w, 6 << 20, 0), (int64_t)sizeof w);
  assert_int_equal(svm_mirror_run(x.m), 0);
  assert_true(atomic_load(&x.f->write_len_max) <= 16384);
  assert_int_equal(atomic_load(&x.f->writes_in_flight_max), 1);
  assert_same(&x);
  unmake(&x);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_copy_fresh),
    cmocka_unit_test(test_copy_garbage),
    cmocka_unit_test(test_fragmented_source),
    cmocka_unit_test(test_routing),
    cmocka_unit_test(test_thick),
    cmocka_unit_test(test_enospc),
    cmocka_unit_test(test_eio),
    cmocka_unit_test(test_guest_write_dst_fails),
    cmocka_unit_test(test_hang),
    cmocka_unit_test(test_hang_guest),
    cmocka_unit_test(test_fast_zero),
    cmocka_unit_test(test_engine_full),
    cmocka_unit_test(test_cancel),
    cmocka_unit_test(test_pace),
    cmocka_unit_test(test_drop_during_retry),
    cmocka_unit_test(test_drop_while_granted),
    cmocka_unit_test(test_bad_sizes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
