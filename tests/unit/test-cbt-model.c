/* Model-based test of the tracker: random sequences of writes, discards, change IDs, queries
 * (for random earlier change IDs, "*" and random windows), resizes, reopenings and crashes,
 * checked after every query against a plain in-memory model (the epoch of each block's last
 * write). A crash is real: a forked child marks and takes change IDs, reporting each step
 * over a pipe (intent before the call, acknowledgement after), and is killed with SIGKILL at
 * a random point; the parent reopens the file and requires every acknowledged mark to be
 * reported. A mark in flight at the kill may or may not be there, per block. Fixed seeds.
 *
 * After every crash (kill -9 or power cut) the tracker may over-report: the blocks of the
 * extents in its activity log and of the data pages torn by the crash count as written in the
 * open epoch. The test adopts them into the model (so that later checks stay exact), measures
 * them, asserts each crash's over-report is within the documented bound
 * (cbt_internal_overreport_bound: hot-set limit x extent + 8 pages x 2032 blocks) and prints
 * the largest seen over all seeds. The hot-set limit is drawn per seed (down to 1 extent, so
 * that evictions are frequent), and the lazy page writer runs at random points. */
#include <errno.h>
#include <glob.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <svmotion/cbt.h>
#include <svmotion/error.h>

#include "cbt/internal.h"

struct model {
  char path[128], dir[64];
  struct cbt *t;
  uint32_t g;
  uint64_t size, nblocks;
  uint64_t *ep;                  /* sequence of the epoch of the last write, 0 = never */
  uint64_t cur;                  /* open epoch = next change ID's sequence */
  char (*ids)[CBT_CHANGEID_MAX]; /* ids[s] for s in 1..cur-1 */
  size_t cap_ids;
  uint64_t refused_below;        /* change IDs < this were refused as too old */
  uint16_t limit;
  size_t al_limit;
  unsigned seed;
  uint64_t queries, checks, crashes, crash_acks, crash_inflight;
};

static uint64_t rnd(struct model *m, uint64_t n)
{
  uint64_t r = (uint64_t)rand_r(&m->seed) << 31 ^ (uint64_t)rand_r(&m->seed);
  return n ? r % n : 0;
}

static void reopen(struct model *m)
{
  if (m->t)
    cbt_close(m->t);
  m->t = NULL;
  int r = cbt_open(m->path, "model-disk", m->size, (uint32_t)(4096u << rnd(m, 5)), &m->t);
  if (r < 0)
    fail_msg("cbt_open: %s", svm_last_error());
  if (cbt_reset_reason(m->t))
    fail_msg("unexpected reset: %s", cbt_reset_reason(m->t));
  cbt_internal_set_epoch_limit(m->t, m->limit);
  cbt_internal_set_al_limit(m->t, m->al_limit);
}

static void add_id(struct model *m, const char *id)
{
  if (m->cur >= m->cap_ids) {
    m->cap_ids = m->cap_ids ? 2 * m->cap_ids : 64;
    m->ids = realloc(m->ids, m->cap_ids * sizeof *m->ids);
  }
  snprintf(m->ids[m->cur], CBT_CHANGEID_MAX, "%s", id);
  char want[24];
  snprintf(want, sizeof want, "/%" PRIu64, m->cur);
  assert_string_equal(id + 36, want);
  if (m->cur > 1)
    assert_memory_equal(id, m->ids[1], 36);
  m->cur++;
}

static void model_mark(struct model *m, uint64_t off, uint64_t len)
{
  for (uint64_t b = off / m->g; len && b <= (off + len - 1) / m->g; b++)
    m->ep[b] = m->cur;
}

