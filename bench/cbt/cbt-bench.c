/* cbt-bench: the costs of changed-block tracking, against the targets of issue 3, with the
 * conventions of bench/README.md: every figure over ROUNDS rounds (>= 5) as min/median/max,
 * the order of the mark loops shuffled per round, the machine's load printed.
 *
 *   mark, already marked   ns per cbt_mark() of a block already marked in the open epoch,
 *                          on SCATTERED blocks: 1 Mi random block numbers across a 1 TiB disk,
 *                          all marked beforehand (the headline figure, target <= 5 ns); also,
 *                          for reference, the same block again and again, and a 256 MiB
 *                          sequential working set
 *   mark, first in epoch   latency of a first mark into a cold extent (an activity-log entry
 *                          written + fdatasync of the .ctk in DIR: the worst case; a first
 *                          mark into a hot extent costs no I/O), 1 thread, and 8 threads
 *                          (group commit: latency and time per mark), per round the median
 *   query                  1 TiB disk, 64 KiB granularity, 1% of blocks changed over 100
 *                          epochs: warm queries since "*", 1, 50, 99 (< 10 ms), and a COLD
 *                          first query: the .ctk copied to DIR, evicted from the page cache
 *                          (posix_fadvise DONTNEED), opened, first query since change ID 1
 *                          (the open and the query timed apart)
 *   memory                 measured: VmRSS (/proc/self/status) before cbt_open() of a 1 TiB
 *                          tracker at 64 KiB and after open, after the 1% setup, after every
 *                          block marked (the per-block epochs are 32 MiB per TiB, <= 32 MiB;
 *                          malloc_trim(0) before each reading)
 *
 * Usage: cbt-bench [--quick] [--rounds N] [DIR]   DIR: a directory on the disk the tracker
 * would really live on (default $TMPDIR or /var/tmp); the 1 TiB setup runs on /dev/shm when
 * present so that its 167,000 first marks take seconds, and is copied to DIR for the cold
 * query. Exit status 1 when a call fails or a query answer is wrong. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <svmotion/cbt.h>
#include <svmotion/error.h>

#define KiB 1024ull
#define MiB (1024ull * KiB)
#define TiB (1024ull * 1024 * MiB)
#define MAX_ROUNDS 64

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

struct stat3 {
  double min, med, max;
};

static struct stat3 stats(const double *in, int n)
{
  double v[4096];
  if (n > 4096)
    n = 4096;
  memcpy(v, in, (size_t)n * sizeof *v);
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return (struct stat3){ v[0], n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2, v[n - 1] };
}

static double median_of(double *v, size_t n)
{
  qsort(v, n, sizeof *v, cmp_d);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* VmRSS of this process, KiB, after malloc_trim(): heap the C library keeps after free()
 * (e.g. the buffers of one huge mark) is not the tracker's */
static long vmrss_kib(void)
{
  malloc_trim(0);
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kib = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
      break;
  if (f)
    fclose(f);
  return kib;
}

static void die(const char *what)
{
  fprintf(stderr, "cbt-bench: %s: %s\n", what, svm_last_error());
  exit(1);
}

static uint64_t xs = 88172645463325252ull;
static uint64_t rnd(void)
{
  xs ^= xs << 13;
  xs ^= xs >> 7;
  xs ^= xs << 17;
  return xs;
}

static void row(const char *name, struct stat3 s, const char *unit, const char *target)
{
  printf("%-46s %10.3g %10.3g %10.3g  %-4s %s\n", name, s.min, s.med, s.max, unit, target);
}

static void verdict(const char *name, struct stat3 s, const char *unit, double target,
                    bool strict)
{
  char t[64];
  bool ok = strict ? s.med < target : s.med <= target;
  snprintf(t, sizeof t, "target %s %g: %s", strict ? "<" : "<=", target, ok ? "PASS" : "FAIL");
  row(name, s, unit, t);
}

static void evict(const char *path)
{
  int fd = open(path, O_RDONLY);
  if (fd < 0 || fdatasync(fd) < 0 || posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) != 0) {
    perror(path);
    exit(1);
  }
  close(fd);
}

