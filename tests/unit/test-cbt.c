/* Unit tests of the cbt library: marks, change IDs, queries, persistence, every way a .ctk
 * can be wrong (each asserting the message and that old change IDs are refused), TRIM,
 * resize, compaction, the inspector's rendering, concurrent marks. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <svmotion/cbt.h>
#include <svmotion/error.h>

#include "cbt/internal.h"

#define KiB 1024ull
#define MiB (1024ull * 1024)
#define G64 (64 * KiB)

struct fx {
  char dir[64];
  char path[128];
};

static int setup(void **state)
{
  struct fx *f = calloc(1, sizeof *f);
  const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  snprintf(f->dir, sizeof f->dir, "%s/test-cbt.XXXXXX", tmp);
  if (!mkdtemp(f->dir))
    return -1;
  snprintf(f->path, sizeof f->path, "%s/disk0.ctk", f->dir);
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  struct fx *f = *state;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
  int r = system(cmd);
  free(f);
  return r == 0 ? 0 : -1;
}

static struct cbt *open_ok(const char *path, const char *id, uint64_t size, uint32_t g)
{
  struct cbt *t = NULL;
  int r = cbt_open(path, id, size, g, &t);
  if (r < 0)
    fail_msg("cbt_open: %s", svm_last_error());
  return t;
}

/* The query result as a string "off+len,off+len" for compact assertions. */
static char *q(struct cbt *t, const char *since, uint64_t off, uint64_t len)
{
  static char buf[4096];
  struct cbt_extent *e;
  size_t n;
  int r = cbt_query(t, since, off, len, &e, &n);
  if (r < 0) {
    snprintf(buf, sizeof buf, "ERR %d: %s", r, svm_last_error());
    return buf;
  }
  buf[0] = '\0';
  for (size_t i = 0; i < n; i++) {
    size_t l = strlen(buf);
    snprintf(buf + l, sizeof buf - l, "%s%" PRIu64 "+%" PRIu64, i ? "," : "", e[i].offset,
             e[i].length);
  }
  free(e);
  return buf;
}

/* t answers since `id` with want, and so does the file after a clean close and a reopen,
 * which trusts it (no note). Closes t. */
static void close_and_reopen(struct cbt *t, const char *path, uint64_t size, const char *id,
                             const char *want)
{
  assert_string_equal(q(t, id, 0, 0), want);
  cbt_close(t);
  t = open_ok(path, "d", size, 0);
  assert_null(cbt_open_note(t));
  assert_string_equal(q(t, id, 0, 0), want);
  cbt_close(t);
}

static void expect_query_error(struct cbt *t, const char *since, int err, const char *needle)
{
  struct cbt_extent *e = (void *)1;
  size_t n = 99;
  int r = cbt_query(t, since, 0, 0, &e, &n);
  assert_int_equal(r, -err);
  assert_null(e);
  assert_int_equal(n, 0);
  if (!strstr(svm_last_error(), needle))
    fail_msg("message '%s' lacks '%s'", svm_last_error(), needle);
  assert_non_null(strstr(svm_last_error(), "full copy"));
}

static void test_basic(void **state)
{
  struct fx *f = *state;
  struct cbt *t = open_ok(f->path, "disk-a", 10 * MiB, 0);
  char id1[CBT_CHANGEID_MAX], id2[CBT_CHANGEID_MAX];
  struct cbt_info info;

  assert_null(cbt_reset_reason(t));
  assert_string_equal(q(t, "*", 0, 0), "");
  assert_int_equal(cbt_mark(t, 100, 10), 0);            /* inside block 0 */
  assert_int_equal(cbt_mark(t, G64 - 1, 2), 0);         /* straddles blocks 0 and 1 */
  assert_int_equal(cbt_mark(t, 5 * G64, G64), 0);       /* exactly block 5 */
  assert_int_equal(cbt_mark(t, 5 * G64, 0), 0);         /* empty: nothing */
  assert_string_equal(q(t, "*", 0, 0), "0+131072,327680+65536");
  /* Query windows clip the result. */
  assert_string_equal(q(t, "*", 1000, 2 * G64), "1000+130072");
  assert_string_equal(q(t, "*", 6 * G64, 0), "");

  assert_int_equal(cbt_changeid(t, id1, sizeof id1), 0);
  assert_int_equal(strlen(id1), 36 + 2);
  assert_string_equal(id1 + 36, "/1");
  assert_string_equal(q(t, id1, 0, 0), "");
  assert_int_equal(cbt_mark(t, 9 * MiB, 1), 0);
  assert_int_equal(cbt_mark(t, 0, 1), 0);               /* block 0 again, new epoch */
  assert_string_equal(q(t, id1, 0, 0), "0+65536,9437184+65536");
  assert_int_equal(cbt_changeid(t, id2, sizeof id2), 0);
  assert_string_equal(id2 + 36, "/2");
  assert_string_equal(q(t, id2, 0, 0), "");
  assert_string_equal(q(t, id1, 0, 0), "0+65536,9437184+65536");
  assert_string_equal(q(t, "*", 0, 0), "0+131072,327680+65536,9437184+65536");

  assert_int_equal(cbt_get_info(t, &info), 0);
  assert_int_equal(info.granularity, G64);
  assert_int_equal(info.disk_size, 10 * MiB);
  assert_int_equal(info.epoch, 3);
  assert_int_equal(info.blocks_marked, 4);
  assert_int_equal(info.version, CTK_VERSION);
  assert_memory_equal(info.uuid, id1, 36);
  cbt_close(t);

  /* Everything survives a reopen: same uuid, same answers. */
  t = open_ok(f->path, "disk-a", 10 * MiB, 4096 /* ignored: the file has 64 KiB */);
  assert_null(cbt_reset_reason(t));
  assert_string_equal(q(t, id1, 0, 0), "0+65536,9437184+65536");
  assert_string_equal(q(t, id2, 0, 0), "");
  assert_string_equal(q(t, "*", 0, 0), "0+131072,327680+65536,9437184+65536");
  char id3[CBT_CHANGEID_MAX];
  assert_int_equal(cbt_changeid(t, id3, sizeof id3), 0);
  assert_string_equal(id3 + 36, "/3");
  cbt_close(t);

  /* The offline reader sees the same. */
  struct cbt_info off;
  assert_int_equal(cbt_info_read(f->path, &off), 0);
  assert_memory_equal(off.uuid, id1, 36);
  assert_int_equal(off.epoch, 4);
  assert_int_equal(off.blocks_marked, 4);
}

static void test_last_partial_block(void **state)
{
  struct fx *f = *state;
  struct cbt *t = open_ok(f->path, "d", 100000, 4096); /* 24 full blocks + 1696 bytes */
  assert_int_equal(cbt_mark(t, 99999, 1), 0);
  assert_string_equal(q(t, "*", 0, 0), "98304+1696");
  assert_int_equal(cbt_mark(t, 99999, 2), -EINVAL);
  assert_non_null(strstr(svm_last_error(), "past the end"));
  assert_int_equal(cbt_mark(t, 100000, 1), -EINVAL);
  struct cbt_extent *e;
  size_t n;
  assert_int_equal(cbt_query(t, "*", 100001, 0, &e, &n), -EINVAL);
  assert_int_equal(cbt_query(t, "*", 0, 100001, &e, &n), -EINVAL);
  assert_string_equal(q(t, "*", 100000, 0), "");
  cbt_close(t);
}