/* Compare cbt_query(since, window) with the model. since_seq 0 = "*". */
static void check_query(struct model *m, uint64_t since_seq, uint64_t off, uint64_t len)
{
  const char *since = since_seq ? m->ids[since_seq] : "*";
  struct cbt_extent *e;
  size_t n;
  int r = cbt_query(m->t, since, off, len, &e, &n);
  m->queries++;
  uint64_t last = m->cur - 1;
  if (r == -ESTALE && since_seq) {
    /* Only old change IDs may be refused: the last limit/2 are always answered. */
    if (!strstr(svm_last_error(), "is too old") || since_seq + m->limit / 2 > last)
      fail_msg("seq %" PRIu64 " (last %" PRIu64 ") refused: %s", since_seq, last,
               svm_last_error());
    if (since_seq + 1 > m->refused_below)
      m->refused_below = since_seq + 1;
    return;
  }
  if (r < 0)
    fail_msg("query since %s: %s", since, svm_last_error());
  if (since_seq && since_seq < m->refused_below)
    fail_msg("seq %" PRIu64 " answered after an older or equal one was refused", since_seq);

  uint64_t end = len ? off + len : m->size, k = 0;
  uint64_t b = off / m->g, bend = end > off ? (end - 1) / m->g + 1 : b;
  while (b < bend) {
    while (b < bend && m->ep[b] <= since_seq)
      b++;
    if (b == bend)
      break;
    uint64_t x = b;
    while (x < bend && m->ep[x] > since_seq)
      x++;
    uint64_t s = b * m->g > off ? b * m->g : off, t = x * m->g < end ? x * m->g : end;
    if (k >= n || e[k].offset != s || e[k].length != t - s)
      fail_msg("since %s window %" PRIu64 "+%" PRIu64 ": extent %" PRIu64 " is %" PRIu64
               "+%" PRIu64 ", the model says %" PRIu64 "+%" PRIu64, since, off, len, k,
               k < n ? e[k].offset : 0, k < n ? e[k].length : 0, s, t - s);
    k++;
    b = x;
  }
  if (k != n)
    fail_msg("since %s: %zu extents, the model has %" PRIu64, since, n, k);
  free(e);
  m->checks++;
}

static void check_all(struct model *m)
{
  check_query(m, 0, 0, 0);
  for (uint64_t s = m->cur - 1; s >= 1 && s >= m->refused_below; s--)
    check_query(m, s, 0, 0);
  struct cbt_info info;
  assert_int_equal(cbt_get_info(m->t, &info), 0);
  assert_int_equal(info.epoch, m->cur);
  uint64_t marked = 0;
  for (uint64_t b = 0; b < m->nblocks; b++)
    marked += m->ep[b] != 0;
  assert_int_equal(info.blocks_marked, marked);
}

static void random_range(struct model *m, uint64_t *off, uint64_t *len)
{
  uint64_t span = rnd(m, 10) == 0 ? 3000 * (uint64_t)m->g : 6 * (uint64_t)m->g;
  *off = rnd(m, m->size);
  *len = 1 + rnd(m, span);
  if (*len > m->size - *off)
    *len = m->size - *off;
}

static void do_resize(struct model *m)
{
  uint64_t nsize = m->g * (1 + rnd(m, 6000)) - (rnd(m, 2) ? rnd(m, m->g) : 0);
  if (cbt_resize(m->t, nsize) < 0)
    fail_msg("resize to %" PRIu64 ": %s", nsize, svm_last_error());
  uint64_t nb = (nsize + m->g - 1) / m->g;
  m->ep = realloc(m->ep, nb * sizeof *m->ep);
  if (nsize > m->size) {
    uint64_t from = m->size % m->g ? m->nblocks - 1 : m->nblocks;
    for (uint64_t b = from; b < nb; b++)
      m->ep[b] = m->cur;
  }
  m->size = nsize;
  m->nblocks = nb;
}

/* ---- crashes ------------------------------------------------------------------------- */

enum { REC_MARK = 1, REC_ACK, REC_CID_INTENT, REC_CID };
struct rec {
  int type;
  uint64_t off, len;
  char id[CBT_CHANGEID_MAX];
};

