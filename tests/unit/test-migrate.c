/* svm/migrate: the move journal (a file read back after a crash: round trip, then every way a
 * damaged or foreign one is refused) and the move limits. */
#include <errno.h>
#include <fcntl.h>
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

#include "common/error.h"
#include "svm/migrate/migrate.h"

struct seen {
  int n, bad;
  struct svm_journal j;
  char err[512];
};

static void collect(void *opaque, const char *file, const struct svm_journal *j, const char *err)
{
  struct seen *s = opaque;

  (void)file;
  if (j) {
    s->n++;
    s->j = *j;
  } else {
    s->bad++;
    snprintf(s->err, sizeof s->err, "%s", err);
  }
}

static void put(const char *dir, const char *name, const char *text, size_t len)
{
  char path[512];
  FILE *f;

  snprintf(path, sizeof path, "%s/%s", dir, name);
  f = fopen(path, "w");
  assert_non_null(f);
  assert_int_equal(fwrite(text, 1, len, f), len);
  fclose(f);
}

static void clear(const char *dir)
{
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -f %s/*", dir);
  assert_int_equal(system(cmd), 0);
}

static void journal_round_trip(void **state)
{
  char dir[] = "/tmp/test-migrate.XXXXXX";
  struct svm_journal j = { .vm = "vm1", .src_ds = "ds1", .dst_ds = "ds2",
                           .src_dir = "/srv/ds1/vm1", .dst_dir = "/srv/ds2/vm1" };
  struct seen s = { 0 };
  char path[600];
  struct stat st;

  (void)state;
  assert_non_null(mkdtemp(dir));
  assert_int_equal(svm_journal_write(dir, &j), 0);
  snprintf(path, sizeof path, "%s/vm1.move", dir);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  put(dir, "vm2.move.tmp", "half", 4);          /* never renamed: dropped */
  put(dir, "other.txt", "x", 1);                /* not a journal: ignored */
  assert_int_equal(svm_journal_scan(dir, collect, &s), 0);
  assert_int_equal(s.n, 1);
  assert_int_equal(s.bad, 0);
  assert_string_equal(s.j.vm, "vm1");
  assert_string_equal(s.j.src_dir, "/srv/ds1/vm1");
  assert_string_equal(s.j.dst_dir, "/srv/ds2/vm1");
  assert_string_equal(s.j.src_ds, "ds1");
  assert_string_equal(s.j.dst_ds, "ds2");
  snprintf(path, sizeof path, "%s/vm2.move.tmp", dir);
  assert_int_equal(access(path, F_OK), -1);
  assert_int_equal(svm_journal_remove(dir, "vm1"), 0);
  assert_int_equal(svm_journal_remove(dir, "vm1"), 0);      /* gone already: fine */
  memset(&s, 0, sizeof s);
  assert_int_equal(svm_journal_scan(dir, collect, &s), 0);
  assert_int_equal(s.n, 0);
  clear(dir);
  rmdir(dir);
  /* no journal folder: nothing to do */
  assert_int_equal(svm_journal_scan("/nonexistent/moves", collect, &s), 0);
}

static const struct {
  const char *text, *err;
} bad[] = {
  { "", "incomplete" },
  { "svm.move = 2\nvm = a\n", "unknown version '2'" },
  { "svm.move = 1\nvm = a\nsrc-datastore = d1\nsrc = /x/a\ndst-datastore = d2\n",
    "incomplete" },
  { "svm.move = 1\nvm = a\nsrc-datastore = d1\nsrc = x/a\ndst-datastore = d2\ndst = /y/a\n",
    "'src' must be an absolute, plain path" },
  { "svm.move = 1\nvm = a\nsrc-datastore = d1\nsrc = /x/../a\ndst-datastore = d2\n"
    "dst = /y/a\n", "'src' must be an absolute, plain path" },
  { "svm.move = 1\nvm = a\nsrc-datastore = d1\nsrc = /x/a\ndst-datastore = d2\ndst = /y/b\n",
    "the folders are not named for VM 'a'" },
  { "svm.move = 1\nvm = ../a\nsrc-datastore = d1\nsrc = /x/a\ndst-datastore = d2\n"
    "dst = /y/a\n", "bad name in 'vm'" },
  { "svm.move = 1\nvm a\n", "is not 'key = value'" },
};

