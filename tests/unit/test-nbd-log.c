/* Log lines about clients (svm/nbd/log.c): escaping of what came from the network, and the
 * per-client rate limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "svm/nbd/internal.h"

static void test_escape(void **st)
{
  char out[64];

  (void)st;
  nbds_escape("plain name/disk0", out, sizeof out);
  assert_string_equal(out, "plain name/disk0");
  nbds_escape("a\nb\rc\x1b[2J\x07\x7f", out, sizeof out);
  assert_string_equal(out, "a\\x0ab\\x0dc\\x1b[2J\\x07\\x7f");
  nbds_escape("back\\slash", out, sizeof out);
  assert_string_equal(out, "back\\\\slash");
  nbds_escape("\xc3\xa9t\xe9", out, sizeof out);          /* non-ASCII bytes too */
  assert_string_equal(out, "\\xc3\\xa9t\\xe9");
}

static void test_escape_truncates(void **st)
{
  char out[8];

  (void)st;
  /* never a half escape at the end, always terminated */
  nbds_escape("abcde\x01zz", out, sizeof out);
  assert_string_equal(out, "abcde");
  nbds_escape("abcdefghijk", out, sizeof out);
  assert_string_equal(out, "abcdefg");
  nbds_escape("x", out, 1);
  assert_string_equal(out, "");
}

static void test_ratelimit(void **st)
{
  struct nbds_ratelimit rl = { 0 };
  unsigned suppressed, passed = 0;

  (void)st;
  for (unsigned i = 0; i < 100; i++)
    if (nbds_ratelimit_ok(&rl, &suppressed)) {
      passed++;
      assert_int_equal(suppressed, 0);
    }
  assert_int_equal(passed, NBD_LOG_BURST);     /* a burst, the rest held back... */
  assert_int_equal(rl.suppressed, 100 - NBD_LOG_BURST);
  rl.window_ns -= 1100000000ull;               /* ...a second later one more line, */
  assert_true(nbds_ratelimit_ok(&rl, &suppressed));
  assert_int_equal(suppressed, 100 - NBD_LOG_BURST);   /* which says how many were left out */
  assert_false(nbds_ratelimit_ok(&rl, &suppressed));
  rl.window_ns -= 3000000000ull;               /* after a quiet spell, a new burst */
  passed = 0;
  for (unsigned i = 0; i < 100; i++)
    passed += nbds_ratelimit_ok(&rl, &suppressed);
  assert_int_equal(passed, NBD_LOG_BURST);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_escape),
    cmocka_unit_test(test_escape_truncates),
    cmocka_unit_test(test_ratelimit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
