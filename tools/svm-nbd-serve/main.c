/* svm-nbd-serve: serve one raw disk image over NBD with svmotion's export, outside svmd.
 *
 * For tests and benchmarks of the NBD server: the same export code svmd embeds, on a unix
 * socket or TCP. SIGUSR1 switches the export to a copy of the image (--swap-to), live, the way
 * a datastore move ends; SIGINT/SIGTERM stop it cleanly. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <svmotion/cbt.h>

#include "common/error.h"
#include "svm/nbd/export.h"

static const char usage_text[] =
  "Usage: svm-nbd-serve [OPTIONS] FILE\n"
  "Serve the raw disk image FILE over NBD (svmotion's export, as svmd embeds it).\n"
  "\n"
  "  --socket PATH        listen on a unix socket (default when no --tcp is given:\n"
  "                       FILE.sock)\n"
  "  --tcp ADDR:PORT      listen on TCP (PORT 0 = any free port); may be combined\n"
  "  --name NAME          export name (default: \"disk\")\n"
  "  --readonly           refuse writes\n"
  "  --threads N          I/O threads (default 2)\n"
  "  --queue-depth N      requests in flight per thread (default 128)\n"
  "  --cbt-like-hook      mark every write in an in-memory bitmap (64 KiB grain), and\n"
  "                       serve it as the meta context \"svm-test:dirty\"\n"
  "  --ctk FILE           changed-block tracking in FILE (svmotion's CBT, marks durable\n"
  "                       before each write is acknowledged); serves the contexts\n"
  "                       \"svm-cbt:<changeid>\" (and \"svm-cbt:*\": all changes)\n"
  "  --swap-to PATH       on SIGUSR1: pause, copy FILE to PATH, switch the export to\n"
  "                       PATH, resume (clients stay connected)\n"
  "  --help, --version\n"
  "\n"
  "Prints the export's URI(s) on stdout once it listens; logs to stderr.\n"
  "Exit status: 0 stopped by SIGINT/SIGTERM, 1 failure, 2 usage error.\n";

/* ---- the CBT-like hook: a dirty bitmap, and a meta context to read it back ---- */

enum { GRAIN_SHIFT = 16 };

struct dirty_map {
  uint64_t size;
  size_t words;
  _Atomic uint64_t *bits;
};

static int dirty_mark(void *opaque, uint64_t off, uint64_t len, unsigned kind)
{
  struct dirty_map *m = opaque;
  uint64_t first = off >> GRAIN_SHIFT, last = (off + len - 1) >> GRAIN_SHIFT;

  (void)kind;
  if (len == 0 || off + len > m->size)
    return svm_error(EINVAL, "dirty map: range %" PRIu64 "+%" PRIu64 " past the end", off, len);
  for (uint64_t g = first; g <= last; g++)
    atomic_fetch_or_explicit(&m->bits[g / 64], UINT64_C(1) << (g % 64), memory_order_relaxed);
  return 0;
}

static int dirty_resolve(void *opaque, const char *name)
{
  (void)opaque;
  if (strcmp(name, "svm-test:dirty") != 0)
    return svm_error(ENOENT, "%s: no such context (this server has svm-test:dirty)", name);
  return 0;
}

static int dirty_extents(void *opaque, const char *name, uint64_t off, uint64_t len,
                         struct svm_meta_extent **out, size_t *n)
{
  struct dirty_map *m = opaque;
  uint64_t end = off + len, g = off >> GRAIN_SHIFT;
  size_t cap = 0;

  (void)name;
  *out = NULL;
  *n = 0;
  for (; (g << GRAIN_SHIFT) < end; g++) {
    uint64_t s, t;
    if (!(atomic_load_explicit(&m->bits[g / 64], memory_order_relaxed) >> (g % 64) & 1))
      continue;
    s = g << GRAIN_SHIFT;
    t = (g + 1) << GRAIN_SHIFT;
    if (s < off)
      s = off;
    if (t > end)
      t = end;
    if (*n > 0 && (*out)[*n - 1].offset + (*out)[*n - 1].length == s) {
      (*out)[*n - 1].length += t - s;
      continue;
    }
    if (*n == cap) {
      struct svm_meta_extent *x = reallocarray(*out, cap = cap * 2 + 16, sizeof *x);
      if (x == NULL) {
        free(*out);
        *out = NULL;
        return svm_error(ENOMEM, "out of memory");
      }
      *out = x;
    }
    (*out)[(*n)++] = (struct svm_meta_extent){ s, t - s };
  }
  return 0;
}

/* ---- real CBT (--ctk) ---- */

static int cbt_hook(void *opaque, uint64_t off, uint64_t len, unsigned kind)
{
  return kind == SVM_WRITE_DATA ? cbt_mark(opaque, off, len) : cbt_discard(opaque, off, len);
}

