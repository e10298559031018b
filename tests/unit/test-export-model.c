/* A shadow model of the export under load, across pauses and live swaps of the layer stack.
 *
 * An export in process (2 I/O threads) serves an 8 MiB raw file to NCLIENT libnbd clients,
 * each a thread with its own handle and up to QD requests in flight: writes (any offset, 512 B
 * to 256 KiB), WRITE_ZEROES, TRIM, FLUSH and READ, at random, overlapping across clients.
 * Meanwhile the test thread cuts again and again: pause, then either check the file, or do a
 * datastore move's switchover (copy the file to a fresh one, open it as a raw layer, swap the
 * stack, check the new file) and resume.
 *
 * The model is exact because no two requests whose byte ranges overlap are ever in flight at
 * once (NBD does not order them): a client reserves its request's byte range before sending it
 * and frees it in the completion callback, after applying the acknowledged request to the
 * model; a range overlapping a reserved one waits. So every byte holds the value of the last
 * acknowledged write/zero covering it, except that after a TRIM (advisory, contents
 * unspecified) a byte may also read as zero until written again. Checked against it:
 *   - every READ during the run (its range is reserved: nothing is in flight over it);
 *   - at every cut, while paused, the file under the export, byte by byte, except the bytes
 *     of requests still in flight (held by the pause, or answered but not yet seen by their
 *     client) - this is where a write lost at the cut shows, before later writes can
 *     overwrite it;
 *   - at the end, the whole disk read through the export with libnbd, and the final file read
 *     directly.
 * Each byte a write puts down depends on the write and on the offset, so a lost, misplaced or
 * stale write differs. Every mismatch is reported as a range with its first offset, the value
 * expected (and the request that put it there) and the value found; the seed is in the failure
 * message. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <libnbd.h>

#include "common/error.h"
#include "svm/nbd/export.h"

enum {
  DISK = 8 << 20,
  BLK = 4096,
  NCLIENT = 4,
  QD = 8,                       /* requests in flight per client */
  MINLEN = 512,
  MAXLEN = 256 << 10,
  CUTS = 12,                    /* pauses of the run; 2 of 3 are swaps */
  OPS_PER_CUT = 250,            /* completed requests between two cuts */
  MAX_REPORT_LINES = 100,
};

enum { OP_WRITE, OP_ZERO, OP_TRIM, OP_FLUSH, OP_READ };
static const char *const op_name[] = { "write", "zero", "trim", "flush", "read" };

/* One request, by tag (the index in model.ops). Tag 0 is the initial contents of the disk. */
struct op {
  uint64_t off, len;
  uint8_t kind, client;
  int16_t issued_cut, acked_cut;  /* cuts done when it was sent / acknowledged (-1 = not yet) */
};

struct client;

struct req {
  struct client *c;
  bool busy;
  uint8_t kind;
  uint64_t off, len;
  uint32_t tag;
  char *buf;
};

struct client {
  struct ctx *x;
  unsigned id;
  struct nbd_handle *h;
  uint64_t rng;
  unsigned inflight;
  struct req reqs[QD];
  pthread_t thread;
};

struct ctx {
  unsigned seed;
  char dir[64], path[160], sock[128], uri[256];
  struct svm_export *e;

  pthread_mutex_t mu;           /* everything below */
  pthread_cond_t cv;            /* a range was freed, a request completed, or stop */
  uint8_t *val;                 /* the model: expected byte */
  uint8_t *may_zero;            /* trimmed since last written: zero is fine too */
  uint32_t *tag;                /* the request that put val there */
  struct op *ops;
  size_t nops, cap_ops;
  struct { uint64_t off, end; } busy[NCLIENT * QD];   /* reserved ranges, end = 0: free */
  uint64_t completed, reads_checked, bytes_written;
  unsigned cut;
  unsigned inflight_at_cuts;    /* requests in flight (held) summed over the cuts */
  bool stop;
  unsigned errors;              /* failed checks (compares with mismatches) and requests */
  unsigned report_lines;
  char *report;
  size_t report_len, report_cap;

  struct client clients[NCLIENT];
};

/* ---- helpers ---- */

