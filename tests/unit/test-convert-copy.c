/* The copy engine (svm/copy/copy.h) between two ends defined here, in memory, so that the
 * test decides what a real end leaves to chance: the order in which requests complete (last
 * queued first, the opposite of disk order), when an end is full (-EAGAIN), what a read
 * returns. Model-based: the destination must end up equal to the source, the writes must have
 * been issued in disk order, and the counters must match the source's blocks as counted here.
 * This is also the proof that an end is only a table of operations. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <cmocka.h>

#include <svmotion/error.h>

#include "svm/copy/copy.h"

enum { KB = 1024, MB = 1 << 20, SIZE = 16 * MB, MAXQ = 1024, BLOCK = 4096 };

struct pending {
  svm_io_cb cb;
  void *opaque;
  int64_t res;
};

struct mem_end {
  struct svm_copy_end e;
  unsigned char *data;
  struct svm_extent_list map;       /* what extents() reports */
  struct svm_extent_list holes;     /* sparse_read: what it says reads as zeros */
  uint64_t sparse_blocks;           /* blocks sparse_read left unfilled */
  struct pending q[MAXQ];
  unsigned nq;
  unsigned cap;                     /* requests in flight before -EAGAIN (0: no limit) */
  int efd;
  uint64_t fail_read_at;            /* a read at this offset completes with -EIO (0: none) */
  int fail_read_errno;              /* ... or with this errno */
  /* what was asked, in issue order */
  uint64_t last_write_end;
  bool out_of_order;
  unsigned writes, zeros, eagains;
  uint64_t max_len;
};

static struct mem_end *M(struct svm_copy_end *e)
{
  return (struct mem_end *)e;
}

static int queue(struct mem_end *m, svm_io_cb cb, void *opaque, int64_t res)
{
  if (m->cap > 0 && m->nq >= m->cap) {
    m->eagains++;
    return -EAGAIN;
  }
  assert_true(m->nq < MAXQ);
  m->q[m->nq++] = (struct pending){ cb, opaque, res };
  return 0;
}

static int mem_extents(struct svm_copy_end *e, uint64_t size, struct svm_extent_list *l)
{
  struct mem_end *m = M(e);

  assert_int_equal(size, e->size);
  for (size_t i = 0; i < m->map.n; i++)
    assert_int_equal(svm_extent_list_add(l, m->map.v[i].off, m->map.v[i].len,
                                         m->map.v[i].flags), 0);
  return 0;
}

static int mem_read(struct svm_copy_end *e, void *buf, size_t len, uint64_t off, svm_io_cb cb,
                    void *opaque)
{
  struct mem_end *m = M(e);

  assert_true(off + len <= e->size);
  if (len > m->max_len)
    m->max_len = len;
  memcpy(buf, m->data + off, len);
  if (m->fail_read_at != 0 && off == m->fail_read_at)
    return queue(m, cb, opaque, m->fail_read_errno ? -m->fail_read_errno : -EIO);
  return queue(m, cb, opaque, (int64_t)len);
}

static void note_write(struct mem_end *m, uint64_t off, uint64_t len)
{
  if (off < m->last_write_end)
    m->out_of_order = true;
  m->last_write_end = off + len;
}

static int mem_write(struct svm_copy_end *e, const void *buf, size_t len, uint64_t off,
                     svm_io_cb cb, void *opaque)
{
  struct mem_end *m = M(e);
  int r = queue(m, cb, opaque, (int64_t)len);

  if (r == 0) {
    assert_true(off + len <= e->size);
    memcpy(m->data + off, buf, len);
    note_write(m, off, len);
    m->writes++;
  }
  return r;
}

static int mem_zero(struct svm_copy_end *e, uint64_t off, uint64_t len, bool allocate,
                    svm_io_cb cb, void *opaque)
{
  struct mem_end *m = M(e);
  int r = queue(m, cb, opaque, 0);

  (void)allocate;
  if (r == 0) {
    memset(m->data + off, 0, len);
    note_write(m, off, len);
    m->zeros++;
  }
  return r;
}