static void journal_negative(void **state)
{
  char dir[] = "/tmp/test-migrate.XXXXXX";

  (void)state;
  assert_non_null(mkdtemp(dir));
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct seen s = { 0 };
    put(dir, "a.move", bad[i].text, strlen(bad[i].text));
    assert_int_equal(svm_journal_scan(dir, collect, &s), 0);
    if (s.bad != 1 || s.n != 0 || !strstr(s.err, bad[i].err))
      fail_msg("case %zu: n=%d bad=%d err '%s', want '%s'", i, s.n, s.bad, s.err, bad[i].err);
  }
  /* a NUL byte, and a file too large to be a journal */
  {
    struct seen s = { 0 };
    put(dir, "a.move", "svm.move = 1\n\0vm = a\n", 21);
    assert_int_equal(svm_journal_scan(dir, collect, &s), 0);
    assert_int_equal(s.bad, 1);
    assert_non_null(strstr(s.err, "NUL"));
  }
  {
    struct seen s = { 0 };
    size_t n = 20000;
    char *big = malloc(n);
    memset(big, '#', n);
    put(dir, "a.move", big, n);
    free(big);
    assert_int_equal(svm_journal_scan(dir, collect, &s), 0);
    assert_int_equal(s.bad, 1);
    assert_non_null(strstr(s.err, "larger than"));
  }
  /* a symlink is never followed */
  {
    struct seen s = { 0 };
    char link[600];
    clear(dir);
    snprintf(link, sizeof link, "%s/l.move", dir);
    assert_int_equal(symlink("/etc/hostname", link), 0);
    assert_int_equal(svm_journal_scan(dir, collect, &s), 0);
    assert_int_equal(s.bad, 1);
  }
  clear(dir);
  rmdir(dir);
}

static void limits(void **state)
{
  struct svm_move_slot r[8] = { { "", "" } };
  const struct svm_move_slot a = { "ds1", "ds2" }, b = { "ds3", "ds4" };

  (void)state;
  assert_true(svm_move_may_start(r, 0, &a));
  r[0] = a;
  assert_true(svm_move_may_start(r, 1, &b));
  r[1] = b;
  assert_false(svm_move_may_start(r, 2, &a));      /* 2 per host */
  assert_false(svm_move_may_start(r, 2, &(struct svm_move_slot){ "ds5", "ds6" }));
  assert_int_equal(SVM_MOVES_PER_DATASTORE, 8);
}

/* A retired folder: shrunk, then removed; with its stop flag set, left whole for the next
 * start (-ECANCELED naming it). Holes cost no rest: a 1 TiB sparse file goes at once. */
static void remove_retired(void **state)
{
  char dir[] = "/tmp/test-migrate.XXXXXX", f[64], g[64], *left = NULL;
  atomic_bool stop;
  int fd;

  (void)state;
  assert_non_null(mkdtemp(dir));
  snprintf(f, sizeof f, "%s/disk0.raw", dir);
  snprintf(g, sizeof g, "%s/big.raw", dir);
  fd = open(f, O_WRONLY | O_CREAT, 0600);
  assert_true(fd >= 0);
  char buf[65536];
  memset(buf, 7, sizeof buf);
  for (int i = 0; i < 64; i++)               /* 64 KiB of data every 16 MiB: 1 GiB */
    assert_int_equal(pwrite(fd, buf, sizeof buf, (off_t)i << 24), (ssize_t)sizeof buf);
  close(fd);
  fd = open(g, O_WRONLY | O_CREAT, 0600);
  assert_true(fd >= 0);
  assert_int_equal(ftruncate(fd, (off_t)1 << 40), 0);   /* 1 TiB, all hole */
  close(fd);
  atomic_init(&stop, true);
  assert_int_equal(svm_move_remove_retired_folder(dir, &stop, &left), -ECANCELED);
  assert_non_null(strstr(svm_last_error(), dir));
  assert_int_equal(access(f, F_OK), 0);
  atomic_store(&stop, false);
  assert_int_equal(svm_move_remove_retired_folder(dir, &stop, &left), 0);
  assert_null(left);
  assert_int_equal(access(dir, F_OK), -1);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(journal_round_trip),
    cmocka_unit_test(journal_negative),
    cmocka_unit_test(limits),
    cmocka_unit_test(remove_retired),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