static void test_bad_arguments(void **state)
{
  struct fx *f = *state;
  struct cbt *t = (void *)1;
  assert_int_equal(cbt_open(f->path, "d", MiB, 3000, &t), -EINVAL);
  assert_null(t);
  assert_non_null(strstr(svm_last_error(), "granularity 3000: must be a power of two"));
  assert_int_equal(cbt_open(f->path, "d", MiB, 2 * MiB, &t), -EINVAL);
  assert_int_equal(cbt_open(f->path, "d", MiB, 2048, &t), -EINVAL);
  assert_int_equal(cbt_open(f->path, "d", 0, 0, &t), -EINVAL);
  assert_non_null(strstr(svm_last_error(), "out of range"));
  assert_int_equal(cbt_open(f->path, "", MiB, 0, &t), -EINVAL);
  assert_int_equal(access(f->path, F_OK), -1);          /* nothing created */
  char nodir[200];
  snprintf(nodir, sizeof nodir, "%s/no/such/dir.ctk", f->dir);
  assert_int_equal(cbt_open(nodir, "d", MiB, 0, &t), -ENOENT);
  assert_non_null(strstr(svm_last_error(), nodir));

  /* Same file twice: the second is refused, the first is untouched. */
  struct cbt *a = open_ok(f->path, "d", MiB, 0);
  assert_int_equal(cbt_open(f->path, "d", MiB, 0, &t), -EBUSY);
  assert_non_null(strstr(svm_last_error(), "in use by another tracker"));
  char id[CBT_CHANGEID_MAX];
  assert_int_equal(cbt_changeid(a, id, 10), -ERANGE);    /* nothing closed */
  assert_int_equal(cbt_changeid(a, id, sizeof id), 0);
  assert_string_equal(id + 36, "/1");
  cbt_close(a);
}

static void test_query_errors(void **state)
{
  struct fx *f = *state;
  char other_path[160], other[CBT_CHANGEID_MAX], id[CBT_CHANGEID_MAX], buf[128];
  struct cbt *t = open_ok(f->path, "disk-a", MiB, 0);

  snprintf(other_path, sizeof other_path, "%s/other.ctk", f->dir);
  struct cbt *o = open_ok(other_path, "disk-b", MiB, 0);
  assert_int_equal(cbt_changeid(o, other, sizeof other), 0);
  cbt_close(o);

  expect_query_error(t, "hello", EINVAL, "is malformed");
  expect_query_error(t, "", EINVAL, "is malformed");
  assert_int_equal(cbt_changeid(t, id, sizeof id), 0);
  snprintf(buf, sizeof buf, "%.36s/", id);
  expect_query_error(t, buf, EINVAL, "is malformed");
  snprintf(buf, sizeof buf, "%.36s/0", id);
  expect_query_error(t, buf, EINVAL, "is malformed");
  snprintf(buf, sizeof buf, "%.36s/1x", id);
  expect_query_error(t, buf, EINVAL, "is malformed");
  snprintf(buf, sizeof buf, "%.36s/99999999999999999999999", id);
  expect_query_error(t, buf, EINVAL, "is malformed");
  snprintf(buf, sizeof buf, "%.36s/2", id);
  expect_query_error(t, buf, EINVAL, "is in the future: the last one issued is");
  expect_query_error(t, other, EINVAL, "is not one of this disk's");
  assert_string_equal(q(t, id, 0, 0), "");
  cbt_close(t);

  /* Before any change ID. */
  t = open_ok(other_path, "disk-b", MiB, 0);
  snprintf(buf, sizeof buf, "%.36s/2", other);
  expect_query_error(t, buf, EINVAL, "is in the future");
  cbt_close(t);
  unlink(other_path);
  t = open_ok(other_path, "disk-b", MiB, 0);
  snprintf(buf, sizeof buf, "%.36s/1", other);
  expect_query_error(t, buf, EINVAL, "is not one of this disk's");
  cbt_close(t);
}

/* ---- damaged files: each restarts tracking under a new uuid ---------------------------- */

struct damage_case {
  const char *name;
  void (*damage)(const char *path);
  const char *reason;      /* in cbt_reset_reason() and cbt_info_read()'s message */
  int old_err;             /* what a change ID of the old incarnation gets */
  const char *old_msg;
  const char *disk_id;     /* reopen with this id and size */
  uint64_t size;
};

static void patch(const char *path, uint64_t off, const void *bytes, size_t n)
{
  int fd = open(path, O_WRONLY);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, bytes, n, (off_t)off), (ssize_t)n);
  close(fd);
}

static void damage_header_crc(const char *path)
{
  uint8_t x = 0x5a;
  patch(path, 200, &x, 1);                  /* inside the checksummed area of both slots */
  patch(path, 4096 + 200, &x, 1);
}

static void damage_truncate(const char *path)
{
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(truncate(path, st.st_size - 4096), 0);
}

static void damage_tiny(const char *path)
{
  assert_int_equal(truncate(path, 100), 0);
}

static void damage_grow(const char *path)
{
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(truncate(path, st.st_size + 4096), 0);
}

static void damage_version(const char *path)
{
  uint8_t v[4] = { CTK_VERSION + 1, 0, 0, 0 };
  patch(path, 8, v, 4);
  patch(path, 4096 + 8, v, 4);
}

static void damage_magic(const char *path)
{
  uint8_t junk[8192];
  for (size_t i = 0; i < sizeof junk; i++)
    junk[i] = (uint8_t)(i * 7 + 3);
  patch(path, 0, junk, sizeof junk);
}

static void damage_future_epoch(const char *path)
{
  /* A well-formed page whose block carries an epoch the header never opened. */
  struct ctk_image img;
  int fd = open(path, O_RDWR);
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  struct ctk_src src = { .fd = fd, .size = (uint64_t)st.st_size };
  assert_int_equal(ctk_load(&src, &img), 0);
  uint16_t vals[CTK_BPP] = { 0 };
  vals[3] = (uint16_t)(img.h.cur + 1);
  uint8_t page[CTK_PAGE];
  ctk_encode_page(&img.h, 0, 1000, vals, 16, page);
  assert_int_equal(pwrite(fd, page, CTK_PAGE, CTK_DATA_OFF), CTK_PAGE);
  close(fd);
  ctk_image_free(&img);
}

static void damage_none(const char *path)
{
  (void)path;
}

static const struct damage_case cases[] = {
  { "header", damage_header_crc, "header checksum mismatch", EINVAL, "restarted because",
    "disk-a", MiB },
  { "truncated", damage_truncate, "truncated", ESTALE, "earlier incarnation", "disk-a", MiB },
  { "tiny", damage_tiny, "truncated", EINVAL, "restarted because", "disk-a", MiB },
  { "grown", damage_grow, "wrong file size", ESTALE, "earlier incarnation", "disk-a", MiB },
  { "version", damage_version, "unknown .ctk version 4", EINVAL, "restarted because",
    "disk-a", MiB },
  { "magic", damage_magic, "not a .ctk file", EINVAL, "restarted because", "disk-a", MiB },
  { "epoch", damage_future_epoch, "past the current epoch", ESTALE, "earlier incarnation",
    "disk-a", MiB },
  { "foreign", damage_none, "belongs to another disk ('disk-a', not 'disk-b')", EINVAL,
    "is not one of this disk's", "disk-b", MiB },
  { "size", damage_none, "made for a disk of 1048576 bytes, this disk has 2097152", ESTALE,
    "earlier incarnation", "disk-a", 2 * MiB },
};