static void copy_file(const char *from, const char *to)
{
  int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  char *buf = malloc(1 << 20);                  /* mmap'd and unmapped: no RSS left behind */
  ssize_t n;
  if (in < 0 || out < 0 || !buf) {
    perror(in < 0 ? from : to);
    exit(1);
  }
  while ((n = read(in, buf, 1 << 20)) > 0)
    if (write(out, buf, (size_t)n) != n) {
      perror(to);
      exit(1);
    }
  if (n < 0 || fsync(out) < 0) {
    perror(to);
    exit(1);
  }
  close(in);
  close(out);
  free(buf);
}

struct first_arg {
  struct cbt *t;
  uint64_t base, n;
  double *lat;
};

static void *first_worker(void *p)
{
  struct first_arg *a = p;
  for (uint64_t i = 0; i < a->n; i++) {
    double t0 = now();
    /* 64 blocks of 64 KiB apart: each mark in a 4 MiB extent not yet in the activity log */
    if (cbt_mark(a->t, (a->base + i * 64) * 64 * KiB, 4096) < 0)
      die("mark");
    a->lat[i] = now() - t0;
  }
  return NULL;
}

/* First marks: n marks of distinct unmarked blocks from `threads` threads on a fresh .ctk in
 * dir; returns the median latency, *per_mark = wall time / marks. */
static double first_marks(const char *dir, int threads, uint64_t per_thread, double *per_mark)
{
  char path[512];
  struct cbt *t;
  snprintf(path, sizeof path, "%s/cbt-bench-first.%d.ctk", dir, (int)getpid());
  unlink(path);
  if (cbt_open(path, "bench-first", 64ull * 1024 * MiB, 0, &t) < 0)
    die(path);
  pthread_t th[16];
  struct first_arg a[16];
  size_t n = (size_t)threads * per_thread;
  double *lat = calloc(n, sizeof *lat);
  double t0 = now();
  for (int i = 0; i < threads; i++) {
    a[i] = (struct first_arg){ t, (uint64_t)i * 100000, per_thread, lat + (size_t)i * per_thread };
    pthread_create(&th[i], NULL, first_worker, &a[i]);
  }
  for (int i = 0; i < threads; i++)
    pthread_join(th[i], NULL);
  *per_mark = (now() - t0) / (double)n;
  double med = median_of(lat, n);
  free(lat);
  cbt_close(t);
  unlink(path);
  return med;
}

/* One timed loop of `iters` marks of already-marked blocks; ns per mark. */
enum { LOOP_SCATTERED, LOOP_SAME, LOOP_SEQ, LOOPS };
static uint64_t *scattered;                    /* SCATTER offsets, random over the disk */
#define SCATTER (1u << 20)
static double mark_loop(struct cbt *t, int kind, long iters, uint64_t seq0)
{
  double a = now();
  switch (kind) {
  case LOOP_SCATTERED:
    for (long i = 0; i < iters; i++)
      if (cbt_mark(t, scattered[i & (SCATTER - 1)], 4096))
        die("mark");
    break;
  case LOOP_SAME:
    for (long i = 0; i < iters; i++)
      if (cbt_mark(t, 12345 * 64 * KiB, 4096))
        die("mark");
    break;
  default:
    for (long i = 0; i < iters; i++)
      if (cbt_mark(t, seq0 + (uint64_t)(i & 4095) * 64 * KiB, 4096))
        die("mark");
  }
  return (now() - a) * 1e9 / (double)iters;
}