static uint64_t splitmix(uint64_t *s)
{
  uint64_t z = (*s += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

static uint64_t rnd(struct client *c, uint64_t n)   /* 0 .. n-1 */
{
  return splitmix(&c->rng) % n;
}

/* The bytes request `tag` writes at [off, off+len): each depends on the tag and the offset. */
static void pattern(uint32_t tag, uint64_t off, uint64_t len, uint8_t *out)
{
  uint64_t word = 0;
  for (uint64_t i = 0; i < len; i++) {
    uint64_t o = off + i;
    if (i == 0 || (o & 7) == 0) {
      uint64_t s = ((uint64_t)tag << 40) ^ (o >> 3);
      word = splitmix(&s);
    }
    out[i] = (uint8_t)(word >> (8 * (o & 7)));
  }
}

/* Out of memory on a client thread: no cmocka assertion there (it would longjmp across
 * threads). */
static void *xrealloc(void *p, size_t n)
{
  p = realloc(p, n);
  if (p == NULL)
    abort();
  return p;
}

/* Append a line to the report (under x->mu). */
static void report(struct ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(struct ctx *x, const char *fmt, ...)
{
  va_list ap;
  char line[512];
  size_t n;

  if (x->report_lines++ == MAX_REPORT_LINES) {
    snprintf(line, sizeof line, "  ... (further lines not shown)\n");
  } else if (x->report_lines > MAX_REPORT_LINES) {
    return;
  } else {
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
  }
  n = strlen(line);
  if (x->report_len + n + 1 > x->report_cap) {
    x->report_cap = (x->report_len + n + 1) * 2;
    x->report = xrealloc(x->report, x->report_cap);
  }
  memcpy(x->report + x->report_len, line, n + 1);
  x->report_len += n;
}

static void describe_op(struct ctx *x, uint32_t tag, char *out, size_t len)
{
  const struct op *o = &x->ops[tag];
  if (tag == 0) {
    snprintf(out, len, "the initial contents");
    return;
  }
  snprintf(out, len, "%s #%" PRIu32 " of client %u at [%" PRIu64 ", +%" PRIu64 "), sent before the "
           "end of cut %d, acknowledged before the end of cut %d", op_name[o->kind], tag, o->client, o->off,
           o->len, o->issued_cut, o->acked_cut);
}

/* Compare `got` (the disk's bytes at [off, off+len)) with the model (under x->mu), skipping
 * the bytes marked in `skip` (indexed by disk offset; may be NULL). Every mismatching range is reported: its
 * offset and length, the first differing byte's expected value (and who wrote it) and the
 * value found. Returns the number of mismatching bytes. */
static uint64_t compare(struct ctx *x, const char *where, const uint8_t *got, uint64_t off,
                        uint64_t len, const uint8_t *skip)
{
  uint64_t bad = 0, i = 0;

  while (i < len) {
    uint64_t o = off + i, start, end, nbad = 0;
    bool zeros = true;
    char who[256];

    if (skip && skip[o]) {
      i++;
      continue;
    }
    if (got[i] == x->val[o] || (x->may_zero[o] && got[i] == 0)) {
      i++;
      continue;
    }
    /* a mismatching range: up to 64 matching bytes in a row may be inside it (a lost
     * write's bytes may equal the old ones by chance) */
    start = i;
    end = i;
    for (uint64_t j = i; j < len && j - end <= 64; j++) {
      uint64_t p = off + j;
      if (skip && skip[p])
        break;
      if (got[j] != x->val[p] && !(x->may_zero[p] && got[j] == 0)) {
        nbad++;
        end = j + 1;
      }
    }
    for (uint64_t j = start; j < end; j++)
      zeros = zeros && got[j] == 0;
    describe_op(x, x->tag[o], who, sizeof who);
    report(x, "  %s: mismatch at offset %" PRIu64 " (%" PRIu64 " bytes, %" PRIu64 " differ): "
           "expected 0x%02x%s (from %s), got 0x%02x%s\n", where, o, end - start, nbad,
           x->val[o], x->may_zero[o] ? " or 0x00" : "", who, got[start],
           zeros ? " (all zeros)" : "");
    bad += nbad;
    i = end;
  }
  if (bad)
    x->errors++;
  return bad;
}

/* ---- the clients ---- */

static bool overlaps_busy(struct ctx *x, uint64_t off, uint64_t end)
{
  for (unsigned i = 0; i < NCLIENT * QD; i++)
    if (x->busy[i].end != 0 && off < x->busy[i].end && x->busy[i].off < end)
      return true;
  return false;
}

static uint32_t new_op(struct ctx *x, uint8_t kind, uint8_t client, uint64_t off, uint64_t len)
{
  if (x->nops == x->cap_ops) {
    x->cap_ops *= 2;
    x->ops = xrealloc(x->ops, x->cap_ops * sizeof *x->ops);
  }
  x->ops[x->nops] = (struct op){ .off = off, .len = len, .kind = kind, .client = client,
                                 .issued_cut = (int16_t)x->cut, .acked_cut = -1 };
  return (uint32_t)x->nops++;
}

/* Completion callback, on the client's thread inside nbd_poll(): apply the acknowledged request
 * to the model (or check the read against it), then free its range. */
static int req_done(void *opaque, int *error)
{
  struct req *q = opaque;
  struct client *c = q->c;
  struct ctx *x = c->x;
  uint64_t off = q->off, len = q->len;

  pthread_mutex_lock(&x->mu);
  if (*error) {
    report(x, "  client %u: %s #%" PRIu32 " at [%" PRIu64 ", +%" PRIu64 ") failed: %s\n", c->id,
           op_name[q->kind], q->tag, off, len, strerror(*error));
    x->errors++;
  } else {
    x->ops[q->tag].acked_cut = (int16_t)x->cut;
    switch (q->kind) {
    case OP_WRITE:
      memcpy(x->val + off, q->buf, len);
      memset(x->may_zero + off, 0, len);
      for (uint64_t i = off; i < off + len; i++)
        x->tag[i] = q->tag;
      x->bytes_written += len;
      break;
    case OP_ZERO:
      memset(x->val + off, 0, len);
      memset(x->may_zero + off, 0, len);
      for (uint64_t i = off; i < off + len; i++)
        x->tag[i] = q->tag;
      break;
    case OP_TRIM:
      memset(x->may_zero + off, 1, len);
      break;
    case OP_READ: {
      char where[64];
      snprintf(where, sizeof where, "client %u read #%" PRIu32, c->id, q->tag);
      compare(x, where, (const uint8_t *)q->buf, off, len, NULL);
      x->reads_checked++;
      break;
    }
    default:
      break;
    }
  }
  x->busy[c->id * QD + (unsigned)(q - c->reqs)].end = 0;
  x->completed++;
  q->busy = false;
  c->inflight--;
  pthread_cond_broadcast(&x->cv);
  pthread_mutex_unlock(&x->mu);
  return 1;   /* retire the command */
}

/* Pick a request at random; reserve its range (under x->mu). False if the range is taken. */
static bool pick(struct client *c, struct req *q)
{
  struct ctx *x = c->x;
  uint64_t r = rnd(c, 100), len, off;

  q->kind = r < 55 ? OP_WRITE : r < 63 ? OP_ZERO : r < 70 ? OP_TRIM : r < 72 ? OP_FLUSH
                   : OP_READ;
  if (q->kind == OP_FLUSH) {
    q->off = q->len = 0;
    return true;
  }
  switch (rnd(c, 5)) {          /* mostly small, some large, any alignment */
  case 0: case 1: len = MINLEN + rnd(c, 4096 - MINLEN + 1); break;
  case 2: case 3: len = MINLEN + rnd(c, (64 << 10) - MINLEN + 1); break;
  default: len = MINLEN + rnd(c, MAXLEN - MINLEN + 1); break;
  }
  off = rnd(c, DISK - len + 1);
  if (rnd(c, 4) == 0) {         /* a quarter block-aligned: the layers' aligned paths */
    off &= ~(uint64_t)(BLK - 1);
    len = (len + BLK - 1) & ~(uint64_t)(BLK - 1);
    if (len > MAXLEN)
      len = MAXLEN;
  }
  if (overlaps_busy(x, off, off + len))
    return false;
  q->off = off;
  q->len = len;
  return true;
}

static void *client_main(void *arg)
{
  struct client *c = arg;
  struct ctx *x = c->x;

  for (;;) {
    struct req *q = NULL;
    nbd_completion_callback cb;
    uint32_t flags = 0;
    int64_t r = 0;
    bool got = false;

    pthread_mutex_lock(&x->mu);
    if (x->stop || x->errors) {
      pthread_mutex_unlock(&x->mu);
      break;
    }
    for (unsigned i = 0; i < QD && q == NULL; i++)
      if (!c->reqs[i].busy)
        q = &c->reqs[i];
    if (q != NULL)
      for (int tries = 0; tries < 4 && !got; tries++)
        got = pick(c, q);
    if (!got) {
      if (c->inflight == 0) {             /* others hold the ranges: wait for one to free */
        pthread_cond_wait(&x->cv, &x->mu);
        pthread_mutex_unlock(&x->mu);
        continue;
      }
      pthread_mutex_unlock(&x->mu);
      if (nbd_poll(c->h, -1) < 0) {       /* our own completions free slots and ranges */
        pthread_mutex_lock(&x->mu);
        report(x, "  client %u: nbd_poll: %s\n", c->id, nbd_get_error());
        x->errors++;
        pthread_cond_broadcast(&x->cv);
        pthread_mutex_unlock(&x->mu);
        break;
      }
      continue;
    }
    q->busy = true;
    q->tag = new_op(x, q->kind, (uint8_t)c->id, q->off, q->len);
    x->busy[c->id * QD + (unsigned)(q - c->reqs)].off = q->off;
    x->busy[c->id * QD + (unsigned)(q - c->reqs)].end = q->len ? q->off + q->len : 0;
    c->inflight++;
    pthread_mutex_unlock(&x->mu);

    cb = (nbd_completion_callback){ .callback = req_done, .user_data = q };
    switch (q->kind) {
    case OP_WRITE:
      pattern(q->tag, q->off, q->len, (uint8_t *)q->buf);
      r = nbd_aio_pwrite(c->h, q->buf, q->len, q->off, cb,
                         rnd(c, 10) == 0 ? LIBNBD_CMD_FLAG_FUA : 0);
      break;
    case OP_ZERO:
      flags = (rnd(c, 2) ? LIBNBD_CMD_FLAG_NO_HOLE : 0) | (rnd(c, 5) ? 0 : LIBNBD_CMD_FLAG_FUA);
      r = nbd_aio_zero(c->h, q->len, q->off, cb, flags);
      break;
    case OP_TRIM:
      r = nbd_aio_trim(c->h, q->len, q->off, cb, rnd(c, 5) ? 0 : LIBNBD_CMD_FLAG_FUA);
      break;
    case OP_FLUSH:
      r = nbd_aio_flush(c->h, cb, 0);
      break;
    case OP_READ:
      r = nbd_aio_pread(c->h, q->buf, q->len, q->off, cb, 0);
      break;
    default:
      break;
    }
    if (r < 0) {
      pthread_mutex_lock(&x->mu);
      report(x, "  client %u: sending %s at [%" PRIu64 ", +%" PRIu64 "): %s\n", c->id,
             op_name[q->kind], q->off, q->len, nbd_get_error());
      x->errors++;
      q->busy = false;
      x->busy[c->id * QD + (unsigned)(q - c->reqs)].end = 0;
      c->inflight--;
      pthread_cond_broadcast(&x->cv);
      pthread_mutex_unlock(&x->mu);
      break;
    }
  }
  /* drain our requests (their completions update the model) */
  while (c->inflight > 0)
    if (nbd_poll(c->h, -1) < 0)
      break;
  return NULL;
}

/* ---- the test thread ---- */

/* The only call of svm_export_pause() here. */
static void pause_export(struct svm_export *e)
{
  if (svm_export_pause(e, 60ull * 1000 * 1000 * 1000) < 0)
    fail_msg("pause: %s", svm_last_error());
}

static void read_file(const char *path, uint8_t *buf)
{
  int fd = open(path, O_RDONLY);
  assert_true(fd >= 0);
  for (uint64_t o = 0; o < DISK;) {
    ssize_t n = pread(fd, buf + o, DISK - o, (off_t)o);
    assert_true(n > 0);
    o += (uint64_t)n;
  }
  close(fd);
}

static void copy_file(const char *from, const char *to)
{
  int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_EXCL, 0600);
  loff_t ioff = 0, ooff = 0;

  assert_true(in >= 0);
  assert_true(out >= 0);
  assert_int_equal(ftruncate(out, DISK), 0);
  while (ioff < DISK) {
    ssize_t n = copy_file_range(in, &ioff, out, &ooff, (size_t)(DISK - ioff), 0);
    assert_true(n > 0);
  }
  close(in);
  close(out);
}

/* Wait (on the condition variable, no sleeping) until `n` more requests have completed. */
static void wait_progress(struct ctx *x, uint64_t n)
{
  pthread_mutex_lock(&x->mu);
  uint64_t target = x->completed + n;
  while (x->completed < target && x->errors == 0)
    pthread_cond_wait(&x->cv, &x->mu);
  pthread_mutex_unlock(&x->mu);
}

static unsigned errors(struct ctx *x)
{
  pthread_mutex_lock(&x->mu);
  unsigned n = x->errors;
  pthread_mutex_unlock(&x->mu);
  return n;
}

/* While paused: the file under the export matches the model, but for the bytes of requests
 * in flight (sent and held by the pause, or answered and not yet seen by their client). */
static void check_file_paused(struct ctx *x, const char *path, uint8_t *buf, const char *what)
{
  static uint8_t skip[DISK];
  char where[128];
  unsigned held = 0;

  read_file(path, buf);
  pthread_mutex_lock(&x->mu);
  memset(skip, 0, sizeof skip);
  for (unsigned i = 0; i < NCLIENT * QD; i++) {
    if (x->busy[i].end == 0)
      continue;
    held++;
    memset(skip + x->busy[i].off, 1, x->busy[i].end - x->busy[i].off);
  }
  x->inflight_at_cuts += held;
  snprintf(where, sizeof where, "cut %u (%s), file %s", x->cut, what, path);
  compare(x, where, buf, 0, DISK, skip);
  x->cut++;
  pthread_mutex_unlock(&x->mu);
}

static void run_model(struct ctx *x)
{
  struct svm_export_opts o = { .name = "vm1/disk0", .threads = 2, .queue_depth = 16 };
  struct svm_layer *l, *nl, *old;
  uint8_t *buf = malloc(DISK);
  struct nbd_handle *h;
  int fd;

  assert_non_null(buf);
  /* the initial disk: the pattern of tag 0 everywhere, so that zeros and trims show */
  x->ops[x->nops++] = (struct op){ .len = DISK, .issued_cut = -1, .acked_cut = -1 };
  pattern(0, 0, DISK, x->val);
  fd = open(x->path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, x->val, DISK, 0), DISK);
  close(fd);
  assert_int_equal(svm_layer_open_raw(x->path, false, &l), 0);
  assert_int_equal(svm_export_new(&o, l, &x->e), 0);
  assert_int_equal(svm_export_listen_unix(x->e, x->sock), 0);

  for (unsigned i = 0; i < NCLIENT; i++) {
    struct client *c = &x->clients[i];
    c->x = x;
    c->id = i;
    c->rng = (uint64_t)x->seed * 1000003u + i;
    c->h = nbd_create();
    assert_non_null(c->h);
    if (nbd_connect_uri(c->h, x->uri) < 0)
      fail_msg("connect %s: %s", x->uri, nbd_get_error());
    for (unsigned j = 0; j < QD; j++) {
      c->reqs[j].c = c;
      c->reqs[j].buf = malloc(MAXLEN);
      assert_non_null(c->reqs[j].buf);
    }
  }
  for (unsigned i = 0; i < NCLIENT; i++)
    assert_int_equal(pthread_create(&x->clients[i].thread, NULL, client_main,
                                    &x->clients[i]), 0);

  for (unsigned cut = 0; cut < CUTS && errors(x) == 0; cut++) {
    wait_progress(x, OPS_PER_CUT);
    pause_export(x->e);
    if (cut % 3 == 2) {
      check_file_paused(x, x->path, buf, "pause");
    } else {
      /* the datastore move's switchover: copy what is left, switch to the copy */
      char next[160];
      snprintf(next, sizeof next, "%s/disk-%u.raw", x->dir, cut);
      copy_file(x->path, next);
      assert_int_equal(svm_layer_open_raw(next, false, &nl), 0);
      assert_int_equal(svm_export_swap(x->e, nl, &old, NULL), 0);
      svm_layer_free(old);
      unlink(x->path);
      strcpy(x->path, next);
      check_file_paused(x, x->path, buf, "swap");
    }
    assert_int_equal(svm_export_resume(x->e, NULL), 0);
  }
  wait_progress(x, OPS_PER_CUT);

  pthread_mutex_lock(&x->mu);
  x->stop = true;
  pthread_cond_broadcast(&x->cv);
  pthread_mutex_unlock(&x->mu);
  for (unsigned i = 0; i < NCLIENT; i++) {
    struct client *c = &x->clients[i];
    assert_int_equal(pthread_join(c->thread, NULL), 0);
    nbd_shutdown(c->h, 0);
    nbd_close(c->h);
    for (unsigned j = 0; j < QD; j++)
      free(c->reqs[j].buf);
  }

  /* the end: nothing in flight; through the export, then the file itself */
  h = nbd_create();
  assert_non_null(h);
  if (nbd_connect_uri(h, x->uri) < 0)
    fail_msg("connect %s: %s", x->uri, nbd_get_error());
  for (uint64_t off = 0; off < DISK; off += MAXLEN)
    if (nbd_pread(h, buf + off, MAXLEN, off, 0) < 0)
      fail_msg("seed %u: final read at %" PRIu64 ": %s", x->seed, off, nbd_get_error());
  nbd_close(h);
  pthread_mutex_lock(&x->mu);
  compare(x, "final read through the export", buf, 0, DISK, NULL);
  pthread_mutex_unlock(&x->mu);
  svm_export_free(x->e);
  x->e = NULL;
  read_file(x->path, buf);
  pthread_mutex_lock(&x->mu);
  compare(x, "final file", buf, 0, DISK, NULL);
  pthread_mutex_unlock(&x->mu);
  free(buf);
}

static int setup(void **st)
{
  struct ctx *x = calloc(1, sizeof *x);

  assert_non_null(x);
  x->seed = *(const unsigned *)*st;
  strcpy(x->dir, "/tmp/svm-model-XXXXXX");
  assert_non_null(mkdtemp(x->dir));
  snprintf(x->path, sizeof x->path, "%s/disk.raw", x->dir);
  snprintf(x->sock, sizeof x->sock, "%s/nbd.sock", x->dir);
  snprintf(x->uri, sizeof x->uri, "nbd+unix:///vm1/disk0?socket=%s", x->sock);
  pthread_mutex_init(&x->mu, NULL);
  pthread_cond_init(&x->cv, NULL);
  x->val = malloc(DISK);
  x->may_zero = calloc(DISK, 1);
  x->tag = calloc(DISK, sizeof *x->tag);
  x->cap_ops = 4096;
  x->ops = malloc(x->cap_ops * sizeof *x->ops);
  assert_true(x->val && x->may_zero && x->tag && x->ops);
  *st = x;
  return 0;
}

static int teardown(void **st)
{
  struct ctx *x = *st;
  char cmd[128];

  if (x->e)
    svm_export_free(x->e);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", x->dir);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", x->dir);
  pthread_mutex_destroy(&x->mu);
  pthread_cond_destroy(&x->cv);
  free(x->val);
  free(x->may_zero);
  free(x->tag);
  free(x->ops);
  free(x->report);
  free(x);
  return 0;
}