static void child(struct model *m, int wfd, unsigned seed)
{
  struct cbt *t;
  m->seed = seed;
  cbt_io.flush_ms = rnd(m, 2) ? 1 : 0;        /* the background writer races with the kill */
  if (cbt_open(m->path, "model-disk", m->size, 0, &t) < 0 || cbt_reset_reason(t))
    _exit(3);
  cbt_internal_set_epoch_limit(t, m->limit);
  cbt_internal_set_al_limit(t, m->al_limit);
  for (int i = 0; i < 400; i++) {
    struct rec r = { 0 };
    if (rnd(m, 16) == 0) {
      if (cbt_internal_flush(t, rnd(m, 2), 1 + (unsigned)rnd(m, 3)) < 0)
        _exit(6);
      continue;
    }
    if (rnd(m, 8) == 0) {
      r.type = REC_CID_INTENT;
      if (write(wfd, &r, sizeof r) != sizeof r)
        _exit(4);
      if (cbt_changeid(t, r.id, sizeof r.id) < 0)
        _exit(5);
      r.type = REC_CID;
    } else {
      r.type = REC_MARK;
      random_range(m, &r.off, &r.len);
      if (write(wfd, &r, sizeof r) != sizeof r)
        _exit(4);
      if (cbt_mark(t, r.off, r.len) < 0)
        _exit(5);
      r.type = REC_ACK;
    }
    if (write(wfd, &r, sizeof r) != sizeof r)
      _exit(4);
  }
  _exit(0);
}

static uint64_t max_over_bytes, max_over_bound, all_crashes;

/* After a crash: the tracker reports, since the last change ID, a superset of what the model
 * says (every acknowledged mark); the surplus is an in-flight mark (allowed, unmeasured) or
 * the over-report of the recovery, which must stay within the bound. Both are adopted. */
static void adopt_after_crash(struct model *m, bool have_pend, uint64_t poff, uint64_t plen)
{
  struct cbt_extent *e;
  size_t n;
  const char *since = m->cur > 1 ? m->ids[m->cur - 1] : "*";
  uint64_t over = 0, bound = cbt_internal_overreport_bound(m->t);
  assert_int_equal(cbt_query(m->t, since, 0, 0, &e, &n), 0);
  for (size_t i = 0; i < n; i++)
    for (uint64_t b = e[i].offset / m->g; b <= (e[i].offset + e[i].length - 1) / m->g; b++) {
      if (m->ep[b] == m->cur)
        continue;
      bool inflight = have_pend && plen && b >= poff / m->g && b <= (poff + plen - 1) / m->g;
      over += !inflight;
      m->ep[b] = m->cur;
    }
  free(e);
  uint64_t bytes = over * m->g;
  if (bytes > bound)
    fail_msg("seed %u: a crash over-reported %" PRIu64 " bytes, the bound is %" PRIu64,
             m->seed, bytes, bound);
  if (bytes > max_over_bytes) {
    max_over_bytes = bytes;
    max_over_bound = bound;
  }
  all_crashes++;
  check_all(m);
}

