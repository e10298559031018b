/* Each provisioning on a real file: allocation (st_blocks), FIEMAP unwritten extents, content;
 * and punching zeros in place. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <svmotion/error.h>

#include "svm/disk/extents.h"
#include "svm/disk/provision.h"

enum { MB = 1024 * 1024, SIZE = 8 * MB };

static char dir[] = "/tmp/svm-test-provision-XXXXXX";

static int setup(void **state)
{
  (void)state;
  return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
  char cmd[128];
  (void)state;
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd);
}

static int new_file(const char *name)
{
  char p[256];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  int fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  assert_true(fd >= 0);
  return fd;
}

static uint64_t allocated(int fd)
{
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  return (uint64_t)st.st_blocks * 512;
}

static size_t unwritten_count(int fd, uint64_t *bytes)
{
  struct svm_extent_list l;
  svm_extent_list_init(&l);
  int r = svm_extents_unwritten(fd, &l);
  if (r == -EOPNOTSUPP)
    skip();               /* no FIEMAP here (tmpfs): nothing to check allocation with */
  assert_int_equal(r, 0);
  size_t n = l.n;
  *bytes = svm_extent_list_bytes(&l, 0, 0);
  svm_extent_list_free(&l);
  return n;
}

/* A copy the way the converter does it: 1 MiB of data at 2 MiB, 1 MiB of zeros at 5 MiB that
 * the policy lets us skip, the rest never touched. */
static int provision(const char *name, enum svm_provisioning p, uint64_t *zw)
{
  int fd = new_file(name);
  char *data = malloc(MB);
  assert_non_null(data);
  memset(data, 0x5a, MB);
  assert_int_equal(svm_provision_prepare(fd, name, SIZE, p), 0);
  assert_int_equal(pwrite(fd, data, MB, 2 * MB), MB);
  if (!svm_provision_skip_zero(p)) {
    memset(data, 0, MB);
    assert_int_equal(pwrite(fd, data, MB, 5 * MB), MB);
  }
  *zw = 0;
  assert_int_equal(svm_provision_finish(fd, name, SIZE, p, zw), 0);
  assert_int_equal(fsync(fd), 0);
  free(data);
  return fd;
}

static void check_content(int fd)
{
  char *b = malloc(SIZE);
  assert_non_null(b);
  assert_int_equal(pread(fd, b, SIZE, 0), SIZE);
  for (size_t i = 0; i < SIZE; i++)
    if (b[i] != ((i >= 2 * MB && i < 3 * MB) ? 0x5a : 0))
      fail_msg("byte %zu is %d", i, b[i]);
  free(b);
}

static void test_thin(void **state)
{
  uint64_t zw, ub;
  int fd = provision("thin", SVM_PROVISIONING_THIN, &zw);
  (void)state;

  assert_int_equal(zw, 0);
  assert_true(allocated(fd) >= MB);
  assert_true(allocated(fd) <= MB + 64 * 1024);
  assert_int_equal(unwritten_count(fd, &ub), 0);
  check_content(fd);
  close(fd);
}

static void test_thick(void **state)
{
  uint64_t zw, ub;
  int fd = provision("thick", SVM_PROVISIONING_THICK, &zw);
  (void)state;

  assert_int_equal(zw, 0);
  assert_true(allocated(fd) >= SIZE);
  assert_true(unwritten_count(fd, &ub) >= 1);    /* lazy-zeroed: unwritten except the data */
  assert_int_equal(ub, SIZE - MB);
  check_content(fd);
  close(fd);
}

static void test_eager(void **state)
{
  uint64_t zw, ub;
  struct svm_extent_list l;
  int fd = provision("eager", SVM_PROVISIONING_EAGER, &zw);
  (void)state;

  assert_int_equal(zw, SIZE - MB);              /* every byte not written as data */
  assert_true(allocated(fd) >= SIZE);
  assert_int_equal(unwritten_count(fd, &ub), 0);
  assert_int_equal(ub, 0);
  svm_extent_list_init(&l);
  assert_int_equal(svm_extents_scan(fd, 0, SIZE, &l), 0);
  assert_int_equal(svm_extent_list_bytes(&l, SVM_EXTENT_HOLE, SVM_EXTENT_HOLE), 0);
  svm_extent_list_free(&l);
  check_content(fd);
  close(fd);
}

