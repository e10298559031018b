/* A model of the mirror under racing guests: over many seeds, GUESTS threads (as the export's
 * I/O threads: each with its own I/O engine and up to QD requests in flight) send random
 * writes (512 B to 64 KiB, some FUA), zeroes (some NO_HOLE, some FAST), trims and flushes
 * through the mirror layer while
 * the bulk copy runs, and go on after it finished. The source starts sparse (random data
 * extents, holes elsewhere); the destination is fresh (reads as zeros) or full of old data,
 * thin or thick; chunk size and chunks in flight vary per seed.
 *
 * Requests overlap freely, also in flight at once, so the model does not know the order in
 * which two overlapping requests in flight together were applied. It knows which were
 * possible: a sector holds what request X left there only if no other request to it was sent
 * after X completed (a logical clock stamps sending and completion). Every 512-byte sector a
 * write puts down names its request and its own offset, so a lost, stale or misplaced write
 * shows. At the end, for every seed:
 *   - every guest request succeeded, whatever happened to the destination;
 *   - every sector of the source holds one of its possible values;
 *   - when the destination stayed in the mirror, it equals the source byte for byte - the
 *     mirror's whole promise: one pass, and every range identical, including ranges written
 *     while being copied, into holes, or by overlapping writes (same order on both sides).
 * Half the seeds write to a plain raw destination (the copier's writes then go to its file
 * with O_DIRECT, the guests' through the page cache); the others through a fault filter.
 * One seed in four injects a destination failure (EIO or ENOSPC from a random request on);
 * one in eight makes it hang from a random request on (timeout 50 ms), its requests coming
 * back only after the mirror was freed. run() must then return that error.
 *
 * SVM_MIRROR_SEEDS=n runs n seeds (default 48); SVM_MIRROR_SEED=s runs seed s alone. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <svmotion/error.h>

#include "svm/mirror/mirror.h"
#include "test-mirror-common.h"

enum {
  DISK = 4 << 20,
  SECTOR = 512,
  NSECT = DISK / SECTOR,
  GUESTS = 3,
  QD = 6,
  OPS = 300,                    /* per guest */
  MAXLEN = 64 << 10,
};

enum kind { K_INIT, K_WRITE, K_ZERO, K_TRIM, K_FLUSH };

struct op {
  enum kind kind;
  uint64_t off, len;
  uint64_t issued, completed;   /* logical clock */
  int64_t res;
  bool fast;
};

struct model {
  unsigned seed;
  struct svm_layer *top, *dst;
  struct fault *f;
  struct op ops[GUESTS * OPS + 1];
  atomic_uint nops;
  atomic_uint_fast64_t clock;
  atomic_int failures;          /* guest requests that failed */
  atomic_int during;            /* requests completed while the copy ran */
  atomic_bool copying;
  pthread_barrier_t start;
  char *init;                   /* initial contents of the source */
};

static void stamp(char *p, uint32_t id, uint32_t sector)
{
  memcpy(p, &id, 4);
  memcpy(p + 4, &sector, 4);
  for (int i = 8; i < SECTOR; i++)
    p[i] = (char)((id * 131u + sector * 7u + (unsigned)i) % 253u + 1u);
}

struct greq {
  struct model *x;
  struct guest *g;
  uint32_t id;
  char *buf;
};

struct guest {
  struct model *x;
  unsigned seed;
  struct svm_io *io;
  unsigned inflight;
};

static void greq_done(void *opaque, int64_t res)
{
  struct greq *q = opaque;
  struct model *x = q->x;
  struct op *o = &x->ops[q->id];

  o->completed = atomic_fetch_add(&x->clock, 1) + 1;
  o->res = res;
  /* a fast zero the file system cannot do fails with ENOTSUP, changing nothing: legitimate */
  if ((res < 0 && !(res == -ENOTSUP && o->fast)) ||
      (o->kind == K_WRITE && res != (int64_t)o->len))
    atomic_fetch_add(&x->failures, 1);
  if (atomic_load(&x->copying))
    atomic_fetch_add(&x->during, 1);
  q->g->inflight--;
  free(q->buf);
  free(q);
}