static void do_crash(struct model *m)
{
  cbt_close(m->t);
  m->t = NULL;
  int p[2];
  assert_int_equal(pipe(p), 0);
  unsigned cseed = (unsigned)rnd(m, 1u << 30);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(p[0]);
    child(m, p[1], cseed);
  }
  close(p[1]);
  uint64_t kill_after = rnd(m, 400);              /* records before the kill */
  struct rec r, pend = { 0 };
  bool have_pend = false;
  for (uint64_t i = 0;; i++) {
    if (i == kill_after)
      kill(pid, SIGKILL);
    ssize_t got = read(p[0], &r, sizeof r);
    if (got == 0)
      break;
    assert_int_equal(got, sizeof r);
    switch (r.type) {
    case REC_MARK:
    case REC_CID_INTENT:
      pend = r;
      have_pend = true;
      break;
    case REC_ACK:
      model_mark(m, r.off, r.len);
      m->crash_acks++;
      have_pend = false;
      break;
    case REC_CID:
      add_id(m, r.id);
      have_pend = false;
      break;
    }
  }
  close(p[0]);
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  if (WIFEXITED(st) && WEXITSTATUS(st) != 0)
    fail_msg("crash child failed with status %d", WEXITSTATUS(st));

  reopen(m);
  m->crashes++;
  /* A kill during a compaction leaves a temporary file; opening removes it. */
  char pat[160];
  glob_t g;
  snprintf(pat, sizeof pat, "%s/*", m->dir);
  assert_int_equal(glob(pat, 0, NULL, &g), 0);
  assert_int_equal(g.gl_pathc, 1);
  globfree(&g);
  m->crash_inflight += have_pend;
  if (have_pend && pend.type == REC_CID_INTENT) {
    /* Taken durably or not at all: the tracker's epoch tells. */
    struct cbt_info info;
    assert_int_equal(cbt_get_info(m->t, &info), 0);
    if (info.epoch == m->cur + 1) {
      char id[CBT_CHANGEID_MAX];
      snprintf(id, sizeof id, "%s/%" PRIu64, info.uuid, m->cur);
      add_id(m, id);
    } else {
      assert_int_equal(info.epoch, m->cur);
    }
  }
  /* A mark in flight: each block is either in the open epoch or as before. */
  adopt_after_crash(m, have_pend && pend.type == REC_MARK, pend.off, pend.len);
}

/* A fresh temporary folder and a random disk geometry drawn from the model's seed. */
static void model_init(struct model *m, const char *name)
{
  const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  snprintf(m->dir, sizeof m->dir, "%s/%s.XXXXXX", tmp, name);
  assert_non_null(mkdtemp(m->dir));
  snprintf(m->path, sizeof m->path, "%s/disk.ctk", m->dir);
  m->g = 4096u << rnd(m, 5);
  m->size = m->g * (1 + rnd(m, 5000)) - (rnd(m, 2) ? rnd(m, m->g) : 0);
  m->nblocks = (m->size + m->g - 1) / m->g;
  m->ep = calloc(m->nblocks, sizeof *m->ep);
  assert_non_null(m->ep);
}

/* ---- driver -------------------------------------------------------------------------- */

