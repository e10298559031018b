/* The converter's library API on real files, on both I/O engines: results and counters,
 * cancellation leaving nothing behind, option checks. (svm-convert's own behaviour, NBD and
 * the error messages are covered by tests/integ/convert-*.sh.) */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <svmotion/convert.h>
#include <svmotion/error.h>

enum { MB = 1 << 20, SIZE = 24 * MB, BLOCK = 4096 };

static char dir[] = "/tmp/svm-test-convert-XXXXXX";
static char src[256];
static unsigned char *image;     /* what src holds */

static void path(char *out, size_t len, const char *name)
{
  snprintf(out, len, "%s/%s", dir, name);
}

static int setup(void **state)
{
  int fd;
  (void)state;
  if (mkdtemp(dir) == NULL)
    return -1;
  path(src, sizeof src, "src.raw");
  image = calloc(1, SIZE);
  fd = open(src, O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (image == NULL || fd < 0 || ftruncate(fd, SIZE) < 0)
    return -1;
  /* data at 1, 5-7 and 20 MiB; allocated zeros at 10 MiB; a 4 KiB data block inside them */
  srand(7);
  for (int m = 0; m < 24; m++) {
    if (m == 1 || (m >= 5 && m <= 7) || m == 20)
      for (int i = 0; i < MB; i++)
        image[(size_t)m * MB + i] = (unsigned char)rand();
  }
  image[10 * MB + 8192 + 3] = 0xee;
  for (int m = 0; m < 24; m++)
    if (m == 1 || (m >= 5 && m <= 7) || m == 20 || m == 10)
      if (pwrite(fd, image + (size_t)m * MB, MB, (off_t)m * MB) != MB)
        return -1;
  close(fd);
  return 0;
}

static int teardown(void **state)
{
  char cmd[128];
  (void)state;
  free(image);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd);
}

static void check_copy(const char *p, uint64_t max_alloc)
{
  unsigned char *b = malloc(SIZE);
  struct stat st;
  int fd = open(p, O_RDONLY);

  assert_true(fd >= 0);
  assert_non_null(b);
  assert_int_equal(fstat(fd, &st), 0);
  assert_int_equal(st.st_size, SIZE);
  assert_int_equal(pread(fd, b, SIZE, 0), SIZE);
  assert_memory_equal(b, image, SIZE);
  if (max_alloc > 0)
    assert_true((uint64_t)st.st_blocks * 512 <= max_alloc);
  close(fd);
  free(b);
}

static int count_entries(void)
{
  DIR *d = opendir(dir);
  struct dirent *e;
  int n = 0;

  assert_non_null(d);
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n;
}

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* What a copy of src must count, worked out here from the file itself and from image, not
 * from the converter: data is what SEEK_DATA finds allocated, split into the 4 KiB blocks that
 * hold a non-zero byte and those that do not. */
struct expect {
  uint64_t data, nonzero, zero;
};

static bool block_is_zero(const unsigned char *p, size_t len)
{
  for (size_t i = 0; i < len; i++)
    if (p[i] != 0)
      return false;
  return true;
}

static struct expect expected(void)
{
  struct expect x = { 0 };
  int fd = open(src, O_RDONLY);
  off_t off = 0, data, hole;

  assert_true(fd >= 0);
  while (off < SIZE && (data = lseek(fd, off, SEEK_DATA)) >= 0) {
    hole = lseek(fd, data, SEEK_HOLE);
    assert_true(hole > data);
    x.data += (uint64_t)(hole - data);
    for (off_t b = data; b < hole; b += BLOCK) {
      size_t len = hole - b < BLOCK ? (size_t)(hole - b) : BLOCK;
      if (block_is_zero(image + b, len))
        x.zero += len;
      else
        x.nonzero += len;
    }
    off = hole;
  }
  close(fd);
  return x;
}

/* A thin copy allocates exactly the non-zero 4 KiB blocks of the source: walk its data
 * extents and the image side by side. */
static void check_thin_allocation(const char *p)
{
  int fd = open(p, O_RDONLY);
  uint64_t allocated = 0;
  off_t off = 0, data, hole;
  struct stat st;

  assert_true(fd >= 0);
  while (off < SIZE && (data = lseek(fd, off, SEEK_DATA)) >= 0) {
    hole = lseek(fd, data, SEEK_HOLE);
    for (off_t b = data; b < hole; b += BLOCK)
      assert_false(block_is_zero(image + b, BLOCK));     /* no zero block allocated */
    allocated += (uint64_t)(hole - data);
    off = hole;
  }
  assert_int_equal(allocated, expected().nonzero);       /* and every data block is */
  assert_int_equal(fstat(fd, &st), 0);
  assert_true((uint64_t)st.st_blocks * 512 <= allocated + 64 * 1024);   /* metadata only */
  close(fd);
}

/* Eager-zeroed thick: no hole anywhere. */
static void check_no_hole(const char *p)
{
  int fd = open(p, O_RDONLY);
  struct stat st;

  assert_true(fd >= 0);
  assert_int_equal(lseek(fd, 0, SEEK_HOLE), SIZE);
  assert_int_equal(fstat(fd, &st), 0);
  assert_true((uint64_t)st.st_blocks * 512 >= SIZE);
  close(fd);
}

/* seconds is the call's own time: positive, and within the wall clock around the call. */
static int timed_convert(const char *dst, const struct svm_convert_options *o,
                         struct svm_convert_stats *st)
{
  double t0 = now();
  int r = svm_convert(src, dst, o, st);
  double wall = now() - t0;

  assert_true(st->seconds > 0);
  assert_true(st->seconds <= wall);
  return r;
}