/* Complete the request queued last: the newest first, one at a time, so reads come back in
 * exactly the reverse of disk order. */
static int complete_newest(struct mem_end *m)
{
  struct pending p;

  if (m->nq == 0)
    return 0;
  p = m->q[--m->nq];
  p.cb(p.opaque, p.res);
  return 0;
}

static int mem_poll_prepare(struct svm_copy_end *e, struct pollfd *pfd)
{
  struct mem_end *m = M(e);

  if (m->nq == 0)
    return 0;
  assert_int_equal(eventfd_write(m->efd, 1), 0);
  *pfd = (struct pollfd){ .fd = m->efd, .events = POLLIN };
  return 1;
}

static int mem_poll_done(struct svm_copy_end *e, const struct pollfd *pfd)
{
  eventfd_t v;

  if (!(pfd->revents & POLLIN))
    return 0;
  assert_int_equal(eventfd_read(pfd->fd, &v), 0);
  return complete_newest(M(e));
}

static int mem_wait(struct svm_copy_end *e)
{
  return complete_newest(M(e));
}

static void mem_free(struct svm_copy_end *e)
{
  struct mem_end *m = M(e);

  close(m->efd);
  free(m->data);
  svm_extent_list_free(&m->map);
  svm_extent_list_free(&m->holes);
  free(m);
}

static const struct svm_copy_end_ops mem_ops = {
  .kind = "memory", .extents = mem_extents, .read = mem_read, .write = mem_write,
  .zero = mem_zero, .poll_prepare = mem_poll_prepare, .poll_done = mem_poll_done,
  .wait = mem_wait, .free = mem_free,
};
/* The same without a zero operation: the engine must write zeros. */
static const struct svm_copy_end_ops mem_ops_nozero = {
  .kind = "memory", .extents = mem_extents, .read = mem_read, .write = mem_write,
  .zero = NULL, .poll_prepare = mem_poll_prepare, .poll_done = mem_poll_done,
  .wait = mem_wait, .free = mem_free,
};

/* As the layer end with block status (read_sparse): the whole blocks of `holes` are said in
 * zmap and left unfilled, holding 0xEE here, which must never reach the destination. */
static int sparse_read(struct svm_copy_end *e, void *buf, size_t len, uint64_t off,
                       uint64_t *zmap, svm_io_cb cb, void *opaque)
{
  struct mem_end *m = M(e);
  int r = mem_read(e, buf, len, off, cb, opaque);

  for (uint64_t w = 0; w < (len / BLOCK + 63) / 64; w++)
    assert_int_equal(zmap[w], 0);                 /* cleared by the engine */
  for (size_t i = 0; r == 0 && i < m->holes.n; i++) {
    const struct svm_extent *h = &m->holes.v[i];
    for (uint64_t b = off; b + BLOCK <= off + len; b += BLOCK) {
      if (b < h->off || b + BLOCK > h->off + h->len)
        continue;
      memset((char *)buf + (b - off), 0xEE, BLOCK);
      zmap[(b - off) / BLOCK / 64] |= UINT64_C(1) << ((b - off) / BLOCK % 64);
      m->sparse_blocks++;
    }
  }
  return r;
}

static const struct svm_copy_end_ops mem_ops_sparse = {
  .kind = "memory", .extents = mem_extents, .read = mem_read, .read_sparse = sparse_read,
  .write = mem_write, .zero = mem_zero, .poll_prepare = mem_poll_prepare,
  .poll_done = mem_poll_done, .wait = mem_wait, .free = mem_free,
};

static struct mem_end *mem_new(const struct svm_copy_end_ops *ops, const char *name,
                               bool writable, int fill)
{
  struct mem_end *m = calloc(1, sizeof *m);

  assert_non_null(m);
  m->e = (struct svm_copy_end){ .ops = ops, .name = name, .size = SIZE, .writable = writable };
  m->data = malloc(SIZE);
  assert_non_null(m->data);
  memset(m->data, fill, SIZE);
  m->efd = eventfd(0, EFD_NONBLOCK);
  assert_true(m->efd >= 0);
  svm_extent_list_init(&m->map);
  svm_extent_list_init(&m->holes);
  return m;
}