static void run(unsigned seed, int steps)
{
  struct model m = { .seed = seed, .cur = 1 };
  model_init(&m, "test-cbt-model");
  static const uint16_t limits[] = { 4, 6, 11, 64, CTK_EPOCH_LIMIT };
  static const size_t al_limits[] = { 1, 2, 3, 8, 64, CTK_AL_MAX };
  m.limit = limits[rnd(&m, 5)];
  m.al_limit = al_limits[rnd(&m, 6)];
  int r = cbt_open(m.path, "model-disk", m.size, m.g, &m.t);
  assert_int_equal(r, 0);
  cbt_internal_set_epoch_limit(m.t, m.limit);
  cbt_internal_set_al_limit(m.t, m.al_limit);

  for (int step = 0; step < steps; step++) {
    uint64_t op = rnd(&m, 1000), off, len;
    if (op < 450) {
      random_range(&m, &off, &len);
      r = op < 400 ? cbt_mark(m.t, off, len) : cbt_discard(m.t, off, len);
      if (r < 0)
        fail_msg("mark: %s", svm_last_error());
      model_mark(&m, off, len);
    } else if (op < 560) {
      char id[CBT_CHANGEID_MAX];
      if (cbt_changeid(m.t, id, sizeof id) < 0)
        fail_msg("changeid: %s", svm_last_error());
      add_id(&m, id);
    } else if (op < 900) {
      uint64_t since = m.cur > 1 && rnd(&m, 4) ? 1 + rnd(&m, m.cur - 1) : 0;
      if (rnd(&m, 3) == 0) {
        random_range(&m, &off, &len);
      } else {
        off = 0;
        len = 0;
      }
      check_query(&m, since, off, len);
    } else if (op < 940) {
      reopen(&m);
      check_all(&m);
    } else if (op < 960) {
      do_resize(&m);
    } else if (op < 975) {
      do_crash(&m);
    } else if (op < 980) {
      if (cbt_internal_flush(m.t, rnd(&m, 2), (unsigned)rnd(&m, 3)) < 0)
        fail_msg("flush: %s", svm_last_error());
    } else if (op < 990) {
      /* Wrong change IDs are refused, never answered. */
      char bad[CBT_CHANGEID_MAX + 8];
      struct cbt_extent *e;
      size_t n;
      if (m.cur > 1) {
        snprintf(bad, sizeof bad, "%.36s/%" PRIu64, m.ids[1], m.cur + rnd(&m, 5));
        assert_int_equal(cbt_query(m.t, bad, 0, 0, &e, &n), -EINVAL);
        assert_non_null(strstr(svm_last_error(), "in the future"));
      }
      assert_int_equal(cbt_query(m.t, "not-a-change-id", 0, 0, &e, &n), -EINVAL);
    } else {
      check_all(&m);
    }
  }
  check_all(&m);
  print_message("seed %u: g=%u size=%" PRIu64 " limit=%u hot set=%zu: %d steps, %" PRIu64
                " change IDs, %" PRIu64 " queries checked, %" PRIu64 " crashes (%" PRIu64
                " acknowledged marks in crashed children, %" PRIu64 " killed in flight)\n",
                seed, m.g, m.size, m.limit, m.al_limit, steps, m.cur - 1, m.checks, m.crashes, m.crash_acks,
                m.crash_inflight);
  cbt_close(m.t);
  free(m.ep);
  free(m.ids);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", m.dir);
  assert_int_equal(system(cmd), 0);
}

static void test_model_seed1(void **state) { (void)state; run(1, 2000); }
static void test_model_seed2(void **state) { (void)state; run(2, 2000); }
static void test_model_seed3(void **state) { (void)state; run(3, 2000); }
static void test_model_seed4(void **state) { (void)state; run(4, 2000); }

/* ---- power cuts ---------------------------------------------------------------------
 * The tracker's in-place writes go through hooks that keep a "durable" image of the file:
 * a write is pending until the next fdatasync applies it. A power cut strikes at a random
 * fdatasync (which then fails, so the call in progress is never acknowledged): the file is
 * rebuilt from the durable image plus each pending write dropped, applied, or torn into a
 * random subset of its 512-byte sectors, as a disk may leave it. The reopened tracker must
 * report every acknowledged mark, with no reset. (No resize and no compaction here: those
 * write a new file and rename it, which this image does not follow.) */
static struct {
  uint8_t *durable;
  size_t size;
  struct pw {
    off_t off;
    size_t len;
    uint8_t *data;
  } pend[4096];
  size_t npend;
  long countdown;          /* fdatasyncs until the cut */
  bool cut;
  struct model *m;
} pc;

static ssize_t pc_pwrite(int fd, const void *buf, size_t n, off_t off)
{
  if (pc.cut || pc.npend == sizeof pc.pend / sizeof pc.pend[0] ||
      (uint64_t)off + n > pc.size) {
    errno = EIO;
    return -1;
  }
  ssize_t r = pwrite(fd, buf, n, off);
  if (r > 0) {
    struct pw *w = &pc.pend[pc.npend++];
    w->off = off;
    w->len = (size_t)r;
    w->data = malloc((size_t)r);
    memcpy(w->data, buf, (size_t)r);
  }
  return r;
}

static void pc_drop_pending(void)
{
  for (size_t i = 0; i < pc.npend; i++)
    free(pc.pend[i].data);
  pc.npend = 0;
}