int main(int argc, char **argv)
{
  bool quick = false;
  int rounds = 5;
  const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0)
      quick = true;
    else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
      rounds = atoi(argv[++i]);
    else if (strcmp(argv[i], "--help") == 0) {
      printf("usage: cbt-bench [--quick] [--rounds N] [DIR]\n");
      return 0;
    } else if (argv[i][0] == '-') {
      fprintf(stderr, "cbt-bench: unknown option %s\n", argv[i]);
      return 2;
    } else
      dir = argv[i];
  }
  if (rounds < 1 || rounds > MAX_ROUNDS) {
    fprintf(stderr, "cbt-bench: --rounds 1..%d\n", MAX_ROUNDS);
    return 2;
  }
  if (rounds < 5 && !quick) {
    fprintf(stderr, "cbt-bench: a result needs at least 5 rounds (--quick for a smoke test)\n");
    return 2;
  }
  const char *bigdir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : dir;
  char path[512], cold[512], warm[512];
  snprintf(path, sizeof path, "%s/cbt-bench-1tib.%d.ctk", bigdir, (int)getpid());
  snprintf(cold, sizeof cold, "%s/cbt-bench-cold.%d.ctk", dir, (int)getpid());
  snprintf(warm, sizeof warm, "%s/cbt-bench-warm.%d.ctk", bigdir, (int)getpid());

  /* ---- 1 TiB tracker, 1% of blocks changed over 100 epochs; RSS as measured ---- */
  struct cbt *t;
  if (cbt_open(warm, "warm-up", MiB, 0, &t) < 0)  /* one-time costs (library init) */
    die(warm);
  cbt_close(t);
  unlink(warm);
  scattered = malloc(SCATTER * sizeof *scattered);  /* before the RSS baseline */
  const uint64_t nblocks = TiB / (64 * KiB), per_epoch = nblocks / 100 / 100;
  for (uint32_t i = 0; i < SCATTER; i++)
    scattered[i] = (rnd() % nblocks) * 64 * KiB;
  long rss0 = vmrss_kib();
  if (cbt_open(path, "bench-1tib", TiB, 64 * KiB, &t) < 0)
    die(path);
  long rss_open = vmrss_kib();
  char ids[101][CBT_CHANGEID_MAX];
  double t0 = now();
  for (int e = 1; e <= 100; e++) {
    for (uint64_t i = 0; i < per_epoch; i++)
      if (cbt_mark(t, (rnd() % nblocks) * 64 * KiB, 4096) < 0)
        die("mark");
    if (cbt_changeid(t, ids[e], sizeof ids[e]) < 0)
      die("changeid");
  }
  double setup = now() - t0;
  long rss_setup = vmrss_kib();
  struct cbt_info info;
  cbt_get_info(t, &info);
  printf("setup: 1 TiB disk, 64 KiB blocks (%" PRIu64 "), %" PRIu64 " blocks marked (%.2f%%) "
         "over 100 epochs in %.1f s (.ctk on %s)\n", nblocks, info.blocks_marked,
         100.0 * (double)info.blocks_marked / (double)nblocks, setup, bigdir);

  /* ---- warm queries: 21 per change ID ---- */
  const char *names[] = { "*", "1", "50", "99" };
  const char *since[] = { "*", ids[1], ids[50], ids[99] };
  struct stat3 q[4];
  size_t qn[4];
  for (int k = 0; k < 4; k++) {
    double v[21];
    for (int r = 0; r < 21; r++) {
      struct cbt_extent *x;
      size_t n;
      double q0 = now();
      if (cbt_query(t, since[k], 0, 0, &x, &n) < 0)
        die("query");
      v[r] = (now() - q0) * 1e3;
      qn[k] = n;
      free(x);
    }
    q[k] = stats(v, 21);
  }

  /* the cold-query copy, of a cleanly closed file (an open one has its activity log in use,
   * whose extents a reader counts as changed, as after a crash) */
  cbt_close(t);
  copy_file(path, cold);
  if (cbt_open(path, "bench-1tib", TiB, 64 * KiB, &t) < 0)
    die(path);

  /* ---- already-marked marks: every block marked in the open epoch ---- */
  if (cbt_mark(t, 0, TiB) < 0)
    die("mark all");
  long rss_all = vmrss_kib();
  size_t mem_total = cbt_memory_bytes(t), mem_array = (size_t)nblocks * 2;
  const uint64_t seq0 = 5 * TiB / 8;
  long iters = quick ? 10000000 : 100000000;
  double ns[LOOPS][MAX_ROUNDS];
  for (int r = 0; r < rounds; r++) {
    int order[LOOPS] = { 0, 1, 2 };
    for (int i = LOOPS - 1; i > 0; i--) {        /* shuffled per round */
      int j = (int)(rnd() % (uint64_t)(i + 1)), x = order[i];
      order[i] = order[j];
      order[j] = x;
    }
    for (int i = 0; i < LOOPS; i++)
      ns[order[i]][r] = mark_loop(t, order[i], iters, seq0);
  }
  cbt_close(t);

  /* ---- cold first query: the .ctk on DIR, evicted, opened, queried ---- */
  unlink(path);
  double cold_open[MAX_ROUNDS], cold_query[MAX_ROUNDS];
  size_t cold_n = 0;
  for (int r = 0; r < rounds; r++) {
    evict(cold);
    double a = now();
    if (cbt_open(cold, "bench-1tib", TiB, 64 * KiB, &t) < 0)
      die(cold);
    double b = now();
    if (cbt_reset_reason(t)) {
      fprintf(stderr, "cbt-bench: the copied .ctk was reset: %s\n", cbt_reset_reason(t));
      return 1;
    }
    struct cbt_extent *x;
    if (cbt_query(t, ids[1], 0, 0, &x, &cold_n) < 0)
      die("cold query");
    double c = now();
    free(x);
    cbt_close(t);
    cold_open[r] = (b - a) * 1e3;
    cold_query[r] = (c - b) * 1e3;
  }
  unlink(cold);
  if (cold_n != qn[1]) {
    fprintf(stderr, "cbt-bench: cold query since 1: %zu extents, warm: %zu\n", cold_n, qn[1]);
    return 1;
  }

  /* ---- first marks (write-intent cost) on DIR ---- */
  uint64_t n1 = quick ? 50 : 300, n8 = quick ? 25 : 100;
  double lat1[MAX_ROUNDS], lat8[MAX_ROUNDS], per8[MAX_ROUNDS], per1[MAX_ROUNDS];
  for (int r = 0; r < rounds; r++) {
    if (rnd() & 1) {
      lat1[r] = first_marks(dir, 1, n1, &per1[r]) * 1e6;
      lat8[r] = first_marks(dir, 8, n8, &per8[r]) * 1e6;
    } else {
      lat8[r] = first_marks(dir, 8, n8, &per8[r]) * 1e6;
      lat1[r] = first_marks(dir, 1, n1, &per1[r]) * 1e6;
    }
    per8[r] *= 1e6;
  }

  printf("\n%d rounds (%s); min / median / max of the rounds' figures\n", rounds,
         quick ? "--quick: a smoke test, not a result" : "mark loops shuffled per round");
  printf("%-46s %10s %10s %10s  %-4s %s\n", "metric", "min", "median", "max", "unit", "target");
  verdict("mark, already marked, scattered (1 TiB)", stats(ns[LOOP_SCATTERED], rounds), "ns",
          5, false);
  row("  for reference: the same block", stats(ns[LOOP_SAME], rounds), "ns", "");
  row("  for reference: 256 MiB sequential set", stats(ns[LOOP_SEQ], rounds), "ns", "");
  char note[160];
  snprintf(note, sizeof note, "(activity-log entry + fdatasync on %s)", dir);
  row("mark, first, cold extent, 1 thread, latency", stats(lat1, rounds), "us", note);
  row("mark, first, cold extent, 8 thr, latency", stats(lat8, rounds), "us",
      "(each thread waits for its group commit)");
  row("mark, first, cold extent, 8 thr, per mark", stats(per8, rounds), "us",
      "(wall time / marks: 8 share each fdatasync)");
  for (int k = 0; k < 4; k++) {
    char name[96];
    snprintf(name, sizeof name, "query 1 TiB since %s, warm (%zu extents)", names[k], qn[k]);
    verdict(name, q[k], "ms", 10, true);
  }
  verdict("query 1 TiB since 1, COLD: first after open", stats(cold_query, rounds), "ms", 10,
          true);
  snprintf(note, sizeof note, "(32 MiB .ctk read from %s, page cache evicted)", dir);
  row("  open of that tracker, cold", stats(cold_open, rounds), "ms", note);
  double mib = 1024.0;
  struct stat3 m = { (double)(rss_all - rss0) / mib, (double)(rss_all - rss0) / mib,
                     (double)(rss_all - rss0) / mib };
  verdict("memory, 1 TiB at 64 KiB, VmRSS, all marked", m, "MiB", 32, false);
  m.min = m.med = m.max = (double)(rss_open - rss0) / mib;
  row("  VmRSS growth: after cbt_open", m, "MiB", "(the epochs are mapped, touched on use)");
  m.min = m.med = m.max = (double)(rss_setup - rss0) / mib;
  row("  VmRSS growth: after the 1% setup", m, "MiB", "(1% random blocks touch every page)");
  m.min = m.med = m.max = (double)mem_array / (double)MiB;
  row("  per-block epochs (2 bytes per block)", m, "MiB", "(cbt_memory_bytes: computed)");
  printf("%-46s %10zu %10s %10s  %-4s\n", "  fixed part (cbt_memory_bytes - epochs)",
         mem_total - mem_array, "", "", "B");
  free(scattered);
  return 0;
}
