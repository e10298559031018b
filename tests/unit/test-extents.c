/* Extent lists (model-checked) and extent maps of real sparse files. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "svm/disk/extents.h"

enum { KB = 1024, MB = 1024 * 1024 };
#define HOLE (SVM_EXTENT_HOLE | SVM_EXTENT_ZERO)

static char path[] = "/tmp/svm-test-extents-XXXXXX";
static int fd = -1;

static int setup(void **state)
{
  (void)state;
  fd = mkstemp(path);
  return fd < 0 ? -1 : 0;
}

static int teardown(void **state)
{
  (void)state;
  close(fd);
  return unlink(path);
}

static void test_list_merge(void **state)
{
  struct svm_extent_list l;
  (void)state;

  svm_extent_list_init(&l);
  assert_int_equal(svm_extent_list_add(&l, 0, 4096, 0), 0);
  assert_int_equal(svm_extent_list_add(&l, 4096, 4096, 0), 0);       /* merges */
  assert_int_equal(l.n, 1);
  assert_int_equal(l.v[0].len, 8192);
  assert_int_equal(svm_extent_list_add(&l, 8192, 100, HOLE), 0);      /* new flags */
  assert_int_equal(svm_extent_list_add(&l, 9000, 100, HOLE), 0);      /* gap: no merge */
  assert_int_equal(l.n, 3);
  assert_int_equal(svm_extent_list_add(&l, 9050, 10, 0), -EINVAL);   /* overlap */
  assert_int_equal(svm_extent_list_add(&l, 0, 10, 0), -EINVAL);      /* backwards */
  assert_int_equal(svm_extent_list_add(&l, 20000, 0, 0), 0);         /* empty: ignored */
  assert_int_equal(l.n, 3);
  assert_int_equal(svm_extent_list_add(&l, UINT64_MAX - 5, 10, 0), -EINVAL);
  assert_int_equal(svm_extent_list_bytes(&l, SVM_EXTENT_HOLE, 0), 8192);
  assert_int_equal(svm_extent_list_bytes(&l, SVM_EXTENT_HOLE, SVM_EXTENT_HOLE), 200);
  assert_int_equal(svm_extent_list_bytes(&l, 0, 0), 8392);
  /* grows past its first allocation */
  for (uint64_t i = 0; i < 1000; i++)
    assert_int_equal(svm_extent_list_add(&l, 100000 + i * 10, 5, (uint32_t)(i % 2)), 0);
  assert_int_equal(l.n, 1003);
  svm_extent_list_free(&l);
  assert_int_equal(l.n, 0);
  assert_null(l.v);
}

static void put(uint64_t off, uint64_t len, int byte)
{
  char *b = malloc(len);
  assert_non_null(b);
  memset(b, byte, len);
  assert_int_equal(pwrite(fd, b, len, (off_t)off), (ssize_t)len);
  free(b);
}

static void expect(const struct svm_extent_list *l, size_t i, uint64_t off, uint64_t len,
                   uint32_t flags)
{
  assert_true(i < l->n);
  assert_int_equal(l->v[i].off, off);
  assert_int_equal(l->v[i].len, len);
  assert_int_equal(l->v[i].flags, flags);
}

static void test_scan_sparse_file(void **state)
{
  struct svm_extent_list l;
  struct svm_extent e;
  (void)state;

  assert_int_equal(ftruncate(fd, 0), 0);
  assert_int_equal(ftruncate(fd, 16 * MB), 0);
  put(1 * MB, 1 * MB, 'a');
  put(4 * MB, 64 * KB, 'b');
  put(15 * MB, 1 * MB, 'c');      /* data up to the end of the file */
  svm_extent_list_init(&l);
  assert_int_equal(svm_extents_scan(fd, 0, 16 * MB, &l), 0);
  assert_int_equal(l.n, 6);
  expect(&l, 0, 0, 1 * MB, HOLE);
  expect(&l, 1, 1 * MB, 1 * MB, 0);
  expect(&l, 2, 2 * MB, 2 * MB, HOLE);
  expect(&l, 3, 4 * MB, 64 * KB, 0);
  expect(&l, 4, 4 * MB + 64 * KB, 11 * MB - 64 * KB, HOLE);
  expect(&l, 5, 15 * MB, 1 * MB, 0);
  assert_int_equal(svm_extent_list_bytes(&l, SVM_EXTENT_HOLE, 0), 2 * MB + 64 * KB);
  svm_extent_list_free(&l);

  /* a window that starts and ends inside extents is clipped to it */
  assert_int_equal(svm_extents_scan(fd, 1 * MB + 4096, 4 * MB + 4096, &l), 0);
  assert_int_equal(l.n, 3);
  expect(&l, 0, 1 * MB + 4096, 1 * MB - 4096, 0);
  expect(&l, 1, 2 * MB, 2 * MB, HOLE);
  expect(&l, 2, 4 * MB, 4096, 0);
  svm_extent_list_free(&l);

  /* past the end of the file: a hole */
  assert_int_equal(svm_extent_next(fd, 16 * MB, 20 * MB, &e), 0);
  assert_int_equal(e.len, 4 * MB);
  assert_int_equal(e.flags, HOLE);
  assert_int_equal(svm_extent_next(fd, 5, 5, &e), -EINVAL);
  assert_int_equal(svm_extent_next(-1, 0, 5, &e), -EBADF);
}