static void test_damage(void **state)
{
  struct fx *f = *state;
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    const struct damage_case *dc = &cases[c];
    char id1[CBT_CHANGEID_MAX], id2[CBT_CHANGEID_MAX], nid[CBT_CHANGEID_MAX];
    unlink(f->path);
    struct cbt *t = open_ok(f->path, "disk-a", MiB, 4096);
    assert_int_equal(cbt_mark(t, 8192, 100), 0);
    assert_int_equal(cbt_changeid(t, id1, sizeof id1), 0);
    assert_int_equal(cbt_mark(t, 20480, 4096), 0);
    assert_int_equal(cbt_changeid(t, id2, sizeof id2), 0);
    cbt_close(t);

    dc->damage(f->path);
    if (strcmp(dc->name, "foreign") && strcmp(dc->name, "size")) {
      struct cbt_info info;
      assert_int_not_equal(cbt_info_read(f->path, &info), 0);
      if (!strstr(svm_last_error(), dc->reason) || !strstr(svm_last_error(), f->path))
        fail_msg("%s: info_read said '%s'", dc->name, svm_last_error());
    }
    t = open_ok(f->path, dc->disk_id, dc->size, 0);
    const char *why = cbt_reset_reason(t);
    if (!why || !strstr(why, dc->reason) || !strstr(why, f->path) ||
        !strstr(why, "tracking restarted under a new uuid"))
      fail_msg("%s: reset reason '%s'", dc->name, why ? why : "(none)");
    /* No change ID of the old incarnation is honoured. */
    expect_query_error(t, id1, dc->old_err, dc->old_msg);
    expect_query_error(t, id2, dc->old_err, dc->old_msg);
    if (strcmp(dc->name, "foreign") != 0)
      expect_query_error(t, id2, dc->old_err, dc->reason);
    /* Everything counts as changed; the granularity of a readable header is kept. */
    struct cbt_info info;
    assert_int_equal(cbt_get_info(t, &info), 0);
    assert_memory_not_equal(info.uuid, id1, 36);
    uint32_t g = dc->old_err == ESTALE ? 4096 : G64;
    if (strcmp(dc->name, "foreign") == 0)
      g = 4096;
    assert_int_equal(info.granularity, g);
    char all[64];
    snprintf(all, sizeof all, "0+%" PRIu64, dc->size);
    assert_string_equal(q(t, "*", 0, 0), all);
    assert_int_equal(info.blocks_marked, dc->size / g);
    assert_int_equal(cbt_changeid(t, nid, sizeof nid), 0);
    assert_string_equal(nid + 36, "/1");
    assert_string_equal(q(t, nid, 0, 0), "");
    cbt_close(t);

    /* The restarted file is sound and the refusal persists across reopen. */
    t = open_ok(f->path, dc->disk_id, dc->size, 0);
    assert_null(cbt_reset_reason(t));
    expect_query_error(t, id2, dc->old_err, dc->old_msg);
    assert_string_equal(q(t, nid, 0, 0), "");
    assert_string_equal(q(t, "*", 0, 0), all);
    cbt_close(t);
  }
}

/* Issue 11: a data page whose copies disagree in validity (one copy flipped: a torn write or
 * damage at rest, the file cannot tell which copy was the newest) or whose copies were both
 * zeroed is never trusted: every block the page covers counts as changed in the open epoch,
 * and the open says so. A query since the last change ID may over-report; it never misses. */
static void test_damaged_page(void **state)
{
  struct fx *f = *state;
  static const char *kinds[] = { "flip copy 0", "flip copy 1", "zero both" };
  for (int k = 0; k < 3; k++) {
    char id[CBT_CHANGEID_MAX];
    unlink(f->path);
    struct cbt *t = open_ok(f->path, "d", MiB, 4096);   /* 256 blocks: one page */
    assert_int_equal(cbt_mark(t, 0, 1), 0);
    assert_int_equal(cbt_changeid(t, id, sizeof id), 0);
    assert_int_equal(cbt_mark(t, 4096, 1), 0);
    assert_int_equal(cbt_changeid(t, id, sizeof id), 0);
    assert_int_equal(cbt_mark(t, 3 * 4096, 1), 0);
    cbt_close(t);

    uint8_t junk[1000];
    memset(junk, k == 2 ? 0 : 0xa5, sizeof junk);
    if (k < 2) {
      patch(f->path, CTK_DATA_OFF + (uint64_t)k * CTK_PAGE + 1500, junk, sizeof junk);
    } else {
      uint8_t *z = calloc(1, 2 * CTK_PAGE);
      patch(f->path, CTK_DATA_OFF, z, 2 * CTK_PAGE);
      free(z);
    }
    t = open_ok(f->path, "d", MiB, 0);
    /* Not a reset: the header is sound, the change IDs stay valid. */
    if (cbt_reset_reason(t))
      fail_msg("%s: reset: %s", kinds[k], cbt_reset_reason(t));
    const char *got = q(t, id, 0, 0);
    if (strcmp(got, "0+1048576") != 0)
      fail_msg("%s: since the last change ID: '%s', want the whole page 0+1048576", kinds[k],
               got);
    cbt_close(t);
    /* The repair is durable: still reported after another reopen. */
    t = open_ok(f->path, "d", MiB, 0);
    assert_string_equal(q(t, id, 0, 0), "0+1048576");
    cbt_close(t);
  }
}

/* A fixture of an older .ctk version copied to `to` (cmd: the copy's command, to run again),
 * read without opening it: still that version. */
static void copy_fixture(const char *name, const char *to, uint32_t version, char *cmd,
                         size_t cmdlen, struct cbt_info *info)
{
  snprintf(cmd, cmdlen, "cp '%s/%s' '%s'", CBT_TEST_DATA, name, to);
  assert_int_equal(system(cmd), 0);
  assert_int_equal(cbt_info_read(to, info), 0);
  assert_int_equal(info->version, version);
}

/* A .ctk of version 1 (made by the build before the activity log: tests/unit/data/ctk-v1.ctk,
 * a 3 MiB disk at 4 KiB, blocks 0-1 written in epoch 1, 10-12 in epoch 2, 700 in the open
 * epoch 3) is upgraded in place at its first open: same uuid, same change IDs, same answers. */