static int pc_fdatasync(int fd)
{
  (void)fd;
  if (pc.cut || pc.countdown-- == 0) {
    pc.cut = true;
    errno = EIO;
    return -1;
  }
  for (size_t i = 0; i < pc.npend; i++)
    memcpy(pc.durable + pc.pend[i].off, pc.pend[i].data, pc.pend[i].len);
  pc_drop_pending();
  return 0;
}

static void pc_load_image(struct model *m)
{
  FILE *f = fopen(m->path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  pc.size = (size_t)ftell(f);
  rewind(f);
  pc.durable = realloc(pc.durable, pc.size);
  assert_int_equal(fread(pc.durable, 1, pc.size, f), pc.size);
  fclose(f);
  pc_drop_pending();
  pc.cut = false;
  pc.countdown = (long)rnd(m, 40);
}

/* The machine comes back: durable image + what the disk happened to keep. */
static void pc_restore(struct model *m)
{
  for (size_t i = 0; i < pc.npend; i++) {
    struct pw *w = &pc.pend[i];
    switch (rnd(m, 3)) {
    case 0:
      break;                                  /* never reached the platter */
    case 1:
      memcpy(pc.durable + w->off, w->data, w->len);
      break;
    default:                                  /* torn: some sectors new, some old */
      for (size_t sct = 0; sct < w->len; sct += 512) {
        size_t l = w->len - sct < 512 ? w->len - sct : 512;
        if (rnd(m, 2))
          memcpy(pc.durable + w->off + sct, w->data + sct, l);
      }
    }
  }
  pc_drop_pending();
  FILE *f = fopen(m->path, "r+b");
  assert_non_null(f);
  assert_int_equal(fwrite(pc.durable, 1, pc.size, f), pc.size);
  fclose(f);
}

static void run_power_cuts(unsigned seed, int steps)
{
  struct model m = { .seed = seed, .cur = 1, .limit = CTK_EPOCH_LIMIT };
  static const size_t al_limits[] = { 1, 2, 5, 64, CTK_AL_MAX };
  model_init(&m, "test-cbt-power");
  m.al_limit = al_limits[rnd(&m, 5)];
  assert_int_equal(cbt_open(m.path, "model-disk", m.size, m.g, &m.t), 0);
  cbt_internal_set_al_limit(m.t, m.al_limit);
  pc_load_image(&m);
  cbt_io.pwrite = pc_pwrite;
  cbt_io.fdatasync = pc_fdatasync;
  uint64_t cuts = 0, acked = 0, inflight_marks = 0, inflight_ids = 0, inflight_flushes = 0;

  for (int step = 0; step < steps; step++) {
    uint64_t op = rnd(&m, 100), off = 0, len = 0;
    bool is_mark = op < 75, is_flush = op >= 90 && op < 95;
    int r;
    char id[CBT_CHANGEID_MAX];
    if (is_mark) {
      random_range(&m, &off, &len);
      r = cbt_mark(m.t, off, len);
    } else if (is_flush) {
      r = cbt_internal_flush(m.t, rnd(&m, 2), 1 + (unsigned)rnd(&m, 2));
      if (r == 0)
        continue;
    } else if (op < 90) {
      r = cbt_changeid(m.t, id, sizeof id);
    } else {
      check_query(&m, m.cur > 1 && rnd(&m, 4) ? 1 + rnd(&m, m.cur - 1) : 0, 0, 0);
      continue;
    }
    if (r == 0) {
      acked++;
      if (is_mark)
        model_mark(&m, off, len);
      else
        add_id(&m, id);
      continue;
    }
    if (!pc.cut)
      fail_msg("step %d: %s", step, svm_last_error());
    /* Power cut in the middle of this call: it was never acknowledged. */
    cuts++;
    pc_restore(&m);
    cbt_close(m.t);                           /* its writes fail: the power is off */
    m.t = NULL;
    cbt_io.pwrite = pwrite;                   /* the machine is back */
    cbt_io.fdatasync = fdatasync;
    reopen(&m);                               /* fails the test on any reset */
    cbt_io.pwrite = pc_pwrite;
    cbt_io.fdatasync = pc_fdatasync;
    if (is_mark) {
      inflight_marks++;
    } else if (is_flush) {
      inflight_flushes++;
    } else {
      inflight_ids++;
      struct cbt_info info;
      assert_int_equal(cbt_get_info(m.t, &info), 0);
      if (info.epoch == m.cur + 1) {
        snprintf(id, sizeof id, "%s/%" PRIu64, info.uuid, m.cur);
        add_id(&m, id);
      } else {
        assert_int_equal(info.epoch, m.cur);
      }
    }
    adopt_after_crash(&m, is_mark, off, len);
    pc_load_image(&m);
  }
  check_all(&m);
  cbt_io.pwrite = pwrite;
  cbt_io.fdatasync = fdatasync;
  print_message("power cuts, seed %u: g=%u size=%" PRIu64 " hot set=%zu: %d steps, %" PRIu64
                " acknowledged calls, %" PRIu64 " cuts (%" PRIu64 " in a mark, %" PRIu64
                " in a change ID, %" PRIu64 " in a page write-back), %" PRIu64
                " queries checked\n", seed, m.g, m.size, m.al_limit, steps, acked, cuts,
                inflight_marks, inflight_ids, inflight_flushes, m.checks);
  cbt_close(m.t);
  free(m.ep);
  free(m.ids);
  free(pc.durable);
  pc.durable = NULL;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", m.dir);
  assert_int_equal(system(cmd), 0);
}

static void test_power_cuts(void **state)
{
  (void)state;
  run_power_cuts(11, 1500);
  run_power_cuts(12, 1500);
}

/* CBT_MODEL_SEEDS=FIRST-LAST runs those seeds instead (for soak runs); CBT_MODEL_STEPS. */
static void test_model_env(void **state)
{
  (void)state;
  unsigned a = 0, b = 0;
  int steps = getenv("CBT_MODEL_STEPS") ? atoi(getenv("CBT_MODEL_STEPS")) : 2000;
  if (sscanf(getenv("CBT_MODEL_SEEDS"), "%u-%u", &a, &b) != 2)
    fail_msg("CBT_MODEL_SEEDS: expected FIRST-LAST");
  for (unsigned s = a; s <= b; s++) {
    run(s, steps);
    run_power_cuts(s, steps);
  }
}

/* Last: the largest over-report of any crash of any seed above, against its bound. */
static void test_overreport_summary(void **state)
{
  (void)state;
  print_message("over-report after a crash: largest %" PRIu64 " bytes (%.1f MiB) over %"
                PRIu64 " crashes of all seeds; the bound for that tracker is %" PRIu64
                " bytes (hot-set limit x extent + 8 pages x 2032 blocks)\n", max_over_bytes,
                max_over_bytes / 1048576.0, all_crashes, max_over_bound);
  assert_true(all_crashes > 0);
  assert_true(max_over_bytes > 0);            /* the recovery did have something to cover */
  assert_true(max_over_bytes <= max_over_bound);
}

int main(void)
{
  cbt_io.flush_ms = 0;                        /* the parent's writer runs at random points */
  if (getenv("CBT_MODEL_SEEDS")) {
    const struct CMUnitTest soak[] = { cmocka_unit_test(test_model_env),
                                       cmocka_unit_test(test_overreport_summary) };
    return cmocka_run_group_tests(soak, NULL, NULL);
  }
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_model_seed1),
    cmocka_unit_test(test_model_seed2),
    cmocka_unit_test(test_model_seed3),
    cmocka_unit_test(test_model_seed4),
    cmocka_unit_test(test_power_cuts),
    cmocka_unit_test(test_overreport_summary),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