static void guest_issue(struct guest *g)
{
  struct model *x = g->x;
  struct greq *q = calloc(1, sizeof *q);
  unsigned r = (unsigned)rand_r(&g->seed) % 100;
  uint64_t len = SECTOR * (1 + (uint64_t)rand_r(&g->seed) % (MAXLEN / SECTOR));
  uint64_t off = SECTOR * ((uint64_t)rand_r(&g->seed) % (NSECT - len / SECTOR + 1));
  unsigned flags = 0;
  struct op *o;
  int rc;

  assert_non_null(q);
  q->x = x;
  q->g = g;
  q->id = atomic_fetch_add(&x->nops, 1);
  o = &x->ops[q->id];
  *o = (struct op){ .off = off, .len = len };
  o->kind = r < 60 ? K_WRITE : r < 78 ? K_ZERO : r < 90 ? K_TRIM : K_FLUSH;
  if (o->kind == K_FLUSH)
    o->len = 0;
  if (o->kind == K_WRITE) {
    q->buf = malloc(len);
    assert_non_null(q->buf);
    for (uint64_t s = 0; s < len / SECTOR; s++)
      stamp(q->buf + s * SECTOR, q->id, (uint32_t)(off / SECTOR + s));
    if (rand_r(&g->seed) % 5 == 0)
      flags |= SVM_LAYER_FUA;
  }
  if (o->kind == K_ZERO && rand_r(&g->seed) % 3 == 0)
    flags |= SVM_LAYER_NO_HOLE;
  if (o->kind == K_ZERO && rand_r(&g->seed) % 3 == 0) {
    flags |= SVM_LAYER_FAST;
    o->fast = true;
  }
  g->inflight++;
  o->issued = atomic_fetch_add(&x->clock, 1) + 1;
  switch (o->kind) {
  case K_WRITE:
    rc = svm_layer_write(x->top, g->io, q->buf, len, off, flags, greq_done, q);
    break;
  case K_ZERO:
    rc = svm_layer_zero(x->top, g->io, off, len, flags, greq_done, q);
    break;
  case K_TRIM:
    rc = svm_layer_trim(x->top, g->io, off, len, 0, greq_done, q);
    break;
  default:
    rc = svm_layer_flush(x->top, g->io, greq_done, q);
    break;
  }
  if (rc < 0)
    greq_done(q, rc);
}

static void *guest_main(void *arg)
{
  struct guest *g = arg;
  unsigned sent = 0;

  pthread_barrier_wait(&g->x->start);
  while (sent < OPS || g->inflight > 0) {
    while (sent < OPS && g->inflight < 1 + (unsigned)rand_r(&g->seed) % QD) {
      guest_issue(g);
      sent++;
    }
    svm_io_reap(g->io, 0);
    if (g->inflight >= QD || (sent == OPS && g->inflight > 0)) {
      struct pollfd p = { .fd = svm_io_event_fd(g->io), .events = POLLIN };
      uint64_t v;
      if (poll(&p, 1, -1) > 0 && read(p.fd, &v, sizeof v) < 0) { /* raced */ }
    }
    if (rand_r(&g->seed) % 4 == 0)
      sched_yield();            /* let the copier in between */
  }
  /* Requests of the mirror's own still in the engine (a destination write given up at a
   * drop, still being written): run them out, as an export's I/O thread would. */
  while (svm_io_in_flight(g->io) > 0 && svm_io_reap(g->io, 1) >= 0)
    ;
  return NULL;
}

/* ---- the check ---- */

/* What sector s reads as when op o was the last to change it. */
static bool sector_is(const struct model *x, uint32_t id, uint32_t s, const char *got)
{
  static const char zero[SECTOR];
  char want[SECTOR];

  switch (x->ops[id].kind) {
  case K_INIT:
    return memcmp(got, x->init + (uint64_t)s * SECTOR, SECTOR) == 0;
  case K_WRITE:
    stamp(want, id, s);
    return memcmp(got, want, SECTOR) == 0;
  default:                      /* zero, trim: reads as zeros */
    return memcmp(got, zero, SECTOR) == 0;
  }
}

static void check_source(struct model *x, const char *src)
{
  unsigned nops = atomic_load(&x->nops);
  /* per sector: the ops that changed it */
  uint32_t **by = calloc(NSECT, sizeof *by), *cnt = calloc(NSECT, sizeof *cnt),
           *cap = calloc(NSECT, sizeof *cap);
  unsigned bad = 0;

  assert_true(by && cnt && cap);
  for (uint32_t id = 1; id < nops; id++) {
    const struct op *o = &x->ops[id];
    if (o->kind == K_FLUSH || o->res < 0)      /* a failed fast zero changed nothing */
      continue;
    for (uint64_t s = o->off / SECTOR; s < (o->off + o->len) / SECTOR; s++) {
      if (cnt[s] == cap[s]) {
        cap[s] = cap[s] * 2 + 4;
        by[s] = realloc(by[s], cap[s] * sizeof **by);
        assert_non_null(by[s]);
      }
      by[s][cnt[s]++] = id;
    }
  }
  for (uint32_t s = 0; s < NSECT; s++) {
    const char *got = src + (uint64_t)s * SECTOR;
    uint64_t top1 = 0, top2 = 0;        /* the two latest sends to this sector */
    bool ok = false;

    for (uint32_t i = 0; i < cnt[s]; i++) {
      uint64_t t = x->ops[by[s][i]].issued;
      if (t > top1) {
        top2 = top1;
        top1 = t;
      } else if (t > top2) {
        top2 = t;
      }
    }
    if (cnt[s] == 0)
      ok = sector_is(x, 0, s, got);
    for (uint32_t i = 0; i < cnt[s] && !ok; i++) {
      const struct op *o = &x->ops[by[s][i]];
      uint64_t others = o->issued == top1 ? top2 : top1;
      if (o->completed > others)        /* nothing sent to this sector after it completed */
        ok = sector_is(x, by[s][i], s, got);
    }
    if (!ok && bad++ < 5) {
      uint32_t id;
      memcpy(&id, got, 4);
      print_error("seed %u: source sector %u (offset %u) holds a value no request left there "
                  "(first word %u; %u requests touched it)\n", x->seed, s, s * SECTOR, id,
                  cnt[s]);
    }
  }
  for (uint32_t s = 0; s < NSECT; s++)
    free(by[s]);
  free(by);
  free(cnt);
  free(cap);
  if (bad)
    fail_msg("seed %u: %u sectors of the source are wrong", x->seed, bad);
}