static void test_upgrade_v1(void **state)
{
  struct fx *f = *state;
  static const char id1[] = "af12406a-cdbc-4635-96a1-4faf51ce0059/1";
  static const char id2[] = "af12406a-cdbc-4635-96a1-4faf51ce0059/2";
  char cmd[512];
  struct cbt_info info;
  copy_fixture("ctk-v1.ctk", f->path, 1, cmd, sizeof cmd, &info);
  assert_int_equal(info.blocks_marked, 6);

  for (int round = 0; round < 2; round++) {
    struct cbt *t = open_ok(f->path, "fixture-disk", 3 * MiB, 0);
    assert_null(cbt_reset_reason(t));
    assert_null(cbt_open_note(t));
    assert_string_equal(q(t, "*", 0, 0), "0+8192,40960+12288,2867200+4096");
    assert_string_equal(q(t, id1, 0, 0), "40960+12288,2867200+4096");
    assert_string_equal(q(t, id2, 0, 0), "2867200+4096");
    assert_int_equal(cbt_get_info(t, &info), 0);
    assert_int_equal(info.version, CTK_VERSION);
    assert_int_equal(info.epoch, 3);
    assert_memory_equal(info.uuid, id1, 36);
    if (round == 0)
      assert_int_equal(cbt_mark(t, 100 * 4096, 1), 0);
    else
      assert_string_equal(q(t, id2, 0, 0), "2867200+4096");
    cbt_close(t);
    assert_int_equal(cbt_info_read(f->path, &info), 0);
    assert_int_equal(info.version, CTK_VERSION);
    if (round == 0) {
      /* The mark after the upgrade is there too. */
      t = open_ok(f->path, "fixture-disk", 3 * MiB, 0);
      assert_string_equal(q(t, id2, 0, 0), "409600+4096,2867200+4096");
      cbt_close(t);
      assert_int_equal(system(cmd), 0);       /* again from the old file, second round */
    }
  }

  /* Version 1 left a page written only once with its other copy a hole (zeros): that is
   * legitimate there, not damage. Garbage in a copy is not: the page counts as changed. */
  for (int garbage = 0; garbage < 2; garbage++) {
    assert_int_equal(system(cmd), 0);
    uint8_t *z = calloc(1, CTK_PAGE);
    memset(z, garbage ? 0x5a : 0, CTK_PAGE);
    patch(f->path, CTK_DATA_OFF_V1, z, CTK_PAGE);        /* copy A (the older one) */
    free(z);
    struct cbt *t = open_ok(f->path, "fixture-disk", 3 * MiB, 0);
    assert_null(cbt_reset_reason(t));
    if (garbage) {
      assert_non_null(cbt_open_note(t));
      assert_string_equal(q(t, id2, 0, 0), "0+3145728");
    } else {
      assert_null(cbt_open_note(t));
      assert_string_equal(q(t, id1, 0, 0), "40960+12288,2867200+4096");
      assert_string_equal(q(t, id2, 0, 0), "2867200+4096");
    }
    cbt_close(t);
  }
}

/* A .ctk of version 2 (4 KiB log entries; tests/unit/data/ctk-v2.ctk, made by the build at
 * bec97e8: a 64 MiB disk at 4 KiB, blocks 0-1 written in epoch 1, 10-12 in epoch 2, 700 in
 * epoch 3, closed; then reopened, block 3329 (extent 3) marked, and the process killed, so
 * that its log entry holds extent 3) is upgraded at its first open: the logged extent counts
 * as written in the open epoch (the crash's over-report), nothing is lost, the change IDs
 * answer as before, and the new file answers the same without the note. */
static void test_upgrade_v2(void **state)
{
  struct fx *f = *state;
  static const char id1[] = "b55ee199-d2a7-4d6d-b743-73dfd2d32bae/1";
  static const char id2[] = "b55ee199-d2a7-4d6d-b743-73dfd2d32bae/2";
  char cmd[512];
  struct cbt_info info;
  copy_fixture("ctk-v2.ctk", f->path, 2, cmd, sizeof cmd, &info);

  for (int round = 0; round < 2; round++) {
    struct cbt *t = open_ok(f->path, "fixture-disk", 64 * MiB, 0);
    assert_null(cbt_reset_reason(t));
    if (round == 0)
      assert_non_null(strstr(cbt_open_note(t), "1024 blocks of 1 logged extent"));
    else
      assert_null(cbt_open_note(t));
    assert_string_equal(q(t, "*", 0, 0), "0+8192,40960+12288,2867200+4096,12582912+4194304");
    assert_string_equal(q(t, id1, 0, 0), "40960+12288,2867200+4096,12582912+4194304");
    assert_string_equal(q(t, id2, 0, 0), "2867200+4096,12582912+4194304");
    assert_int_equal(cbt_get_info(t, &info), 0);
    assert_int_equal(info.version, CTK_VERSION);
    assert_int_equal(info.epoch, 3);
    assert_memory_equal(info.uuid, id1, 36);
    cbt_close(t);
    assert_int_equal(cbt_info_read(f->path, &info), 0);
    assert_int_equal(info.version, CTK_VERSION);
  }
}

static int enospc_left;
static ssize_t enospc_pwrite(int fd, const void *buf, size_t n, off_t off)
{
  if (enospc_left > 0) {
    enospc_left--;
    errno = ENOSPC;
    return -1;
  }
  return pwrite(fd, buf, n, off);
}

/* A .ctk write that fails for lack of space (a file system that cannot honour the
 * preallocation) fails the marks waiting for it with ENOSPC, not a broken tracker: the next
 * mark tries again and succeeds once there is room. Nothing acknowledged is lost. */
static void test_enospc_recovers(void **state)
{
  struct fx *f = *state;
  char id[CBT_CHANGEID_MAX];
  struct cbt *t = open_ok(f->path, "d", 64 * MiB, 4096);
  assert_int_equal(cbt_changeid(t, id, sizeof id), 0);
  cbt_io.pwrite = enospc_pwrite;
  enospc_left = 1;
  assert_int_equal(cbt_mark(t, 5 * MiB, 4096), -ENOSPC);   /* cold extent: log entry fails */
  assert_non_null(strstr(svm_last_error(), f->path));
  assert_non_null(strstr(svm_last_error(), "datastore is full"));
  assert_int_equal(cbt_mark(t, 5 * MiB, 4096), 0);         /* space is back */
  assert_int_equal(cbt_mark(t, 5 * MiB + 8192, 4096), 0);  /* hot now: no I/O at all */
  enospc_left = 1;                                          /* a lazy write-back fails ... */
  assert_int_equal(cbt_internal_flush(t, false, 0), -ENOSPC);
  assert_int_equal(cbt_internal_flush(t, false, 0), 0);            /* ... and is simply retried */
  enospc_left = 1;                                          /* a wide mark writes its pages */
  assert_int_equal(cbt_mark(t, 20 * MiB, 40 * MiB), -ENOSPC);
  assert_int_equal(cbt_mark(t, 20 * MiB, 40 * MiB), 0);
  cbt_io.pwrite = pwrite;
  close_and_reopen(t, f->path, 64 * MiB, id, "5242880+4096,5251072+4096,20971520+41943040");
}

/* The activity log as a crash leaves it (the tracker still open), then one slot damaged:
 * the slot that may hold the newest entry -> every block changed (the hot set is unknown);
 * an older slot -> only logged; a torn entry (sectors of two entries, each whole) -> the
 * previous entry holds, no damage. */