/* The source: data at 1-3 MiB (with a zero 4 KiB block and a zero 64 KiB run inside), an
 * allocated all-zero extent at 6-7 MiB, a hole reported as zero at 7-12 MiB, data at
 * 12 MiB + 4 KiB up to the end (not aligned to the request size). */
static struct mem_end *source(void)
{
  struct mem_end *m = mem_new(&mem_ops, "src", false, 0);

  srand(11);
  for (size_t i = 1 * MB; i < 3 * MB; i++)
    m->data[i] = (unsigned char)(rand() | 1);
  memset(m->data + 2 * MB, 0, BLOCK);
  memset(m->data + 2 * MB + 256 * KB, 0, 64 * KB);
  for (size_t i = 12 * MB + BLOCK; i < SIZE; i++)
    m->data[i] = (unsigned char)(rand() | 1);
  assert_int_equal(svm_extent_list_add(&m->map, 0, 1 * MB, SVM_EXTENT_HOLE | SVM_EXTENT_ZERO), 0);
  assert_int_equal(svm_extent_list_add(&m->map, 1 * MB, 2 * MB, 0), 0);
  assert_int_equal(svm_extent_list_add(&m->map, 3 * MB, 3 * MB, SVM_EXTENT_HOLE | SVM_EXTENT_ZERO), 0);
  assert_int_equal(svm_extent_list_add(&m->map, 6 * MB, 1 * MB, 0), 0);
  assert_int_equal(svm_extent_list_add(&m->map, 7 * MB, 5 * MB + BLOCK, SVM_EXTENT_ZERO), 0);
  assert_int_equal(svm_extent_list_add(&m->map, 12 * MB + BLOCK, 4 * MB - BLOCK, 0), 0);
  return m;
}

/* Bytes of the data extents, split in non-zero and zero 4 KiB blocks; and the zero extents. */
struct expect {
  uint64_t data, nonzero, zero, zero_extents;
};

static struct expect expected(const struct mem_end *src)
{
  static const unsigned char zeros[BLOCK];
  struct expect x = { 0 };

  for (size_t i = 0; i < src->map.n; i++) {
    const struct svm_extent *e = &src->map.v[i];
    if (e->flags & SVM_EXTENT_ZERO) {
      x.zero_extents += e->len;
      continue;
    }
    x.data += e->len;
    for (uint64_t b = e->off; b < e->off + e->len; b += BLOCK) {
      if (memcmp(src->data + b, zeros, BLOCK) == 0)
        x.zero += BLOCK;
      else
        x.nonzero += BLOCK;
    }
  }
  return x;
}

static uint64_t progress_done;

static void on_progress(void *opaque, uint64_t done, uint64_t total)
{
  (void)opaque;
  assert_true(done > progress_done);
  assert_true(done <= total);
  progress_done = done;
}

static int copy(struct mem_end *src, struct mem_end *dst, struct svm_copy_options *o,
                struct svm_copy_counters *n)
{
  struct svm_copy *c;
  int r;

  progress_done = 0;
  o->progress = on_progress;
  assert_int_equal(svm_copy_new(&src->e, &dst->e, o, &c), 0);
  r = svm_copy_run(c, NULL);
  svm_copy_get_counters(c, n);
  svm_copy_free(c);
  return r;
}

static void check_result(struct mem_end *src, struct mem_end *dst,
                         const struct svm_copy_counters *n, bool zeros_said)
{
  struct expect x = expected(src);

  assert_memory_equal(dst->data, src->data, SIZE);
  assert_false(dst->out_of_order);
  assert_int_equal(progress_done, SIZE);
  assert_int_equal(n->bytes_read, x.data);
  assert_int_equal(n->bytes_written, x.nonzero);
  assert_int_equal(n->bytes_skipped_zero, x.zero);
  assert_int_equal(n->bytes_zeroed, zeros_said ? x.zero_extents : 0);
}

/* A fresh destination: zeros are never sent; writes in disk order although every read
 * completes in the reverse order of issue. */