/* 1 TiB of holes with one 1 MiB extent is two lookups, not a walk over the size. */
static void test_huge_sparse(void **state)
{
  struct svm_extent_list l;
  uint64_t tib = 1024ULL * 1024 * MB;
  (void)state;

  assert_int_equal(ftruncate(fd, 0), 0);
  assert_int_equal(ftruncate(fd, (off_t)tib), 0);
  put(tib / 2, 1 * MB, 'd');
  svm_extent_list_init(&l);
  assert_int_equal(svm_extents_scan(fd, 0, tib, &l), 0);
  assert_int_equal(l.n, 3);
  expect(&l, 1, tib / 2, 1 * MB, 0);
  svm_extent_list_free(&l);
  assert_int_equal(ftruncate(fd, 0), 0);
}

static void test_all_hole_and_all_data(void **state)
{
  struct svm_extent_list l;
  (void)state;

  assert_int_equal(ftruncate(fd, 0), 0);
  assert_int_equal(ftruncate(fd, 3 * MB), 0);
  svm_extent_list_init(&l);
  assert_int_equal(svm_extents_scan(fd, 0, 3 * MB, &l), 0);
  assert_int_equal(l.n, 1);
  expect(&l, 0, 0, 3 * MB, HOLE);
  svm_extent_list_free(&l);
  put(0, 3 * MB, 'e');
  assert_int_equal(svm_extents_scan(fd, 0, 3 * MB, &l), 0);
  assert_int_equal(l.n, 1);
  expect(&l, 0, 0, 3 * MB, 0);
  svm_extent_list_free(&l);
}

static void test_unwritten(void **state)
{
  struct svm_extent_list l;
  int r;
  (void)state;

  assert_int_equal(ftruncate(fd, 0), 0);
  assert_int_equal(fallocate(fd, 0, 0, 4 * MB), 0);
  put(1 * MB, 1 * MB, 'f');       /* buffered: only the sync in the scan makes it written */
  svm_extent_list_init(&l);
  r = svm_extents_unwritten(fd, &l);
  if (r == -EOPNOTSUPP)
    skip();
  assert_int_equal(r, 0);
  assert_int_equal(l.n, 2);
  expect(&l, 0, 0, 1 * MB, SVM_EXTENT_ZERO);
  expect(&l, 1, 2 * MB, 2 * MB, SVM_EXTENT_ZERO);
  svm_extent_list_free(&l);
  /* ext4 and xfs report unwritten extents as holes to SEEK_DATA (they read as zeros), so a
   * thick source costs only its written data; other file systems may call them data */
  assert_int_equal(svm_extents_scan(fd, 0, 4 * MB, &l), 0);
  uint64_t data = svm_extent_list_bytes(&l, SVM_EXTENT_HOLE, 0);
  assert_true(data == 1 * MB || data == 4 * MB);
  svm_extent_list_free(&l);
  put(0, 4 * MB, 'g');
  assert_int_equal(svm_extents_unwritten(fd, &l), 0);
  assert_int_equal(l.n, 0);
  svm_extent_list_free(&l);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_list_merge),
    cmocka_unit_test(test_scan_sparse_file),
    cmocka_unit_test(test_huge_sparse),
    cmocka_unit_test(test_all_hole_and_all_data),
    cmocka_unit_test(test_unwritten),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