static void test_al_damage(void **state)
{
  struct fx *f = *state;
  char id[CBT_CHANGEID_MAX], copy[160], cmd[400];
  snprintf(copy, sizeof copy, "%s/crashed.ctk", f->dir);
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", f->path, copy);
  for (int k = 0; k < 3; k++) {
    unlink(f->path);
    struct cbt *t = open_ok(f->path, "d", 64 * MiB, 4096);  /* log entry 1 in slot 1 */
    assert_int_equal(cbt_changeid(t, id, sizeof id), 0);
    assert_int_equal(cbt_mark(t, 5 * MiB, 4096), 0);       /* entry 2 in slot 2: extent 1 */
    assert_int_equal(system(cmd), 0);
    cbt_close(t);
    uint8_t junk[16];
    memset(junk, 0xa5, sizeof junk);
    if (k == 0)                                /* the newest entry's slot, one sector hit */
      patch(copy, CTK_AL_OFF + 2 * CTK_AL_ENTRY + 11 * CTK_AL_SECTOR + 40, junk, sizeof junk);
    else if (k == 1)                           /* an older entry's slot */
      patch(copy, CTK_AL_OFF + 1 * CTK_AL_ENTRY + 100, junk, sizeof junk);
    else {                                     /* entry 2 torn: its last sectors never written */
      uint8_t *z = calloc(1, CTK_AL_ENTRY / 4);
      patch(copy, CTK_AL_OFF + 2 * CTK_AL_ENTRY + CTK_AL_ENTRY * 3 / 4, z, CTK_AL_ENTRY / 4);
      free(z);
    }
    t = open_ok(copy, "d", 64 * MiB, 0);
    assert_null(cbt_reset_reason(t));
    const char *note = cbt_open_note(t);
    assert_non_null(note);
    if (k == 0) {
      assert_string_equal(q(t, id, 0, 0), "0+67108864");
      assert_non_null(strstr(note, "every block counted as changed"));
    } else if (k == 1) {
      assert_string_equal(q(t, id, 0, 0), "4194304+4194304");    /* extent 1, the log's */
      assert_non_null(strstr(note, "older entries only"));
    } else {
      assert_string_equal(q(t, id, 0, 0), "");                   /* entry 1: empty */
      assert_non_null(strstr(note, "torn activity-log entry"));
    }
    cbt_close(t);
    unlink(copy);
  }
}

/* A crash in the middle of a compaction/resize/reset leaves "X.ctk.tmp.XXXXXX" behind: the
 * next open removes it and keeps the real file. */
static void test_stale_tmp(void **state)
{
  struct fx *f = *state;
  char tmp[200], other[200], id[CBT_CHANGEID_MAX];
  struct cbt *t = open_ok(f->path, "d", MiB, 4096);
  assert_int_equal(cbt_mark(t, 0, 1), 0);
  assert_int_equal(cbt_changeid(t, id, sizeof id), 0);
  cbt_close(t);
  snprintf(tmp, sizeof tmp, "%s.tmp.Ab12Cd", f->path);
  snprintf(other, sizeof other, "%s.tmp.Ab12Cde", f->path);
  FILE *x = fopen(tmp, "w"), *y = fopen(other, "w");
  assert_non_null(x);
  assert_non_null(y);
  fputs("half-written", x);
  fclose(x);
  fclose(y);
  t = open_ok(f->path, "d", MiB, 0);
  assert_null(cbt_reset_reason(t));
  assert_int_equal(access(tmp, F_OK), -1);
  assert_int_equal(access(other, F_OK), 0);
  assert_string_equal(q(t, "*", 0, 0), "0+4096");
  assert_string_equal(q(t, id, 0, 0), "");
  cbt_close(t);

  /* A folder named like a glob pattern: only its own leftovers go, not a neighbour's. */
  char br[200], plain[200], brctk[220], neighbour[240];
  snprintf(br, sizeof br, "%s/vm[1]", f->dir);
  snprintf(plain, sizeof plain, "%s/vm1", f->dir);
  assert_int_equal(mkdir(br, 0755), 0);
  assert_int_equal(mkdir(plain, 0755), 0);
  snprintf(brctk, sizeof brctk, "%s/d.ctk", br);
  snprintf(neighbour, sizeof neighbour, "%s/d.ctk.tmp.Zz9Zz9", plain);
  fclose(fopen(neighbour, "w"));
  t = open_ok(brctk, "d", MiB, 0);
  cbt_close(t);
  t = open_ok(brctk, "d", MiB, 0);
  cbt_close(t);
  assert_int_equal(access(neighbour, F_OK), 0);
}

static void test_discard(void **state)
{
  struct fx *f = *state;
  char id[CBT_CHANGEID_MAX];
  struct cbt *t = open_ok(f->path, "d", MiB, 4096);
  assert_int_equal(cbt_changeid(t, id, sizeof id), 0);
  assert_int_equal(cbt_discard(t, 8192, 3 * 4096), 0);   /* a TRIM is a change */
  assert_string_equal(q(t, id, 0, 0), "8192+12288");
  assert_int_equal(cbt_discard(t, MiB, 1), -EINVAL);
  cbt_close(t);
}

static void test_resize(void **state)
{
  struct fx *f = *state;
  char id1[CBT_CHANGEID_MAX], id2[CBT_CHANGEID_MAX];
  struct cbt *t = open_ok(f->path, "d", 10 * 4096 + 100, 4096); /* 11 blocks, last partial */
  assert_int_equal(cbt_mark(t, 0, 1), 0);
  assert_int_equal(cbt_mark(t, 8 * 4096, 1), 0);
  assert_int_equal(cbt_changeid(t, id1, sizeof id1), 0);
  assert_int_equal(cbt_mark(t, 4096, 1), 0);

  /* Grow: the grown area and the old partial last block changed, in the open epoch. */
  assert_int_equal(cbt_resize(t, 16 * 4096), 0);
  assert_string_equal(q(t, id1, 0, 0), "4096+4096,40960+24576");
  assert_string_equal(q(t, "*", 0, 0), "0+8192,32768+4096,40960+24576");
  assert_int_equal(cbt_mark(t, 15 * 4096, 4096), 0);
  assert_int_equal(cbt_changeid(t, id2, sizeof id2), 0);
  assert_string_equal(q(t, id2, 0, 0), "");

  /* Shrink: blocks past the end are forgotten, the rest keep their epochs. */
  assert_int_equal(cbt_resize(t, 9 * 4096 + 10), 0);
  assert_string_equal(q(t, "*", 0, 0), "0+8192,32768+4096");
  assert_string_equal(q(t, id1, 0, 0), "4096+4096");
  assert_int_equal(cbt_mark(t, 9 * 4096 + 10, 1), -EINVAL);
  assert_string_equal(q(t, id2, 0, 0), "");
  /* Grow again: the area that came back counts as changed. */
  assert_int_equal(cbt_resize(t, 12 * 4096), 0);
  assert_string_equal(q(t, id2, 0, 0), "36864+12288");
  assert_int_equal(cbt_resize(t, 0), -EINVAL);
  cbt_close(t);

  /* Durable, and change IDs stay valid across the resize. */
  t = open_ok(f->path, "d", 12 * 4096, 0);
  assert_null(cbt_reset_reason(t));
  assert_string_equal(q(t, id2, 0, 0), "36864+12288");
  assert_string_equal(q(t, id1, 0, 0), "4096+4096,36864+12288");
  cbt_close(t);
}

