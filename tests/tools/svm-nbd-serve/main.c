/* svm-nbd-serve: serve one raw disk image over NBD with svmotion's export, outside svmd.
 *
 * For tests and benchmarks of the NBD server: the same export code svmd embeds, on a unix
 * socket or TCP, over a layer stack built the way svmd builds one: the raw image, optionally
 * under a policy layer (svmotion's change-tracking layer with --ctk, or a small in-memory
 * dirty-bitmap filter defined here with --dirty-layer, which also shows the filter API from
 * outside svm/). SIGUSR1 switches the export to a whole new stack over a copy of the image
 * (--swap-to), live, the way a datastore move ends; SIGINT/SIGTERM stop it cleanly.
 *
 * It lives under tests/ because it uses the engine's internal headers; tools/ use the public
 * API only. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <svmotion/cbt.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "svm/disk/track.h"
#include "nfc/tls.h"
#include "svm/nbd/export.h"

static const char usage_text[] =
  "Usage: svm-nbd-serve [OPTIONS] FILE\n"
  "Serve the raw disk image FILE over NBD (svmotion's export, as svmd embeds it).\n"
  "\n"
  "  --socket PATH        listen on a unix socket (default when no --tcp is given:\n"
  "                       FILE.sock)\n"
  "  --tcp ADDR:PORT      listen on TCP (PORT 0 = any free port); may be combined\n"
  "  --tls-dir DIR        TLS for TCP clients (NBD_OPT_STARTTLS, required on TCP): x509\n"
  "                       credentials in QEMU's layout (ca-cert.pem, server-cert.pem,\n"
  "                       server-key.pem; clients present a certificate of that CA)\n"
  "  --tls-psk FILE       TLS with pre-shared keys instead (identity:hexkey lines)\n"
  "  --name NAME          export name (default: \"disk\")\n"
  "  --readonly           refuse writes\n"
  "  --threads N          I/O threads of the process-wide NBD pool (default: one per\n"
  "                       CPU, 2 to 8; SVM_NBD_THREADS overrides)\n"
  "  --queue-depth N      requests in flight per thread (default 128)\n"
  "  --dirty-layer        a filter layer that marks every write, zero and trim in an\n"
  "                       in-memory bitmap (64 KiB grain), served as the meta context\n"
  "                       \"svm-test:dirty\"\n"
  "  --ctk FILE           changed-block tracking in FILE: svmotion's tracking layer over\n"
  "                       the image (marks durable before each write is acknowledged);\n"
  "                       serves the contexts\n"
  "                       \"svm-cbt:<changeid>\" (and \"svm-cbt:*\": all changes)\n"
  "  --swap-to PATH       on SIGUSR1: pause, copy FILE to PATH, switch the export to a\n"
  "                       whole new stack over PATH (with its --ctk / --dirty-layer\n"
  "                       layer), resume (clients stay connected)\n"
  "  --help, --version\n"
  "\n"
  "Prints the export's URI(s) on stdout once it listens; logs to stderr.\n"
  "Exit status: 0 stopped by SIGINT/SIGTERM, 1 failure, 2 usage error.\n";

/* ---- the dirty-bitmap filter layer (--dirty-layer) and its meta context ---- */

enum { GRAIN_SHIFT = 16 };

struct dirty_map {
  uint64_t size;
  size_t words;
  _Atomic uint64_t *bits;
};

static int dirty_mark(struct dirty_map *m, uint64_t off, uint64_t len)
{
  uint64_t first = off >> GRAIN_SHIFT, last = (off + len - 1) >> GRAIN_SHIFT;

  if (len == 0 || off + len > m->size)
    return svm_error(EINVAL, "dirty map: range %" PRIu64 "+%" PRIu64 " past the end", off, len);
  for (uint64_t g = first; g <= last; g++)
    atomic_fetch_or_explicit(&m->bits[g / 64], UINT64_C(1) << (g % 64), memory_order_relaxed);
  return 0;
}