static void test_fresh_destination(void **state)
{
  struct mem_end *src = source(), *dst = mem_new(&mem_ops, "dst", true, 0);
  struct svm_copy_options o = { .dst_reads_zero = true };
  struct svm_copy_counters n;

  (void)state;
  assert_int_equal(copy(src, dst, &o, &n), 0);
  check_result(src, dst, &n, false);
  assert_int_equal(dst->zeros, 0);
  assert_int_equal(src->max_len, SVM_COPY_DEFAULT_REQUEST);
  svm_copy_end_free(&src->e);
  svm_copy_end_free(&dst->e);
}

/* A used destination (stale 0x55 everywhere): every zero must be said, with zero requests or,
 * where the end has none, with writes of zeros; small requests and a destination that takes
 * only 2 requests at a time (-EAGAIN) keep the order too. */
static void used_destination(const struct svm_copy_end_ops *ops)
{
  struct mem_end *src = source(), *dst = mem_new(ops, "dst", true, 0x55);
  struct svm_copy_options o = { .request_size = 64 * KB, .requests = 8 };
  struct svm_copy_counters n;

  dst->cap = 2;
  assert_int_equal(copy(src, dst, &o, &n), 0);
  check_result(src, dst, &n, true);
  assert_true(dst->eagains > 0);
  assert_int_equal(src->max_len, 64 * KB);
  if (ops->zero == NULL)
    assert_int_equal(dst->zeros, 0);
  else
    assert_true(dst->zeros > 0);
  svm_copy_end_free(&src->e);
  svm_copy_end_free(&dst->e);
}

static void test_used_destination(void **state)
{
  (void)state;
  used_destination(&mem_ops);
}

static void test_used_destination_no_zero_op(void **state)
{
  (void)state;
  used_destination(&mem_ops_nozero);
}

/* A source that says which blocks read as zeros instead of filling them (the mirror's layer
 * end): its map is one data extent, as the mirror gives, so every zero is learnt per read. On
 * a fresh destination the said blocks are skipped, on a used one (0x55) they are zeroed, and
 * their unfilled bytes never reach it. The holes of source() are whole blocks; one more, not
 * aligned to the requests, crosses two of them. */
static void sparse(bool fresh)
{
  struct mem_end *src = source(), *dst = mem_new(&mem_ops, "dst", true, fresh ? 0 : 0x55);
  struct svm_copy_options o = { .dst_reads_zero = fresh, .request_size = 64 * KB,
                                .requests = 8 };
  struct svm_copy_counters n;

  src->e.ops = &mem_ops_sparse;
  memset(src->data + 2 * MB + 60 * KB, 0, 16 * KB);
  for (size_t i = 0; i < src->map.n; i++) {
    if (src->map.v[i].off == 3 * MB)          /* in disk order */
      assert_int_equal(svm_extent_list_add(&src->holes, 2 * MB + 60 * KB, 16 * KB, 0), 0);
    if (src->map.v[i].flags & SVM_EXTENT_ZERO)
      assert_int_equal(svm_extent_list_add(&src->holes, src->map.v[i].off, src->map.v[i].len,
                                           0), 0);
  }
  svm_extent_list_free(&src->map);
  svm_extent_list_init(&src->map);
  assert_int_equal(svm_extent_list_add(&src->map, 0, SIZE, 0), 0);
  assert_int_equal(copy(src, dst, &o, &n), 0);
  check_result(src, dst, &n, !fresh);
  assert_int_equal(src->sparse_blocks, (1 + 3 + 5) * MB / BLOCK + 1 + 4);
  if (fresh)
    assert_int_equal(dst->zeros, 0);
  else
    assert_true(dst->zeros > 0);
  svm_copy_end_free(&src->e);
  svm_copy_end_free(&dst->e);
}

static void test_sparse_source(void **state)
{
  (void)state;
  sparse(true);
  sparse(false);
}

