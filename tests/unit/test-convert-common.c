/* common/size and common/progress, used by svm-convert (and by the other tools). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <svmotion/cli.h>

static void test_parse(void **state)
{
  uint64_t v;
  (void)state;

  struct { const char *s; uint64_t v; } good[] = {
    { "0", 0 }, { "4096", 4096 }, { "512M", 512ULL << 20 }, { "10G", 10ULL << 30 },
    { "1k", 1024 }, { "1KiB", 1024 }, { "1KB", 1024 }, { "2T", 2ULL << 40 }, { "1P", 1ULL << 50 },
    { "1.5G", 3ULL << 29 }, { "0.5K", 512 }, { "100B", 100 }, { "7E", 7ULL << 60 },
    { "18446744073709551615", UINT64_MAX },
  };
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    v = 1234;
    assert_int_equal(svm_size_parse(good[i].s, &v), 0);
    assert_int_equal(v, good[i].v);
  }
  const char *bad[] = { "", "G", "-1", " 1", "1 G", "1X", "1GG", "1.G", ".5G", "0.3", "1.0001K",
                        "1Gx", "abc", "1e3" };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(svm_size_parse(bad[i], &v), -EINVAL);
  assert_int_equal(svm_size_parse("18446744073709551616", &v), -ERANGE);
  assert_int_equal(svm_size_parse("16E", &v), -ERANGE);
  assert_int_equal(svm_size_parse(NULL, &v), -EINVAL);
}

static void test_format(void **state)
{
  char b[32];
  (void)state;
  assert_string_equal(svm_size_format(0, b, sizeof b), "0 B");
  assert_string_equal(svm_size_format(1023, b, sizeof b), "1023 B");
  assert_string_equal(svm_size_format(1024, b, sizeof b), "1.0 KiB");
  assert_string_equal(svm_size_format(3ULL << 29, b, sizeof b), "1.5 GiB");
  assert_string_equal(svm_size_format(1ULL << 40, b, sizeof b), "1.0 TiB");
  assert_string_equal(svm_size_format(UINT64_MAX, b, sizeof b), "16.0 EiB");
}

static void test_progress(void **state)
{
  struct svm_progress p;
  char line[256], *out = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&out, &len);
  (void)state;

  assert_non_null(f);
  svm_progress_init_file(&p, "copy", f, true);
  svm_progress_format(&p, 1 << 30, 4ULL << 30, 2.0, line, sizeof line);
  assert_string_equal(line, "copy [#######-----------------------]  25% 1.0 GiB / 4.0 GiB "
                            "512.0 MiB/s ETA 6s");
  svm_progress_format(&p, 1 << 20, 4ULL << 30, 2.0, line, sizeof line);
  assert_non_null(strstr(line, " ETA 2h16m"));    /* 4095 MiB left at 512 KiB/s */
  svm_progress_format(&p, 5, 0, 0, line, sizeof line);     /* total 0: full, no rate */
  assert_non_null(strstr(line, "100%"));
  assert_non_null(strstr(line, " -"));
  svm_progress_update(&p, 10, 100);
  svm_progress_update(&p, 20, 100);    /* within 0.1 s: not drawn */
  svm_progress_update(&p, 100, 100);   /* the end is always drawn */
  svm_progress_finish(&p);
  fclose(f);
  assert_non_null(strstr(out, " 10%"));
  assert_null(strstr(out, " 20%"));
  assert_non_null(strstr(out, "100%"));
  assert_int_equal(out[len - 4], '\r');      /* finish clears the line */
  free(out);

  /* disabled: draws nothing */
  out = NULL;
  f = open_memstream(&out, &len);
  svm_progress_init_file(&p, "copy", f, false);
  svm_progress_update(&p, 10, 100);
  svm_progress_finish(&p);
  fclose(f);
  assert_int_equal(len, 0);
  free(out);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_parse),
    cmocka_unit_test(test_format),
    cmocka_unit_test(test_progress),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