static void test_compaction(void **state)
{
  struct fx *f = *state;
  enum { N = 40, LIMIT = 8 };
  char ids[N + 1][CBT_CHANGEID_MAX];
  struct cbt *t = open_ok(f->path, "d", 64 * 4096, 4096);
  cbt_internal_set_epoch_limit(t, LIMIT);
  for (int i = 1; i <= N; i++) {
    assert_int_equal(cbt_mark(t, (uint64_t)i * 4096, 1), 0);  /* block i in epoch i */
    assert_int_equal(cbt_changeid(t, ids[i], sizeof ids[i]), 0);
    char want[16];
    snprintf(want, sizeof want, "/%d", i);
    assert_string_equal(ids[i] + 36, want);
  }
  struct cbt_info info;
  assert_int_equal(cbt_get_info(t, &info), 0);
  assert_true(info.oldest_changeid > 1);
  assert_true(info.oldest_changeid <= N - LIMIT / 2);
  assert_int_equal(info.epoch, N + 1);
  for (int i = 1; i <= N; i++) {
    if ((uint64_t)i < info.oldest_changeid) {
      expect_query_error(t, ids[i], ESTALE, "is too old");
      continue;
    }
    char want[32];
    if (i < N)
      snprintf(want, sizeof want, "%d+%d", (i + 1) * 4096, (N - i) * 4096);
    else
      want[0] = '\0';
    assert_string_equal(q(t, ids[i], 0, 0), want);
  }
  char all[32];
  snprintf(all, sizeof all, "4096+%d", N * 4096);
  assert_string_equal(q(t, "*", 0, 0), all);
  cbt_close(t);
  t = open_ok(f->path, "d", 64 * 4096, 4096);
  assert_null(cbt_reset_reason(t));
  assert_string_equal(q(t, "*", 0, 0), all);
  assert_string_equal(q(t, ids[N - 1], 0, 0), "163840+4096");
  cbt_close(t);
}

static void test_info_print(void **state)
{
  (void)state;
  struct cbt_info info = { .uuid = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0", .version = 1,
                           .granularity = 65536, .disk_size = 1099511627776ull, .epoch = 7,
                           .blocks_marked = 12345, .oldest_changeid = 0 };
  char *buf = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&buf, &len);
  assert_int_equal(cbt_info_print(&info, true, m), 0);
  fclose(m);
  assert_string_equal(buf, "{\"uuid\":\"0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0\",\"version\":1,"
                           "\"granularity\":65536,\"disk-size\":1099511627776,\"epoch\":7,"
                           "\"blocks-marked\":12345,\"oldest-changeid\":0}\n");
  free(buf);
  m = open_memstream(&buf, &len);
  assert_int_equal(cbt_info_print(&info, false, m), 0);
  fclose(m);
  assert_string_equal(buf, "uuid:            0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0\n"
                           "version:         1\n"
                           "granularity:     65536\n"
                           "disk-size:       1099511627776\n"
                           "epoch:           7\n"
                           "blocks-marked:   12345\n"
                           "oldest-changeid: 0\n");
  free(buf);
  FILE *full = fopen("/dev/full", "w");
  if (full) {
    assert_int_equal(cbt_info_print(&info, true, full), -EIO);
    fclose(full);
  }
}

static void test_info_read_errors(void **state)
{
  struct fx *f = *state;
  struct cbt_info info;
  assert_int_equal(cbt_info_read(f->path, &info), -ENOENT);
  assert_non_null(strstr(svm_last_error(), f->path));
  assert_int_equal(cbt_info_read(f->dir, &info), -EINVAL);
  assert_non_null(strstr(svm_last_error(), "not a regular file"));
  /* Works while a tracker has the file open. */
  struct cbt *t = open_ok(f->path, "d", 3 * MiB, 0);
  assert_int_equal(cbt_mark(t, MiB, MiB), 0);
  assert_int_equal(cbt_info_read(f->path, &info), 0);
  /* The mark is in memory and its extent (the whole 3 MiB disk) in the activity log: read
   * from the file alone, as after a crash, the logged extent counts as changed. */
  assert_int_equal(info.blocks_marked, 48);
  assert_int_equal(info.disk_size, 3 * MiB);
  cbt_close(t);
  /* Closed cleanly: pages written, log emptied, exact. */
  assert_int_equal(cbt_info_read(f->path, &info), 0);
  assert_int_equal(info.blocks_marked, 16);
}

/* ---- concurrency: every acknowledged mark is visible, group commit under contention ---- */

struct worker {
  struct cbt *t;
  unsigned seed;
  uint64_t blocks[2000];
};

static void *mark_worker(void *arg)
{
  struct worker *w = arg;
  for (int i = 0; i < 2000; i++) {
    w->blocks[i] = rand_r(&w->seed) % 4096;
    if (cbt_mark(w->t, w->blocks[i] * 4096, 4096) < 0)
      return (void *)1;
  }
  return NULL;
}

static void test_concurrent(void **state)
{
  struct fx *f = *state;
  enum { T = 4 };
  struct cbt *t = open_ok(f->path, "d", 4096 * 4096, 4096);
  static struct worker w[T];
  pthread_t th[T];
  for (int i = 0; i < T; i++) {
    w[i].t = t;
    w[i].seed = 1234 + (unsigned)i;
    pthread_create(&th[i], NULL, mark_worker, &w[i]);
  }
  /* change IDs, queries and info while the marks go on: the scans read the epochs the marks
   * publish (TSan, tools/test.sh, checks they do it without a data race) */
  char id[CBT_CHANGEID_MAX];
  for (int i = 0; i < 5; i++) {
    struct cbt_extent *qe;
    struct cbt_info qi;
    size_t qn;
    assert_int_equal(cbt_changeid(t, id, sizeof id), 0);
    assert_int_equal(cbt_query(t, "*", 0, 0, &qe, &qn), 0);
    free(qe);
    assert_int_equal(cbt_get_info(t, &qi), 0);
  }
  for (int i = 0; i < T; i++) {
    void *r;
    pthread_join(th[i], &r);
    assert_null(r);
  }
  cbt_close(t);
  t = open_ok(f->path, "d", 4096 * 4096, 0);
  assert_null(cbt_reset_reason(t));
  struct cbt_extent *e;
  size_t n;
  assert_int_equal(cbt_query(t, "*", 0, 0, &e, &n), 0);
  static uint8_t seen[4096];
  memset(seen, 0, sizeof seen);
  for (size_t i = 0; i < n; i++)
    for (uint64_t b = e[i].offset / 4096; b < (e[i].offset + e[i].length) / 4096; b++)
      seen[b] = 1;
  free(e);
  static uint8_t want[4096];
  memset(want, 0, sizeof want);
  for (int i = 0; i < T; i++)
    for (int k = 0; k < 2000; k++)
      want[w[i].blocks[k]] = 1;
  assert_memory_equal(seen, want, sizeof want);
  cbt_close(t);
}