static int dirty_write(struct svm_layer *l, struct svm_io *io, const void *buf, size_t len,
                       uint64_t off, unsigned flags, svm_io_cb cb, void *opaque)
{
  int r = dirty_mark(l->priv, off, len);
  return r < 0 ? r : svm_layer_write(l->below, io, buf, len, off, flags, cb, opaque);
}

static int dirty_zero(struct svm_layer *l, struct svm_io *io, uint64_t off, uint64_t len,
                      unsigned flags, svm_io_cb cb, void *opaque)
{
  int r = dirty_mark(l->priv, off, len);
  return r < 0 ? r : svm_layer_zero(l->below, io, off, len, flags, cb, opaque);
}

static int dirty_trim(struct svm_layer *l, struct svm_io *io, uint64_t off, uint64_t len,
                      unsigned flags, svm_io_cb cb, void *opaque)
{
  int r = dirty_mark(l->priv, off, len);
  return r < 0 ? r : svm_layer_trim(l->below, io, off, len, flags, cb, opaque);
}

/* The map outlives any one stack (a swap builds a new layer over the same map): no close. */
static const struct svm_layer_ops dirty_ops = {
  .kind = "dirty",
  .write = dirty_write,
  .zero = dirty_zero,
  .trim = dirty_trim,
};

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

/* ---- real CBT (--ctk): the contexts svm-cbt:<changeid> ---- */

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

/* ---- the program ---- */

struct serve {
  const char *file, *sock, *tcp, *name, *swap_to, *ctk, *tls_dir, *tls_psk;
  struct nfc_tls_config *tls;
  bool readonly, dirty;
  unsigned threads, depth;
  char *defsock;
  char *cur;                    /* the image served now */
  struct cbt *tracker;
  struct dirty_map dm;
  struct svm_export *e;
};