/* An end's largest request bounds every read. */
static void test_max_request(void **state)
{
  struct mem_end *src = source(), *dst = mem_new(&mem_ops, "dst", true, 0);
  struct svm_copy_options o = { .dst_reads_zero = true };
  struct svm_copy_counters n;

  (void)state;
  dst->e.max_request = 100 * KB + 1000;    /* rounded down to whole 4 KiB blocks */
  assert_int_equal(copy(src, dst, &o, &n), 0);
  check_result(src, dst, &n, false);
  assert_int_equal(src->max_len, 100 * KB);
  svm_copy_end_free(&src->e);
  svm_copy_end_free(&dst->e);
}

/* A failed read: the first failure is reported with the end and the offset, nothing after it
 * is written. */
static void test_read_error(void **state)
{
  struct mem_end *src = source(), *dst = mem_new(&mem_ops, "dst", true, 0);
  struct svm_copy_options o = { .dst_reads_zero = true };
  struct svm_copy_counters n;

  (void)state;
  src->fail_read_at = 2 * MB;
  assert_int_equal(copy(src, dst, &o, &n), -EIO);
  assert_non_null(strstr(svm_last_error(), "src: read at offset 2097152 failed"));
  assert_true(dst->last_write_end <= 2 * MB);
  svm_copy_end_free(&src->e);
  svm_copy_end_free(&dst->e);
}

/* A read in flight when the server died fails with the connection's errno: the message
 * carries the end's hint for a lost connection (an NBD end's "the NBD server went away?"),
 * and an ordinary I/O error does not. */
static void test_read_lost(void **state)
{
  struct mem_end *src = source(), *dst = mem_new(&mem_ops, "dst", true, 0);
  struct svm_copy_options o = { .dst_reads_zero = true };
  struct svm_copy_counters n;

  (void)state;
  src->e.lost_hint = " (gone?)";
  src->fail_read_at = 2 * MB;
  src->fail_read_errno = ECONNRESET;
  assert_int_equal(copy(src, dst, &o, &n), -ECONNRESET);
  assert_non_null(strstr(svm_last_error(), "src: read at offset 2097152 failed: "));
  assert_non_null(strstr(svm_last_error(), " (gone?)"));
  svm_copy_end_free(&src->e);
  svm_copy_end_free(&dst->e);

  src = source();
  dst = mem_new(&mem_ops, "dst", true, 0);
  src->e.lost_hint = " (gone?)";
  src->fail_read_at = 2 * MB;
  assert_int_equal(copy(src, dst, &o, &n), -EIO);
  assert_null(strstr(svm_last_error(), "(gone?)"));
  svm_copy_end_free(&src->e);
  svm_copy_end_free(&dst->e);
}

static volatile int cancel;

static void cancel_now(void *opaque, uint64_t done, uint64_t total)
{
  (void)opaque;
  (void)done;
  (void)total;
  cancel = 1;
}

static void test_cancel(void **state)
{
  struct mem_end *src = source(), *dst = mem_new(&mem_ops, "dst", true, 0);
  struct svm_copy_options o = { .dst_reads_zero = true, .requests = 1,
                                .progress = cancel_now, .cancel = &cancel };
  struct svm_copy *c;

  (void)state;
  cancel = 0;
  assert_int_equal(svm_copy_new(&src->e, &dst->e, &o, &c), 0);
  assert_int_equal(svm_copy_run(c, NULL), -ECANCELED);
  assert_true(dst->last_write_end < SIZE);
  assert_int_equal(svm_copy_run(c, NULL), -EINVAL);      /* runs once */
  svm_copy_free(c);
  /* a read-only end is no destination */
  assert_int_equal(svm_copy_new(&dst->e, &src->e, NULL, &c), -EINVAL);
  svm_copy_end_free(&src->e);
  svm_copy_end_free(&dst->e);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_fresh_destination),
    cmocka_unit_test(test_used_destination),
    cmocka_unit_test(test_used_destination_no_zero_op),
    cmocka_unit_test(test_sparse_source),
    cmocka_unit_test(test_max_request),
    cmocka_unit_test(test_read_error),
    cmocka_unit_test(test_read_lost),
    cmocka_unit_test(test_cancel),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