enum { CBT_PREFIX_LEN = 8 };   /* "svm-cbt:" */

static int cbt_resolve(void *opaque, const char *name)
{
  struct cbt_extent *ext = NULL;
  size_t n = 0;
  /* a one-byte query checks the change ID (other disk, stale, malformed) */
  int r = cbt_query(opaque, name + CBT_PREFIX_LEN, 0, 1, &ext, &n);
  free(ext);
  return r;
}

static int cbt_extents(void *opaque, const char *name, uint64_t off, uint64_t len,
                       struct svm_meta_extent **out, size_t *n)
{
  struct cbt_extent *ext = NULL;
  int r = cbt_query(opaque, name + CBT_PREFIX_LEN, off, len, &ext, n);

  *out = NULL;
  if (r < 0)
    return r;
  if (*n > 0) {
    *out = calloc(*n, sizeof **out);
    if (*out == NULL) {
      free(ext);
      return svm_error(ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < *n; i++)
      (*out)[i] = (struct svm_meta_extent){ ext[i].offset, ext[i].length };
  }
  free(ext);
  return 0;
}

/* ---- swap ---- */

static int copy_file(const char *from, const char *to)
{
  char cmd[8192];
  int r;

  /* cp keeps holes (--sparse=always) and is what an operator would use */
  if (snprintf(cmd, sizeof cmd, "cp --sparse=always -- '%s' '%s'", from, to) >= (int)sizeof cmd
      || strchr(from, '\'') || strchr(to, '\''))
    return svm_error(EINVAL, "%s: path not supported for --swap-to", to);
  r = system(cmd);
  if (r != 0)
    return svm_error(EIO, "copying %s to %s failed (cp exit %d)", from, to, r);
  return 0;
}

static uint64_t mono_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int do_swap(struct svm_export *e, const char *cur, const char *to)
{
  struct svm_layer *nl = NULL, *old = NULL;
  uint64_t outer = 0, t0 = 0, t1 = 0, tp, td, tr;
  struct timespec ts;
  int r;

  tp = mono_ns();
  svm_export_pause(e);
  td = mono_ns();
  r = copy_file(cur, to);
  if (r == 0)
    r = svm_layer_open_raw(to, false, &nl);
  if (r == 0) {
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t0 = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    r = svm_export_swap(e, nl, &old, NULL);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t1 = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    if (r < 0)
      svm_layer_free(nl);
  }
  svm_export_resume(e, &outer);
  tr = mono_ns();
  if (r < 0)
    return r;
  svm_layer_free(old);
  /* the CLOCK_MONOTONIC times let a test line the cut up with its clients' logs */
  fprintf(stderr, "svm-nbd-serve: swapped to %s: paused %" PRIu64 " us in all (copy included), "
          "the switch itself %" PRIu64 " ns; monotonic ns: pause %" PRIu64 " drained %" PRIu64
          " switched %" PRIu64 " resumed %" PRIu64 "\n", to, outer / 1000, t1 - t0, tp, td, t1,
          tr);
  return 0;
}

int main(int argc, char **argv)
{
  static const struct option opts[] = {
    { "socket", required_argument, NULL, 's' },
    { "tcp", required_argument, NULL, 't' },
    { "name", required_argument, NULL, 'n' },
    { "readonly", no_argument, NULL, 'r' },
    { "threads", required_argument, NULL, 'T' },
    { "queue-depth", required_argument, NULL, 'q' },
    { "cbt-like-hook", no_argument, NULL, 'c' },
    { "swap-to", required_argument, NULL, 'S' },
    { "ctk", required_argument, NULL, 'k' },
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { NULL, 0, NULL, 0 },
  };
  const char *sock = NULL, *tcp = NULL, *name = "disk", *swap_to = NULL, *ctk = NULL;
  struct cbt *tracker = NULL;
  bool readonly = false, hook = false;
  unsigned threads = 0, depth = 0;
  struct svm_export_opts eo = { 0 };
  struct svm_export *e = NULL;
  struct svm_layer *l = NULL;
  struct dirty_map dm = { 0 };
  char *defsock = NULL, *cur = NULL;
  sigset_t set;
  int c, r, status = 1;

  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    char *end;
    switch (c) {
    case 's': sock = optarg; break;
    case 't': tcp = optarg; break;
    case 'n': name = optarg; break;
    case 'r': readonly = true; break;
    case 'c': hook = true; break;
    case 'S': swap_to = optarg; break;
    case 'k': ctk = optarg; break;
    case 'T':
    case 'q': {
      unsigned long v = strtoul(optarg, &end, 10);
      if (*optarg == '\0' || *end != '\0' || v == 0 || v > 4096) {
        fprintf(stderr, "svm-nbd-serve: --%s %s: expected a number 1-4096\n",
                c == 'T' ? "threads" : "queue-depth", optarg);
        return 2;
      }
      *(c == 'T' ? &threads : &depth) = (unsigned)v;
      break;
    }
    case 'h': fputs(usage_text, stdout); return 0;
    case 'V': printf("svm-nbd-serve %s\n", SVM_VERSION); return 0;
    default:
      fputs("Try 'svm-nbd-serve --help'.\n", stderr);
      return 2;
    }
  }
  if (optind != argc - 1) {
    fprintf(stderr, "svm-nbd-serve: expected exactly one FILE\nTry 'svm-nbd-serve --help'.\n");
    return 2;
  }
  if (tcp && strrchr(tcp, ':') == NULL) {
    fprintf(stderr, "svm-nbd-serve: --tcp %s: expected ADDR:PORT\n", tcp);
    return 2;
  }
  if (hook && ctk) {
    fprintf(stderr, "svm-nbd-serve: --cbt-like-hook and --ctk exclude each other\n");
    return 2;
  }
  if (sock == NULL && tcp == NULL) {
    if (asprintf(&defsock, "%s.sock", argv[optind]) < 0)
      return 1;
    sock = defsock;
  }