/* Options into sv. Returns -1 to go on, else the exit status (help, version, usage error). */
static int parse_args(int argc, char **argv, struct serve *sv)
{
  static const struct option opts[] = {
    { "socket", required_argument, NULL, 's' },
    { "tcp", required_argument, NULL, 't' },
    { "name", required_argument, NULL, 'n' },
    { "readonly", no_argument, NULL, 'r' },
    { "threads", required_argument, NULL, 'T' },
    { "queue-depth", required_argument, NULL, 'q' },
    { "dirty-layer", no_argument, NULL, 'd' },
    { "swap-to", required_argument, NULL, 'S' },
    { "ctk", required_argument, NULL, 'k' },
    { "tls-dir", required_argument, NULL, 'x' },
    { "tls-psk", required_argument, NULL, 'p' },
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { NULL, 0, NULL, 0 },
  };
  int c;

  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    char *end;
    switch (c) {
    case 's': sv->sock = optarg; break;
    case 't': sv->tcp = optarg; break;
    case 'n': sv->name = optarg; break;
    case 'r': sv->readonly = true; break;
    case 'd': sv->dirty = true; break;
    case 'S': sv->swap_to = optarg; break;
    case 'k': sv->ctk = optarg; break;
    case 'x': sv->tls_dir = optarg; break;
    case 'p': sv->tls_psk = optarg; break;
    case 'T':
    case 'q': {
      unsigned long v = strtoul(optarg, &end, 10);
      if (*optarg == '\0' || *end != '\0' || v == 0 || v > 4096) {
        fprintf(stderr, "svm-nbd-serve: --%s %s: expected a number 1-4096\n",
                c == 'T' ? "threads" : "queue-depth", optarg);
        return 2;
      }
      *(c == 'T' ? &sv->threads : &sv->depth) = (unsigned)v;
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
  sv->file = argv[optind];
  if (sv->tcp && strrchr(sv->tcp, ':') == NULL) {
    fprintf(stderr, "svm-nbd-serve: --tcp %s: expected ADDR:PORT\n", sv->tcp);
    return 2;
  }
  if (sv->tls_dir && sv->tls_psk) {
    fprintf(stderr, "svm-nbd-serve: --tls-dir and --tls-psk exclude each other\n");
    return 2;
  }
  if (sv->dirty && sv->ctk) {
    fprintf(stderr, "svm-nbd-serve: --dirty-layer and --ctk exclude each other\n");
    return 2;
  }
  if (sv->sock == NULL && sv->tcp == NULL) {
    if (asprintf(&sv->defsock, "%s.sock", sv->file) < 0)
      return 1;
    sv->sock = sv->defsock;
  }
  return -1;
}

/* The stack over `path`: raw, under the policy layer asked for. */
static int open_stack(struct serve *sv, const char *path, struct svm_layer **top)
{
  struct svm_layer *raw = NULL;
  int r = svm_layer_open_raw(path, sv->readonly, &raw);

  if (r < 0)
    return r;
  if (sv->tracker)
    r = svm_layer_open_track(sv->tracker, raw, top);
  else if (sv->dirty)
    r = svm_layer_new_filter(&dirty_ops, &sv->dm, raw, top);
  else
    *top = raw;
  if (r < 0)
    svm_layer_free(raw);
  return r;
}

/* The tracker or the dirty map, before the stack that uses them. */
static int open_tracking(struct serve *sv, uint64_t size)
{
  if (sv->ctk) {
    int r = cbt_open(sv->ctk, sv->file, size, 0, &sv->tracker);
    if (r < 0)
      return r;
    if (cbt_reset_reason(sv->tracker))
      fprintf(stderr, "svm-nbd-serve: %s\n", cbt_reset_reason(sv->tracker));
  }
  if (sv->dirty) {
    sv->dm.size = size;
    sv->dm.words = (size_t)(((size >> GRAIN_SHIFT) + 1 + 63) / 64);
    sv->dm.bits = calloc(sv->dm.words, sizeof *sv->dm.bits);
    if (sv->dm.bits == NULL)
      return svm_error(ENOMEM, "out of memory");
  }
  return 0;
}

static int add_providers(struct serve *sv)
{
  struct svm_meta_provider dirty = { .prefix = "svm-test:", .resolve = dirty_resolve,
                                     .extents = dirty_extents, .opaque = &sv->dm };
  struct svm_meta_provider cbt = { .prefix = "svm-cbt:", .resolve = cbt_resolve,
                                   .extents = cbt_extents, .opaque = sv->tracker };

  if (sv->dirty)
    return svm_export_add_meta_provider(sv->e, &dirty);
  if (sv->tracker)
    return svm_export_add_meta_provider(sv->e, &cbt);
  return 0;
}

static int start_export(struct serve *sv)
{
  struct svm_export_opts eo = { .name = sv->name, .threads = sv->threads,
                                .queue_depth = sv->depth };
  struct svm_layer *top = NULL;
  struct stat st;
  int r;

  if (stat(sv->file, &st) < 0)
    return svm_error(errno, "%s: cannot open disk image: %s", sv->file, strerror(errno));
  r = open_tracking(sv, (uint64_t)st.st_size);
  if (r == 0)
    r = open_stack(sv, sv->file, &top);
  if (r < 0)
    return r;
  r = svm_export_new(&eo, top, &sv->e);
  if (r < 0) {
    svm_layer_free(top);
    return r;
  }
  if (sv->tls_dir || sv->tls_psk) {
    r = sv->tls_dir ? nfc_tls_config_x509(NFC_TLS_SERVER, sv->tls_dir, &sv->tls)
                    : nfc_tls_config_psk(NFC_TLS_SERVER, sv->tls_psk, &sv->tls);
    if (r < 0)
      return r;
    svm_export_set_tls(sv->e, sv->tls);
  }
  sv->cur = strdup(sv->file);
  return add_providers(sv);
}

static int listen_tcp(struct serve *sv)
{
  CLEANUP_FREE char *addr = strdup(sv->tcp);
  char *colon, *host, port[32];
  int r;

  if (addr == NULL)
    return svm_error(ENOMEM, "out of memory");
  colon = strrchr(addr, ':');
  *colon = '\0';
  host = addr;
  if (host[0] == '[' && colon > host && colon[-1] == ']') {   /* [::1]:PORT */
    host++;
    colon[-1] = '\0';
  }
  r = svm_export_listen_tcp(sv->e, host, colon + 1, port, sizeof port);
  if (r == 0)                       /* nbds:// when TCP clients must use TLS */
    printf(strchr(host, ':') ? "nbd%s://[%s]:%s/%s\n" : "nbd%s://%s:%s/%s\n",
           sv->tls ? "s" : "", *host ? host : "localhost", port, sv->name);
  return r;
}

static int listen_all(struct serve *sv)
{
  int r;

  if (sv->sock) {
    r = svm_export_listen_unix(sv->e, sv->sock);
    if (r < 0)
      return r;
    printf("nbd+unix:///%s?socket=%s\n", sv->name, sv->sock);
  }
  if (sv->tcp) {
    r = listen_tcp(sv);
    if (r < 0)
      return r;
  }
  fflush(stdout);
  return 0;
}

static uint64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

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

/* Pause, copy the image, swap in a whole new stack over the copy (its policy layer included),
 * resume: what a datastore move does at switchover. */
static int do_swap(struct serve *sv)
{
  struct svm_layer *nl = NULL, *old = NULL;
  uint64_t outer = 0, t0 = 0, t1 = 0, tp, td, tr;
  int r;

  tp = now_ns();
  r = svm_export_pause(sv->e, 60ull * 1000 * 1000 * 1000);
  if (r < 0)
    return r;
  td = now_ns();
  r = copy_file(sv->cur, sv->swap_to);
  if (r == 0)
    r = open_stack(sv, sv->swap_to, &nl);
  if (r == 0) {
    t0 = now_ns();
    r = svm_export_swap(sv->e, nl, &old, NULL);
    t1 = now_ns();
    if (r < 0)
      svm_layer_free(nl);
  }
  svm_export_resume(sv->e, &outer);
  tr = now_ns();
  if (r < 0)
    return r;
  svm_layer_free(old);
  free(sv->cur);
  sv->cur = strdup(sv->swap_to);
  /* the CLOCK_MONOTONIC times let a test line the cut up with its clients' logs */
  fprintf(stderr, "svm-nbd-serve: swapped to %s: paused %" PRIu64 " us in all (copy included), "
          "the switch itself %" PRIu64 " ns; monotonic ns: pause %" PRIu64 " drained %" PRIu64
          " switched %" PRIu64 " resumed %" PRIu64 "\n", sv->swap_to, outer / 1000, t1 - t0, tp,
          td, t1, tr);
  return 0;
}

/* Until SIGINT/SIGTERM; SIGUSR1 swaps. */
static void serve_signals(struct serve *sv, const sigset_t *set)
{
  for (;;) {
    int sig;
    if (sigwait(set, &sig) != 0)
      continue;
    if (sig != SIGUSR1)
      return;
    if (sv->swap_to == NULL)
      fprintf(stderr, "svm-nbd-serve: SIGUSR1 ignored: no --swap-to\n");
    else if (do_swap(sv) < 0)
      fprintf(stderr, "svm-nbd-serve: swap failed: %s\n", svm_last_error());
  }
}

int main(int argc, char **argv)
{
  struct serve sv = { .name = "disk" };
  sigset_t set;
  int status = parse_args(argc, argv, &sv);

  if (status >= 0)
    return status;
  /* Signals are taken by sigwait(): block them before any thread starts. */
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);

  status = 1;
  if (start_export(&sv) == 0 && listen_all(&sv) == 0) {
    serve_signals(&sv, &set);
    status = 0;
  } else {
    fprintf(stderr, "svm-nbd-serve: %s\n", svm_last_error());
  }
  svm_export_free(sv.e);
  nfc_tls_config_free(sv.tls);   /* after the export: its sessions are gone */
  cbt_close(sv.tracker);        /* after the export: no write can be marked any more */
  free((void *)sv.dm.bits);
  free(sv.defsock);
  free(sv.cur);
  return status;
}