/* The activity log under contention: 4 threads mark random blocks of a 256 MiB disk (64
 * extents) through a hot set of 4 extents, so that evictions run all the time, with a few
 * wide marks (written directly), while the background writer runs every millisecond and the
 * main thread takes change IDs and forces write-backs. Then the file is copied as it stands,
 * the tracker still open (what kill -9 would leave), and the copy must report every mark. */
struct lworker {
  struct cbt *t;
  unsigned seed;
  uint64_t off[600], len[600];
};

static void *log_worker(void *arg)
{
  struct lworker *w = arg;
  for (int i = 0; i < 600; i++) {
    bool wide = rand_r(&w->seed) % 50 == 0;
    w->len[i] = wide ? 40 * MiB : 4096;
    w->off[i] = (rand_r(&w->seed) % (wide ? 200 : 65536)) * (wide ? MiB : 4096);
    if (cbt_mark(w->t, w->off[i], w->len[i]) < 0)
      return (void *)1;
  }
  return NULL;
}

static void test_concurrent_log(void **state)
{
  struct fx *f = *state;
  enum { T = 4 };
  unsigned saved = cbt_io.flush_ms;
  cbt_io.flush_ms = 1;
  struct cbt *t = open_ok(f->path, "d", 256 * MiB, 4096);
  cbt_io.flush_ms = saved;
  cbt_internal_set_al_limit(t, 4);
  static struct lworker w[T];
  pthread_t th[T];
  for (int i = 0; i < T; i++) {
    w[i].t = t;
    w[i].seed = 99 + (unsigned)i;
    pthread_create(&th[i], NULL, log_worker, &w[i]);
  }
  char id[CBT_CHANGEID_MAX];
  for (int i = 0; i < 20; i++) {
    assert_int_equal(cbt_internal_flush(t, false, 1), 0);
    if (i % 4 == 0)
      assert_int_equal(cbt_changeid(t, id, sizeof id), 0);
  }
  for (int i = 0; i < T; i++) {
    void *r;
    pthread_join(th[i], &r);
    assert_null(r);
  }
  char copy[160], cmd[400];
  snprintf(copy, sizeof copy, "%s/crashed.ctk", f->dir);
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", f->path, copy);
  assert_int_equal(system(cmd), 0);
  cbt_close(t);
  for (int pass = 0; pass < 2; pass++) {      /* the crashed copy, then the clean file */
    t = open_ok(pass ? f->path : copy, "d", 256 * MiB, 0);
    assert_null(cbt_reset_reason(t));
    struct cbt_extent *e;
    size_t n;
    assert_int_equal(cbt_query(t, "*", 0, 0, &e, &n), 0);
    static uint8_t seen[65536];
    memset(seen, 0, sizeof seen);
    for (size_t i = 0; i < n; i++)
      for (uint64_t b = e[i].offset / 4096; b < (e[i].offset + e[i].length) / 4096; b++)
        seen[b] = 1;
    free(e);
    for (int i = 0; i < T; i++)
      for (int k = 0; k < 600; k++)
        for (uint64_t b = w[i].off[k] / 4096; b <= (w[i].off[k] + w[i].len[k] - 1) / 4096; b++)
          if (!seen[b])
            fail_msg("%s: block %" PRIu64 " (thread %d, mark %d) not reported",
                     pass ? "clean" : "crashed", b, i, k);
    cbt_close(t);
  }
}

static int syncs;
static int counting_fdatasync(int fd)
{
  syncs++;
  return fdatasync(fd);
}

/* A tracker moved to another file while open (a live move's switchover): the new file is
 * written from memory, so change IDs answer exactly there, the hot set comes along (a mark
 * into an extent that was hot costs no sync; a cold one still does), a reopen of the new file
 * trusts it, and it moves back the same way. */
static void test_relocate(void **state)
{
  struct fx *f = *state;
  char id[CBT_CHANGEID_MAX], other[160];
  unsigned saved = cbt_io.flush_ms;
  struct cbt *t;
  const char *want = "5242880+4096,5251072+4096,20971520+8192,41943040+4096";

  cbt_io.flush_ms = 0;          /* no background writer: it would sync at its own time */
  t = open_ok(f->path, "d", 64 * MiB, 4096);
  snprintf(other, sizeof other, "%s/other.ctk", f->dir);
  assert_int_equal(cbt_changeid(t, id, sizeof id), 0);
  assert_int_equal(cbt_mark(t, 5 * MiB, 4096), 0);
  assert_int_equal(cbt_mark(t, 20 * MiB, 4096), 0);
  assert_int_equal(cbt_relocate(t, other), 0);
  cbt_io.fdatasync = counting_fdatasync;
  syncs = 0;
  assert_int_equal(cbt_mark(t, 5 * MiB + 8192, 4096), 0);
  assert_int_equal(cbt_mark(t, 20 * MiB + 4096, 4096), 0);
  assert_int_equal(syncs, 0);                         /* hot, as before the move */
  assert_int_equal(cbt_mark(t, 40 * MiB, 4096), 0);
  assert_true(syncs > 0);                             /* cold: its own log entry */
  cbt_io.fdatasync = fdatasync;
  assert_string_equal(q(t, id, 0, 0), want);
  cbt_close(t);
  t = open_ok(other, "d", 64 * MiB, 0);               /* the new file, after a clean close */
  assert_null(cbt_open_note(t));
  assert_string_equal(q(t, id, 0, 0), want);
  assert_int_equal(cbt_relocate(t, f->path), 0);      /* and back, over the old file */
  assert_int_equal(cbt_mark(t, 60 * MiB, 4096), 0);
  cbt_close(t);
  t = open_ok(f->path, "d", 64 * MiB, 0);
  assert_string_equal(q(t, id, 0, 0),
                      "5242880+4096,5251072+4096,20971520+8192,41943040+4096,62914560+4096");
  assert_int_equal(cbt_relocate(t, "/nonexistent-dir/x.ctk"), -ENOENT);
  assert_non_null(strstr(svm_last_error(), "/nonexistent-dir/x.ctk"));
  assert_int_equal(cbt_mark(t, 61 * MiB, 4096), 0);   /* unchanged: still tracking */
  cbt_close(t);
  cbt_io.flush_ms = saved;
}

static bool exists(const char *path)
{
  struct stat st;
  return stat(path, &st) == 0;
}

/* A relocation prepared ahead: the file written whole while marks go on (hot, cold with an
 * eviction, a wide direct mark, a change ID), then the relocation writes into that same file
 * (same inode: no second whole file) and it answers exactly; a crash right after it
 * over-reports only the logged extent, so every page outside it is exact; a resize drops what
 * was prepared, and so do a cancel and a close. */