  /* Signals are taken by sigwait() below: block them before any thread starts. */
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);

  r = svm_layer_open_raw(argv[optind], readonly, &l);
  if (r < 0)
    goto fail;
  cur = strdup(argv[optind]);
  eo.name = name;
  eo.threads = threads;
  eo.queue_depth = depth;
  r = svm_export_new(&eo, l, &e);
  if (r < 0) {
    svm_layer_free(l);
    goto fail;
  }
  if (hook) {
    struct svm_meta_provider p = { .prefix = "svm-test:", .resolve = dirty_resolve,
                                   .extents = dirty_extents, .opaque = &dm };
    dm.size = svm_layer_size(l);
    dm.words = (size_t)(((dm.size >> GRAIN_SHIFT) + 1 + 63) / 64);
    dm.bits = calloc(dm.words, sizeof *dm.bits);
    if (dm.bits == NULL) {
      r = svm_error(ENOMEM, "out of memory");
      goto fail;
    }
    r = svm_export_set_write_hook(e, dirty_mark, &dm);
    if (r == 0)
      r = svm_export_add_meta_provider(e, &p);
    if (r < 0)
      goto fail;
  }
  if (ctk) {
    struct svm_meta_provider p = { .prefix = "svm-cbt:", .resolve = cbt_resolve,
                                   .extents = cbt_extents };
    r = cbt_open(ctk, argv[optind], svm_layer_size(l), 0, &tracker);
    if (r < 0)
      goto fail;
    if (cbt_reset_reason(tracker))
      fprintf(stderr, "svm-nbd-serve: %s\n", cbt_reset_reason(tracker));
    p.opaque = tracker;
    r = svm_export_set_write_hook(e, cbt_hook, tracker);
    if (r == 0)
      r = svm_export_add_meta_provider(e, &p);
    if (r < 0)
      goto fail;
  }
  if (sock) {
    r = svm_export_listen_unix(e, sock);
    if (r < 0)
      goto fail;
    printf("nbd+unix:///%s?socket=%s\n", name, sock);
  }
  if (tcp) {
    char *addr = strdup(tcp), *colon, *host, port[32];
    if (addr == NULL)
      goto fail;
    colon = strrchr(addr, ':');
    *colon = '\0';
    host = addr;
    if (host[0] == '[' && colon > host && colon[-1] == ']') {   /* [::1]:PORT */
      host++;
      colon[-1] = '\0';
    }
    r = svm_export_listen_tcp(e, host, colon + 1, port, sizeof port);
    if (r == 0)
      printf(strchr(host, ':') ? "nbd://[%s]:%s/%s\n" : "nbd://%s:%s/%s\n",
             *host ? host : "localhost", port, name);
    free(addr);
    if (r < 0)
      goto fail;
  }
  fflush(stdout);

  for (;;) {
    int sig;
    if (sigwait(&set, &sig) != 0)
      continue;
    if (sig == SIGUSR1) {
      if (swap_to == NULL) {
        fprintf(stderr, "svm-nbd-serve: SIGUSR1 ignored: no --swap-to\n");
        continue;
      }
      if (do_swap(e, cur, swap_to) < 0) {
        fprintf(stderr, "svm-nbd-serve: swap failed: %s\n", svm_last_error());
        continue;
      }
      free(cur);
      cur = strdup(swap_to);
      continue;
    }
    break;
  }
  status = 0;
  goto out;

fail:
  fprintf(stderr, "svm-nbd-serve: %s\n", svm_last_error());
out:
  svm_export_free(e);
  cbt_close(tracker);           /* after the export: no write can be marked any more */
  free((void *)dm.bits);
  free(defsock);
  free(cur);
  return status;
}