static void convert_on(const char *engine)
{
  struct svm_convert_options *o = svm_convert_options_new();
  struct svm_convert_stats st;
  struct expect x = expected();
  char dst[256];

  /* the fixture as setup() meant it: 6 MiB allocated, 4 KiB of it non-zero in the zeros */
  assert_int_equal(x.data, 6 * MB);
  assert_int_equal(x.nonzero, 5 * MB + 4096);
  setenv("SVM_IO_ENGINE", engine, 1);
  path(dst, sizeof dst, "thin.raw");
  assert_int_equal(timed_convert(dst, o, &st), 0);
  check_copy(dst, 0);
  check_thin_allocation(dst);
  assert_int_equal(st.size, SIZE);
  assert_int_equal(st.bytes_read, x.data);
  assert_int_equal(st.bytes_written, x.nonzero);
  assert_int_equal(st.bytes_skipped_zero, x.zero);
  assert_int_equal(st.bytes_punched, 0);

  /* exists: refused; with force: replaced */
  assert_int_equal(svm_convert(src, dst, o, &st), -EEXIST);
  assert_non_null(strstr(svm_last_error(), "--force"));
  svm_convert_options_set_force(o, true);
  svm_convert_options_set_provisioning(o, SVM_PROVISIONING_EAGER);
  assert_int_equal(svm_convert_options_set_request_size(o, 64 * 1024), 0);
  assert_int_equal(svm_convert_options_set_requests(o, 3), 0);
  assert_int_equal(timed_convert(dst, o, &st), 0);
  check_copy(dst, 0);
  check_no_hole(dst);
  assert_int_equal(st.bytes_read, x.data);
  assert_int_equal(st.bytes_skipped_zero, x.zero);
  assert_int_equal(st.bytes_written, SIZE);   /* the data, then zeros over all the rest */
  unlink(dst);
  assert_int_equal(count_entries(), 1);
  svm_convert_options_free(o);
  unsetenv("SVM_IO_ENGINE");
}

static void test_convert_uring(void **state)
{
  (void)state;
  convert_on("io_uring");
}

static void test_convert_libaio(void **state)
{
  (void)state;
  convert_on("libaio");
}

static void test_default_options(void **state)
{
  char dst[256];
  (void)state;
  path(dst, sizeof dst, "defaults.raw");
  assert_int_equal(svm_convert(src, dst, NULL, NULL), 0);
  check_copy(dst, 0);
  unlink(dst);
}

static volatile int cancel;
static int progress_calls;

static void cancel_on_progress(void *opaque, uint64_t done, uint64_t total)
{
  (void)opaque;
  assert_true(done <= total);
  progress_calls++;
  cancel = 1;
}

/* A conversion stopped halfway leaves no destination and no temporary file. */
static void test_cancel_leaves_nothing(void **state)
{
  struct svm_convert_options *o = svm_convert_options_new();
  char dst[256];
  (void)state;

  path(dst, sizeof dst, "cancelled.raw");
  cancel = 0;
  svm_convert_options_set_cancel_flag(o, &cancel);
  svm_convert_options_set_progress(o, cancel_on_progress, NULL);
  assert_int_equal(svm_convert_options_set_request_size(o, 64 * 1024), 0);
  assert_int_equal(svm_convert_options_set_requests(o, 1), 0);
  assert_int_equal(svm_convert(src, dst, o, NULL), -ECANCELED);
  assert_true(progress_calls >= 1);
  assert_int_equal(access(dst, F_OK), -1);
  assert_int_equal(count_entries(), 1);     /* only src.raw */
  svm_convert_options_free(o);
}

static void test_options(void **state)
{
  struct svm_convert_options *o = svm_convert_options_new();
  (void)state;

  assert_int_equal(svm_convert_options_set_request_size(o, 1000), -EINVAL);
  assert_int_equal(svm_convert_options_set_request_size(o, 32 * 1024), -EINVAL);
  assert_int_equal(svm_convert_options_set_request_size(o, 64 * MB), -EINVAL);
  assert_int_equal(svm_convert_options_set_requests(o, 0), -EINVAL);
  assert_int_equal(svm_convert_options_set_requests(o, 257), -EINVAL);
  svm_convert_options_free(o);
  assert_true(svm_convert_is_nbd_uri("nbd://host/x"));
  assert_true(svm_convert_is_nbd_uri("nbd+unix:///?socket=/s"));
  assert_true(svm_convert_is_nbd_uri("nbds://host:10809/"));
  assert_false(svm_convert_is_nbd_uri("/tmp/nbd://x"));
  assert_false(svm_convert_is_nbd_uri("disk.raw"));
}

static void test_punch(void **state)
{
  struct svm_convert_stats st;
  char p[256], cmd[600];
  (void)state;

  path(p, sizeof p, "punch.raw");
  snprintf(cmd, sizeof cmd, "cp --sparse=never '%s' '%s'", src, p);
  assert_int_equal(system(cmd), 0);
  assert_int_equal(svm_convert_punch_zeroes(p, NULL, &st), 0);
  assert_int_equal(st.bytes_punched, SIZE - 6 * MB + MB - 4096);
  check_copy(p, 6 * MB + 64 * 1024);
  unlink(p);
  assert_int_equal(svm_convert_punch_zeroes(dir, NULL, &st), -EISDIR);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_convert_uring),
    cmocka_unit_test(test_convert_libaio),
    cmocka_unit_test(test_default_options),
    cmocka_unit_test(test_cancel_leaves_nothing),
    cmocka_unit_test(test_options),
    cmocka_unit_test(test_punch),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