static void test_relocate_prepared(void **state)
{
  struct fx *f = *state;
  char id1[CBT_CHANGEID_MAX], id2[CBT_CHANGEID_MAX], other[160], crash[160], third[160];
  char cmd[400];
  unsigned saved = cbt_io.flush_ms;
  struct stat st0, st1;
  struct cbt *t;
  const char *want1 = "5242880+4096,5251072+4096,20971520+37748736,62914560+4096,65011712+4096";

  cbt_io.flush_ms = 0;
  snprintf(other, sizeof other, "%s/other.ctk", f->dir);
  snprintf(crash, sizeof crash, "%s/crash.ctk", f->dir);
  snprintf(third, sizeof third, "%s/third.ctk", f->dir);
  t = open_ok(f->path, "d", 64 * MiB, 4096);
  cbt_internal_set_al_limit(t, 1);                             /* one hot extent at a time */
  assert_int_equal(cbt_changeid(t, id1, sizeof id1), 0);
  assert_int_equal(cbt_mark(t, 5 * MiB, 4096), 0);
  assert_int_equal(cbt_relocate_prepare(t, other), 0);
  assert_int_equal(stat(other, &st0), 0);
  assert_int_equal(cbt_mark(t, 5 * MiB + 8192, 4096), 0);     /* hot */
  assert_int_equal(cbt_mark(t, 20 * MiB, 36 * MiB), 0);        /* 9 extents: direct */
  assert_int_equal(cbt_mark(t, 60 * MiB, 4096), 0);            /* cold: extent 1 evicted */
  assert_int_equal(cbt_changeid(t, id2, sizeof id2), 0);
  assert_int_equal(cbt_mark(t, 62 * MiB, 4096), 0);
  assert_int_equal(cbt_relocate(t, other), 0);
  assert_int_equal(stat(other, &st1), 0);
  assert_true(st0.st_ino == st1.st_ino);                       /* the prepared file itself */
  assert_string_equal(q(t, id1, 0, 0), want1);
  assert_string_equal(q(t, id2, 0, 0), "65011712+4096");

  /* A crash now: the pages are exact, the log holds extent 15. */
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", other, crash);
  assert_int_equal(system(cmd), 0);
  struct cbt *c = open_ok(crash, "d", 64 * MiB, 0);
  assert_non_null(cbt_open_note(c));
  assert_string_equal(q(c, id1, 0, 0), "5242880+4096,5251072+4096,20971520+37748736,"
                      "62914560+4194304");
  assert_string_equal(q(c, id2, 0, 0), "62914560+4194304");
  cbt_close(c);

  assert_int_equal(cbt_mark(t, 63 * MiB, 4096), 0);            /* tracking goes on there */
  cbt_close(t);
  t = open_ok(other, "d", 64 * MiB, 0);
  assert_null(cbt_open_note(t));
  assert_string_equal(q(t, id2, 0, 0), "65011712+4096,66060288+4096");

  /* A resize drops what was prepared; the relocation then writes the whole file. */
  assert_int_equal(cbt_relocate_prepare(t, third), 0);
  assert_true(exists(third));
  assert_int_equal(cbt_resize(t, 128 * MiB), 0);
  assert_false(exists(third));
  assert_int_equal(cbt_relocate(t, third), 0);
  assert_string_equal(q(t, id2, 0, 0), "65011712+4096,66060288+4096,67108864+67108864");
  /* A cancel, and a close, remove what was prepared. */
  assert_int_equal(cbt_relocate_prepare(t, crash), 0);
  cbt_relocate_cancel(t);
  assert_false(exists(crash));
  assert_int_equal(cbt_relocate_prepare(t, crash), 0);
  cbt_close(t);
  assert_false(exists(crash));
  t = open_ok(third, "d", 128 * MiB, 0);
  assert_string_equal(q(t, id2, 0, 0), "65011712+4096,66060288+4096,67108864+67108864");
  cbt_close(t);
  cbt_io.flush_ms = saved;
}

static int page_writes;
static ssize_t counting_pwrite(int fd, const void *buf, size_t n, off_t off)
{
  if (off >= (off_t)CTK_DATA_OFF)     /* a data page: the headers and the log lie below */
    page_writes++;
  return pwrite(fd, buf, n, off);
}

/* The background page writer writes nothing while the hot set has room (the cold epoch after
 * a change ID must not pay for it), and once the set is 3/4 full it cleans ahead, so that the
 * next eviction waits for one fdatasync, the log entry's, not two. */
static void test_writer_ahead(void **state)
{
  struct fx *f = *state;
  char id[CBT_CHANGEID_MAX];
  unsigned saved = cbt_io.flush_ms;
  cbt_io.flush_ms = 0;                /* rounds run here, explicitly */
  struct cbt *t = open_ok(f->path, "d", 256 * MiB, 4096);
  cbt_internal_set_al_limit(t, 4);
  cbt_io.pwrite = counting_pwrite;
  cbt_io.fdatasync = counting_fdatasync;
  for (uint64_t x = 0; x < 2; x++)    /* extents 0, 1: half full */
    assert_int_equal(cbt_mark(t, x * 4 * MiB, 4096), 0);
  assert_int_equal(cbt_changeid(t, id, sizeof id), 0);
  assert_int_equal(cbt_mark(t, 4096, 4096), 0);     /* cold epoch, hot extent */
  page_writes = 0;
  assert_int_equal(cbt_internal_flush(t, true, 4), 0);
  assert_int_equal(page_writes, 0);
  assert_int_equal(cbt_mark(t, 8 * MiB, 4096), 0);  /* extent 2: 3/4 full */
  assert_int_equal(cbt_internal_flush(t, true, 4), 0);
  assert_true(page_writes > 0);
  assert_int_equal(cbt_mark(t, 12 * MiB, 4096), 0); /* extent 3: full */
  assert_int_equal(cbt_internal_flush(t, true, 4), 0);
  syncs = 0;
  assert_int_equal(cbt_mark(t, 16 * MiB, 4096), 0); /* extent 4 evicts extent 0, clean */
  assert_int_equal(syncs, 1);
  cbt_io.pwrite = pwrite;
  cbt_io.fdatasync = fdatasync;
  close_and_reopen(t, f->path, 256 * MiB, id, "4096+4096,8388608+4096,12582912+4096,16777216+4096");
  cbt_io.flush_ms = saved;
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_basic, setup, teardown),
    cmocka_unit_test_setup_teardown(test_relocate, setup, teardown),
    cmocka_unit_test_setup_teardown(test_relocate_prepared, setup, teardown),
    cmocka_unit_test_setup_teardown(test_last_partial_block, setup, teardown),
    cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
    cmocka_unit_test_setup_teardown(test_query_errors, setup, teardown),
    cmocka_unit_test_setup_teardown(test_damage, setup, teardown),
    cmocka_unit_test_setup_teardown(test_damaged_page, setup, teardown),
    cmocka_unit_test_setup_teardown(test_al_damage, setup, teardown),
    cmocka_unit_test_setup_teardown(test_upgrade_v1, setup, teardown),
    cmocka_unit_test_setup_teardown(test_upgrade_v2, setup, teardown),
    cmocka_unit_test_setup_teardown(test_enospc_recovers, setup, teardown),
    cmocka_unit_test_setup_teardown(test_stale_tmp, setup, teardown),
    cmocka_unit_test_setup_teardown(test_discard, setup, teardown),
    cmocka_unit_test_setup_teardown(test_resize, setup, teardown),
    cmocka_unit_test_setup_teardown(test_compaction, setup, teardown),
    cmocka_unit_test_setup_teardown(test_info_print, setup, teardown),
    cmocka_unit_test_setup_teardown(test_info_read_errors, setup, teardown),
    cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
    cmocka_unit_test_setup_teardown(test_concurrent_log, setup, teardown),
    cmocka_unit_test_setup_teardown(test_writer_ahead, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