static void check_same(struct model *x, const char *src, const char *dst)
{
  for (uint64_t s = 0; s < NSECT; s++)
    if (memcmp(src + s * SECTOR, dst + s * SECTOR, SECTOR) != 0) {
      uint32_t a, b;
      memcpy(&a, src + s * SECTOR, 4);
      memcpy(&b, dst + s * SECTOR, 4);
      fail_msg("seed %u: the destination differs from the source at offset %" PRIu64
               " (source's first word %u, destination's %u)", x->seed, s * SECTOR, a, b);
    }
}

/* ---- one seed ---- */

struct totals {
  uint64_t seeds, ops, during, parked, mirrored, copied, failures_injected, hangs;
  uint64_t budget_seeds, peak_max, plain;
};

static void run_seed(unsigned seed, struct totals *t)
{
  struct model *x = calloc(1, sizeof *x);
  struct guest g[GUESTS];
  pthread_t th[GUESTS];
  unsigned rs = seed * 2654435761u + 1;
  char *src_path = tmp_file(DISK), *dst_path = tmp_file(DISK), *src, *dst;
  static const uint64_t sizes[] = { 4096, 16384, 65536, 262144 };
  struct svm_mirror_opts o = { 0 };
  struct svm_layer *raw;
  struct svm_mirror *m;
  struct svm_mirror_counters c;
  int inject = 0, hang = 0, r, status;

  assert_non_null(x);
  x->seed = seed;
  x->init = calloc(1, DISK);
  assert_non_null(x->init);
  /* a sparse source: a few data extents of whole 64 KiB pieces */
  for (int i = 0; i < 1 + (int)(rand_r(&rs) % 12); i++) {
    uint64_t off = (uint64_t)(rand_r(&rs) % (DISK / 65536)) * 65536;
    uint64_t len = (uint64_t)(1 + rand_r(&rs) % 4) * 65536;
    if (off + len > DISK)
      len = DISK - off;
    for (uint64_t s = off / SECTOR; s < (off + len) / SECTOR; s++)
      stamp(x->init + s * SECTOR, 0, (uint32_t)s);
    file_pwrite(src_path, x->init + off, len, off);
  }
  o.dst_reads_zero = rand_r(&rs) % 3 != 0;
  if (!o.dst_reads_zero) {            /* old data everywhere */
    char *junk = malloc(DISK);
    assert_non_null(junk);
    memset(junk, 0x5a, DISK);
    file_pwrite(dst_path, junk, DISK, 0);
    free(junk);
  }
  o.zero_allocates = rand_r(&rs) % 4 == 0;
  o.request_size = sizes[rand_r(&rs) % 4];
  o.requests = 1 + (unsigned)(rand_r(&rs) % 8);
  if (rand_r(&rs) % 2)                /* small: writes wait for copies to come back */
    o.buffer_budget = (uint64_t)(1 + rand_r(&rs) % 8) * 32768;
  assert_int_equal(svm_layer_open_raw(src_path, false, &raw), 0);
  if (seed % 2 == 0 && seed % 8 != 6) {
    /* a plain raw destination: the copier writes to its file with O_DIRECT */
    assert_int_equal(svm_layer_open_raw(dst_path, false, &x->dst), 0);
    t->plain++;
  } else {
    x->dst = fault_layer(dst_path, &x->f);
  }
  if (seed % 4 == 1) {
    inject = rand_r(&rs) % 2 ? EIO : ENOSPC;
    x->f->fail_at = 1 + (int)(rand_r(&rs) % 200);
    x->f->fail_errno = inject;
  } else if (seed % 8 == 6) {
    hang = 1;
    x->f->hang_at = 1 + (int)(rand_r(&rs) % 200);
    o.dst_timeout_ns = 50 * 1000 * 1000;
  }
  assert_int_equal(svm_mirror_new(raw, x->dst, &o, &x->top, &m), 0);
  atomic_init(&x->nops, 1);                    /* op 0: the initial contents */
  x->ops[0] = (struct op){ .kind = K_INIT };
  pthread_barrier_init(&x->start, NULL, GUESTS + 1);
  for (int i = 0; i < GUESTS; i++) {
    g[i] = (struct guest){ .x = x, .seed = seed * 31u + (unsigned)i };
    assert_int_equal(svm_io_new(SVM_IO_AUTO, 64, &g[i].io), 0);
    assert_int_equal(pthread_create(&th[i], NULL, guest_main, &g[i]), 0);
  }
  atomic_store(&x->copying, true);
  pthread_barrier_wait(&x->start);
  r = svm_mirror_run(m);
  atomic_store(&x->copying, false);
  for (int i = 0; i < GUESTS; i++) {
    pthread_join(th[i], NULL);
    svm_io_free(g[i].io);
  }
  pthread_barrier_destroy(&x->start);
  status = svm_mirror_status(m);
  svm_mirror_get_counters(m, &c);

  assert_int_equal(atomic_load(&x->failures), 0);   /* no guest request failed, ever */
  if (o.buffer_budget) {
    uint64_t big = o.request_size > MAXLEN ? o.request_size : MAXLEN;
    if (c.buffer_peak > (o.buffer_budget > big ? o.buffer_budget : big))
      fail_msg("seed %u: %" PRIu64 " bytes of copies at once, over the budget of %" PRIu64,
               seed, c.buffer_peak, o.buffer_budget);
    t->budget_seeds++;
    t->peak_max = c.buffer_peak > t->peak_max ? c.buffer_peak : t->peak_max;
  }
  if (inject || hang) {
    int want = hang ? -ETIMEDOUT : -inject;
    bool hit = atomic_load(&x->f->requests) >= (hang ? x->f->hang_at : x->f->fail_at);
    if (r != 0 && r != want)
      fail_msg("seed %u: run() returned %d, the destination failed with %d", seed, r, want);
    if (hit && status != want)
      fail_msg("seed %u: status %d after the destination failed with %d", seed, status, want);
    /* 50 ms is short on a loaded machine: a healthy request may be timed out too */
    if (!hit && (r != 0 || status != 0) && !(hang && status == want))
      fail_msg("seed %u: run() %d, status %d without a failure", seed, r, status);
  } else if (r != 0 || status != 0) {
    fail_msg("seed %u: run() %d, status %d: %s", seed, r, status, svm_last_error());
  }
  svm_layer_free(x->top);
  if (hang)
    fault_release(x->dst, -EIO);               /* after the mirror is gone */
  src = file_read_all(src_path, DISK);
  dst = file_read_all(dst_path, DISK);
  check_source(x, src);
  if (status == 0)
    check_same(x, src, dst);
  t->seeds++;
  t->ops += atomic_load(&x->nops) - 1;
  t->during += (uint64_t)atomic_load(&x->during);
  t->parked += c.writes_parked;
  t->mirrored += c.bytes_mirrored;
  t->copied += c.bytes_copied;
  t->failures_injected += status != 0 && inject;
  t->hangs += status != 0 && hang;
  svm_layer_free(x->dst);
  unlink(src_path);
  unlink(dst_path);
  free(src_path);
  free(dst_path);
  free(src);
  free(dst);
  free(x->init);
  free(x);
}

static void test_model(void **state)
{
  const char *one = getenv("SVM_MIRROR_SEED"), *n = getenv("SVM_MIRROR_SEEDS");
  unsigned seeds = n ? (unsigned)atoi(n) : 48;
  struct totals t = { 0 };

  (void)state;
  if (one) {
    run_seed((unsigned)atoi(one), &t);
  } else {
    for (unsigned s = 1; s <= seeds; s++)
      run_seed(s, &t);
  }
  print_message("mirror model: %" PRIu64 " seeds, %" PRIu64 " guest requests (%" PRIu64
                " completed while copying), %" PRIu64 " parked, %" PRIu64 " bytes mirrored, "
                "%" PRIu64 " copied; destination failed in %" PRIu64 " seeds, hung in %"
                PRIu64 "; %" PRIu64 " seeds with a budget of 32-256 KiB for copies (peak %"
                PRIu64 "); %" PRIu64 " with a plain raw destination\n", t.seeds, t.ops,
                t.during, t.parked, t.mirrored, t.copied, t.failures_injected, t.hangs,
                t.budget_seeds, t.peak_max, t.plain);
  assert_true(t.during > 0);
  assert_true(t.parked > 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_model),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