static void test_model(void **st)
{
  struct ctx *x = *st;

  run_model(x);
  if (x->errors) {
    /* line by line: cmocka's print functions truncate long messages */
    print_error("seed %u: %u failed checks; the model disagrees with the export:\n", x->seed,
                x->errors);
    for (char *line = x->report, *nl; line && *line; line = nl + 1) {
      nl = strchr(line, '\n');
      *nl = '\0';
      print_error("%s\n", line);
    }
    fail_msg("seed %u: %u failed checks (%zu requests, %u cuts done)", x->seed, x->errors,
             x->nops - 1, x->cut);
  }
  /* the run did what it is for: cuts under load, reads checked, all kinds of requests */
  print_message("seed %u: %zu requests, %" PRIu64 " MiB written, %" PRIu64 " reads checked, "
                "%u cuts with %u requests in flight at them\n", x->seed, x->nops - 1,
                x->bytes_written >> 20, x->reads_checked, x->cut, x->inflight_at_cuts);
  assert_int_equal(x->cut, CUTS);
  assert_true(x->reads_checked > 0);
  assert_true(x->inflight_at_cuts > 0);
}

static const unsigned seeds[] = { 1, 7, 42, 1234, 99991 };

int main(void)
{
  const struct CMUnitTest tests[] = {
    { "model, seed 1", test_model, setup, teardown, (void *)&seeds[0] },
    { "model, seed 7", test_model, setup, teardown, (void *)&seeds[1] },
    { "model, seed 42", test_model, setup, teardown, (void *)&seeds[2] },
    { "model, seed 1234", test_model, setup, teardown, (void *)&seeds[3] },
    { "model, seed 99991", test_model, setup, teardown, (void *)&seeds[4] },
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
