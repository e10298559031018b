/* The all-zero check against a naive byte loop, at every alignment and many lengths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "svm/disk/zero.h"

static bool naive(const unsigned char *p, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (p[i])
      return false;
  return true;
}

static void test_empty_and_small(void **state)
{
  unsigned char b[64] = { 0 };
  (void)state;
  assert_true(svm_is_zero(b, 0));
  assert_true(svm_is_zero(NULL, 0));
  for (size_t n = 1; n < sizeof b; n++) {
    assert_true(svm_is_zero(b, n));
    b[n - 1] = 1;
    assert_false(svm_is_zero(b, n));
    b[n - 1] = 0;
  }
}

/* One non-zero byte at each position, for unaligned starts and lengths around 16 and 4096. */
static void test_every_position(void **state)
{
  enum { MAX = 4096 + 64 };
  unsigned char *base = calloc(1, MAX + 64);
  size_t lens[] = { 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 511, 512, 513, 4095, 4096, 4097 };
  (void)state;

  assert_non_null(base);
  for (size_t a = 0; a < 16; a++) {
    unsigned char *p = base + a;
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
      size_t n = lens[li];
      assert_true(svm_is_zero(p, n));
      for (size_t pos = 0; pos < n; pos += (n > 100 ? 7 : 1)) {
        p[pos] = 0x80;
        assert_false(svm_is_zero(p, n));
        p[pos] = 0;
      }
      p[n - 1] = 1;                         /* the very last byte */
      assert_false(svm_is_zero(p, n));
      p[n - 1] = 0;
      p[n] = 1;                             /* a byte just past the end does not count */
      assert_true(svm_is_zero(p, n));
      p[n] = 0;
      if (a > 0) {
        p[-1] = 1;                          /* nor one just before */
        assert_true(svm_is_zero(p, n));
        p[-1] = 0;
      }
    }
  }
  free(base);
}

static void test_random_against_naive(void **state)
{
  enum { N = 1 << 16 };
  unsigned char *b = calloc(1, N);
  (void)state;

  assert_non_null(b);
  srand(42);
  for (int round = 0; round < 2000; round++) {
    size_t off = (size_t)rand() % 4096, len = (size_t)rand() % (N - off);
    memset(b, 0, N);
    if (rand() % 2) {
      b[off + (len ? (size_t)rand() % len : 0)] = (unsigned char)(1 + rand() % 255);
    }
    assert_int_equal(svm_is_zero(b + off, len), naive(b + off, len));
  }
  free(b);
}

static void test_zero_span(void **state)
{
  enum { B = 4096 };
  unsigned char *b = calloc(1, 10 * B + 100);
  (void)state;

  assert_non_null(b);
  /* blocks: 0 zero, 1 zero, 2 data, 3 data, 4 zero, ..., 9 zero, then 100-byte zero tail */
  b[2 * B + 5] = 1;
  b[4 * B - 1] = 1;
  assert_int_equal(svm_zero_span(b, 10 * B + 100, B, true), 2 * B);
  assert_int_equal(svm_zero_span(b + 2 * B, 8 * B + 100, B, false), 2 * B);
  assert_int_equal(svm_zero_span(b + 4 * B, 6 * B + 100, B, true), 6 * B + 100);
  assert_int_equal(svm_zero_span(b + 4 * B, 6 * B + 100, B, false), 0);
  assert_int_equal(svm_zero_span(b, 0, B, true), 0);
  /* a data byte in the short tail block */
  b[10 * B + 99] = 7;
  assert_int_equal(svm_zero_span(b + 4 * B, 6 * B + 100, B, true), 6 * B);
  assert_int_equal(svm_zero_span(b + 10 * B, 100, B, false), 100);
  /* granularity 512 inside one 4 KiB block */
  memset(b, 0, 10 * B + 100);
  b[1024] = 1;
  assert_int_equal(svm_zero_span(b, B, 512, true), 1024);
  assert_int_equal(svm_zero_span(b + 1024, B - 1024, 512, false), 512);
  free(b);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_empty_and_small),
    cmocka_unit_test(test_every_position),
    cmocka_unit_test(test_random_against_naive),
    cmocka_unit_test(test_zero_span),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