/* Eager on a thin file that has holes (no fallocate first) fills the holes too. */
static void test_eager_fills_holes(void **state)
{
  int fd = new_file("holes");
  uint64_t zw = 0, ub;
  (void)state;

  assert_int_equal(ftruncate(fd, SIZE), 0);
  assert_int_equal(pwrite(fd, "x", 1, 3 * MB), 1);
  assert_int_equal(svm_provision_finish(fd, "holes", SIZE, SVM_PROVISIONING_EAGER, &zw), 0);
  assert_true(zw >= SIZE - 4096);
  assert_true(allocated(fd) >= SIZE);
  assert_int_equal(unwritten_count(fd, &ub), 0);
  char c;
  assert_int_equal(pread(fd, &c, 1, 3 * MB), 1);
  assert_int_equal(c, 'x');
  close(fd);
}

static void test_names(void **state)
{
  enum svm_provisioning p;
  (void)state;

  assert_int_equal(svm_provisioning_from_string("thin", &p), 0);
  assert_int_equal(p, SVM_PROVISIONING_THIN);
  assert_int_equal(svm_provisioning_from_string("thick", &p), 0);
  assert_int_equal(p, SVM_PROVISIONING_THICK);
  assert_int_equal(svm_provisioning_from_string("eager-zeroed-thick", &p), 0);
  assert_int_equal(p, SVM_PROVISIONING_EAGER);
  assert_int_equal(svm_provisioning_from_string("fat", &p), -EINVAL);
  assert_non_null(strstr(svm_last_error(), "eager-zeroed-thick"));
  for (int i = 0; i < 3; i++) {
    assert_int_equal(svm_provisioning_from_string(svm_provisioning_to_string(i), &p), 0);
    assert_int_equal((int)p, i);
  }
  assert_int_equal(svm_provision_needed(SVM_PROVISIONING_THIN, 100, 10), 10);
  assert_int_equal(svm_provision_needed(SVM_PROVISIONING_THICK, 100, 10), 100);
  assert_int_equal(svm_provision_needed(SVM_PROVISIONING_EAGER, 100, 10), 100);
}

static void test_punch_zeroes(void **state)
{
  int fd = new_file("punch");
  char *b = malloc(SIZE), *back = malloc(SIZE);
  uint64_t scanned = 0, punched = 0;
  (void)state;

  assert_non_null(b);
  assert_non_null(back);
  memset(b, 0, SIZE);
  memset(b + 1 * MB, 'p', MB);               /* data */
  b[4 * MB + 4096 + 17] = 1;                 /* one byte of data in a zero area */
  b[SIZE - 1] = 2;                           /* and the last byte */
  assert_int_equal(pwrite(fd, b, SIZE, 0), SIZE);
  assert_int_equal(fsync(fd), 0);
  assert_true(allocated(fd) >= SIZE);
  assert_int_equal(svm_punch_zeroes(fd, "punch", 4096, &scanned, &punched), 0);
  assert_int_equal(scanned, SIZE);
  assert_int_equal(punched, SIZE - MB - 2 * 4096);
  assert_true(allocated(fd) <= MB + 2 * 4096 + 64 * 1024);
  assert_int_equal(pread(fd, back, SIZE, 0), SIZE);
  assert_memory_equal(b, back, SIZE);
  /* again: nothing left to punch */
  scanned = punched = 0;
  assert_int_equal(svm_punch_zeroes(fd, "punch", 4096, &scanned, &punched), 0);
  assert_int_equal(punched, 0);
  assert_int_equal(svm_punch_zeroes(fd, "punch", 1000, &scanned, &punched), -EINVAL);
  free(b);
  free(back);
  close(fd);
}

static void test_prepare_enospc(void **state)
{
  int fd = new_file("huge");
  (void)state;
  /* 1 EiB cannot be allocated anywhere: the message names the file and the way out */
  int r = svm_provision_prepare(fd, "huge", 1ULL << 60, SVM_PROVISIONING_THICK);
  assert_true(r < 0);
  assert_non_null(strstr(svm_last_error(), "huge"));
  close(fd);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_thin),
    cmocka_unit_test(test_thick),
    cmocka_unit_test(test_eager),
    cmocka_unit_test(test_eager_fills_holes),
    cmocka_unit_test(test_names),
    cmocka_unit_test(test_punch_zeroes),
    cmocka_unit_test(test_prepare_enospc),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
