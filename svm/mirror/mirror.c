/* The mirror layer (mirror.h): guest requests.
 *
 * A write, zero or trim takes its range in the region table first (parking, if a copier chunk
 * or an overlapping write holds it, until the release posts it back to its own thread), then
 * looks at the copied map: touched by the copier already (or by a mirrored request), it goes
 * to the source and, through the guard, to the destination side by side; not yet, to the
 * source only. It completes, with
 * the source's result, when both are done, and only then gives the range back - so the copier
 * never reads a range a write is still changing, and overlapping writes reach both sides one at
 * a time, in order. A destination failure has dropped the destination in the guard (which
 * answers every request still out at once); the guest never sees it.
 *
 * A FLUSH flushes both; it needs no range: mirrored writes complete only once both sides have
 * them, so whatever completed before the flush is on both.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/error.h"
#include "svm/mirror/internal.h"

enum kind { KIND_WRITE, KIND_ZERO, KIND_TRIM, KIND_FLUSH };

struct mreq {
  struct svm_mirror *m;
  struct svm_region reg;
  struct svm_io_posted node;    /* back to our thread after parking; dst side retries */
  struct svm_io_posted src_node;  /* source side retries */
  struct svm_io *io;
  enum kind kind;
  const void *buf;
  uint64_t off, len;
  unsigned flags;
  svm_io_cb cb;
  void *opaque;
  unsigned pending;             /* sides still out (+1 while issuing); this thread only */
  int64_t src_res;
  bool mirrored, dst_ok;
  bool dst_after;               /* a fast zero: the destination only once the source did it */
};

static struct svm_mirror *M(struct svm_layer *l)
{
  return l->priv;
}

void mirror_mark_copied(struct svm_mirror *m, uint64_t off, uint64_t len)
{
  uint64_t first = off >> MIRROR_GRANULE_SHIFT, last;

  if (len == 0)
    return;
  last = (off + len - 1) >> MIRROR_GRANULE_SHIFT;
  for (uint64_t i = first; i <= last && i < m->ngranules; i++)
    atomic_fetch_or_explicit(&m->copied[i / 64], UINT64_C(1) << (i % 64),
                             memory_order_relaxed);
}

static bool any_copied(struct svm_mirror *m, uint64_t off, uint64_t len)
{
  uint64_t first = off >> MIRROR_GRANULE_SHIFT, last;

  if (len == 0)
    return false;
  last = (off + len - 1) >> MIRROR_GRANULE_SHIFT;
  for (uint64_t i = first; i <= last && i < m->ngranules; i++)
    if (atomic_load_explicit(&m->copied[i / 64], memory_order_relaxed) &
        (UINT64_C(1) << (i % 64)))
      return true;
  return false;
}

/* ---- one request --------------------------------------------------------------------------- */

/* One side (or the issuing) done; the last frees q. Not inlined: gcc -O3 follows a caller
 * through two calls of it and, not knowing that `pending` counts both, warns that the
 * second reads q after the first freed it. */
__attribute__((noinline)) static void side_done(struct mreq *q)
{
  struct svm_mirror *m = q->m;
  svm_io_cb cb;
  void *opaque;
  int64_t res;

  if (--q->pending > 0)
    return;
  if (q->mirrored && q->dst_ok && q->kind != KIND_FLUSH)
    atomic_fetch_add_explicit(&m->bytes_mirrored, q->len, memory_order_relaxed);
  if (q->kind != KIND_FLUSH)
    svm_region_release(&m->rt, &q->reg);
  cb = q->cb;
  opaque = q->opaque;
  res = q->src_res;
  free(q);
  cb(opaque, res);
}

static void send_dst(struct mreq *q);

static void src_done(void *opaque, int64_t res)
{
  struct mreq *q = opaque;

  q->src_res = res;
  if (q->dst_after) {           /* the destination's turn, if the source could do it fast */
    q->dst_after = false;
    if (res >= 0)
      send_dst(q);
    else
      q->pending--;             /* nothing changed anywhere: the guest falls back, and the
                                   destination's side never runs (this one still counts) */
  }
  side_done(q);
}

/* A failed destination request has dropped the destination (guard.c): nothing to do here. */
static void dst_done(void *opaque, int64_t res)
{
  struct mreq *q = opaque;

  q->dst_ok = res >= 0;
  side_done(q);
}

static int pass(struct svm_layer *l, struct mreq *q, unsigned flags, svm_io_cb cb)
{
  switch (q->kind) {
  case KIND_WRITE:
    return svm_layer_write(l, q->io, q->buf, (size_t)q->len, q->off, flags, cb, q);
  case KIND_ZERO:
    return svm_layer_zero(l, q->io, q->off, q->len, flags, cb, q);
  case KIND_TRIM:
    return svm_layer_trim(l, q->io, q->off, q->len, flags, cb, q);
  case KIND_FLUSH:
    return svm_layer_flush(l, q->io, cb, q);
  }
  return -EINVAL;
}

/* The destination's flags: a fast zero must not fail there after it worked on the source, and
 * a thick destination keeps zeroed and trimmed ranges allocated. */
static int pass_dst(struct svm_mirror *m, struct mreq *q)
{
  struct svm_layer *g = mirror_guard_layer(m->g);
  unsigned flags = q->flags & ~(unsigned)SVM_LAYER_FAST;

  if (q->kind == KIND_TRIM && m->o.zero_allocates)     /* said as a zero keeping the blocks */
    return svm_layer_zero(g, q->io, q->off, q->len, (flags & SVM_LAYER_FUA) | SVM_LAYER_NO_HOLE,
                          dst_done, q);
  if (q->kind == KIND_ZERO && m->o.zero_allocates)
    flags |= SVM_LAYER_NO_HOLE;
  return pass(g, q, flags, dst_done);
}

static void dst_retry(void *opaque, int64_t res);

/* Send the destination's side. A full engine (-EAGAIN) is retried once one of its requests
 * completes; any other failure to queue it drops the destination (a copied range must never
 * be written to the source alone while the destination stays in the mirror). */
static void send_dst(struct mreq *q)
{
  struct svm_mirror *m = q->m;
  int r = pass_dst(m, q);

  if (r == -EAGAIN) {
    svm_io_post_on_room(q->io, &q->node, dst_retry, q);
    return;
  }
  if (r < 0) {
    if (mirror_guard_err(m->g) == 0)
      mirror_guard_drop(m->g, r, "mirror to %s: cannot send a %s at offset %llu: %s",
                        svm_layer_path(m->dst), q->kind == KIND_FLUSH ? "flush" : "write",
                        (unsigned long long)q->off, strerror(-r));
    q->dst_ok = false;
    side_done(q);
  }
}

static void dst_retry(void *opaque, int64_t res)
{
  (void)res;
  send_dst(opaque);
}

static void src_retry(void *opaque, int64_t res);

/* Send the source's side; the mirror adds requests to the caller's engine, so a full engine
 * is its business: tried again once one of its requests completes, not failed. */
static void send_src(struct mreq *q)
{
  int r = pass(q->m->layer->below, q, q->flags, src_done);

  if (r == -EAGAIN) {
    svm_io_post_on_room(q->io, &q->src_node, src_retry, q);
  } else if (r < 0) {
    q->src_res = r;
    side_done(q);
  }
}

static void src_retry(void *opaque, int64_t res)
{
  (void)res;
  send_src(opaque);
}

/* Holding the range (or a flush): go to one side or both. */
static void start(struct mreq *q)
{
  struct svm_mirror *m = q->m;

  q->mirrored = mirror_guard_err(m->g) == 0 &&
                (q->kind == KIND_FLUSH || any_copied(m, q->off, q->len));
  q->pending = 1 + 1 + q->mirrored;       /* +1: not done before both are issued */
  /* Once a byte has been written to the destination, every later request on it must be
   * too: a request mirrored because part of it was copied marks all of it (later requests
   * on it acquire after this one releases, so they see the mark). Otherwise a zero reaching
   * the source alone there would leave this write's data on a destination that the copier
   * then skips as "reads as zeros". */
  if (q->mirrored && q->kind != KIND_FLUSH)
    mirror_mark_copied(m, q->off, q->len);
  /* A fast zero may fail on the source with ENOTSUP, and must then change nothing: the
   * destination (where it is never fast: that could fail there alone) follows the source. */
  q->dst_after = q->mirrored && q->kind == KIND_ZERO && (q->flags & SVM_LAYER_FAST);
  if (q->mirrored && !q->dst_after)
    send_dst(q);
  send_src(q);
  side_done(q);
}

static void resumed(void *opaque, int64_t res)
{
  (void)res;
  start(opaque);
}

/* The region table granted a parked request (another thread, table locked): hand it home. */
static void granted(struct svm_region *r)
{
  struct mreq *q = r->opaque;

  svm_io_post_node(q->io, &q->node, resumed, q, 0);
}

uint64_t mirror_now_ns(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int submit(struct svm_layer *l, enum kind kind, struct svm_io *io, const void *buf,
                  uint64_t len, uint64_t off, unsigned flags, svm_io_cb cb, void *opaque)
{
  struct svm_mirror *m = M(l);
  struct mreq *q = calloc(1, sizeof *q);

  if (q == NULL)
    return svm_error(ENOMEM, "mirror of %s: out of memory", svm_layer_path(l));
  if (kind != KIND_FLUSH)
    atomic_store_explicit(&m->guest_ns, mirror_now_ns(), memory_order_relaxed);
  *q = (struct mreq){ .m = m, .io = io, .kind = kind, .buf = buf, .off = off, .len = len,
                      .flags = flags, .cb = cb, .opaque = opaque };
  if (kind == KIND_FLUSH) {
    start(q);
    return 0;
  }
  q->reg = (struct svm_region){ .off = off, .len = len ? len : 1, .granted = granted,
                                .opaque = q };
  if (svm_region_acquire(&m->rt, &q->reg))
    start(q);
  else
    atomic_fetch_add_explicit(&m->parked, 1, memory_order_relaxed);
  return 0;
}

static int mirror_write(struct svm_layer *l, struct svm_io *io, const void *buf, size_t len,
                        uint64_t off, unsigned flags, svm_io_cb cb, void *opaque)
{
  return submit(l, KIND_WRITE, io, buf, len, off, flags, cb, opaque);
}

static int mirror_zero(struct svm_layer *l, struct svm_io *io, uint64_t off, uint64_t len,
                       unsigned flags, svm_io_cb cb, void *opaque)
{
  return submit(l, KIND_ZERO, io, NULL, len, off, flags, cb, opaque);
}

static int mirror_trim(struct svm_layer *l, struct svm_io *io, uint64_t off, uint64_t len,
                       unsigned flags, svm_io_cb cb, void *opaque)
{
  return submit(l, KIND_TRIM, io, NULL, len, off, flags, cb, opaque);
}

static int mirror_flush(struct svm_layer *l, struct svm_io *io, svm_io_cb cb, void *opaque)
{
  return submit(l, KIND_FLUSH, io, NULL, 0, 0, 0, cb, opaque);
}

static void mirror_close(struct svm_layer *l)
{
  struct svm_mirror *m = M(l);

  mirror_guard_close(m->g);
  svm_region_table_destroy(&m->rt);
  free(m->copied);
  free(m);
}

/* Reads, block status and flush_sync pass through to the source. */
static const struct svm_layer_ops mirror_ops = {
  .kind = "mirror",
  .write = mirror_write,
  .zero = mirror_zero,
  .trim = mirror_trim,
  .flush = mirror_flush,
  .close = mirror_close,
};

/* ---- the handle ---------------------------------------------------------------------------- */

int svm_mirror_new(struct svm_layer *src, struct svm_layer *dst, const struct svm_mirror_opts *o,
                   struct svm_layer **layer_out, struct svm_mirror **out)
{
  struct svm_mirror *m;
  uint64_t budget, timeout;
  size_t words;
  int r;

  *layer_out = NULL;
  *out = NULL;
  if (src == NULL || dst == NULL)
    return svm_error(EINVAL, "mirror: needs a source and a destination layer");
  if (svm_layer_size(src) != svm_layer_size(dst))
    return svm_error(EINVAL, "mirror of %s to %s: sizes differ (%llu and %llu bytes)",
                     svm_layer_path(src), svm_layer_path(dst),
                     (unsigned long long)svm_layer_size(src),
                     (unsigned long long)svm_layer_size(dst));
  if (dst->readonly)
    return svm_error(EROFS, "mirror to %s: the destination is read-only", svm_layer_path(dst));
  if ((m = calloc(1, sizeof *m)) == NULL)
    return svm_error(ENOMEM, "mirror of %s: out of memory", svm_layer_path(src));
  if (o != NULL)
    m->o = *o;
  /* The copier's window (chunk x chunks in flight) is two: while the guest is quiet, the copy
   * engine's own (32 x 2 MiB, as svm-convert: the idle move then runs at the device's speed);
   * while it writes, two 256 KiB chunks (copier.c, pace()). What the guest feels is the
   * device's queue: a guest's sync (the tracker's activity log, its own FLUSH or FUA) waits
   * for the copier's requests already on the device. A 4 KiB write + fdatasync at depth 1
   * beside a 1 MiB O_DIRECT copy had its p99 at 1.5 ms, 0.5 ms beside a 256 KiB one, 0.47 ms
   * alone. Two chunks keep a read and a write overlapping, so the rate holds. Measured with
   * bench/migrate.sh (4 GiB, fio at 3000 IOPS, 3 rounds each): 1 x 1 MiB, 3.5-3.7 s with the
   * guest's p99 at 2.2x its p99 before the move; 1 x 256 KiB, 4.6 s at 1.4x; 2 x 256 KiB,
   * 3.4 s at 1.8x; 4 x 128 KiB, 3.3 s at 1.95x; 3 x 256 KiB, 4.0 s at 2.6x. */
  if (m->o.request_size == 0)
    m->o.request_size = SVM_MIRROR_DEFAULT_REQUEST;
  if (m->o.requests == 0)
    m->o.requests = SVM_MIRROR_DEFAULT_REQUESTS;
  if (m->o.busy_request_size == 0)
    m->o.busy_request_size = SVM_MIRROR_DEFAULT_BUSY_REQUEST;
  if (m->o.busy_requests == 0)
    m->o.busy_requests = SVM_MIRROR_DEFAULT_BUSY_REQUESTS;
  if (m->o.guest_quiet_ns == 0)
    m->o.guest_quiet_ns = MIRROR_GUEST_QUIET_NS;
  m->dst = dst;
  m->ngranules = (svm_layer_size(src) + (UINT64_C(1) << MIRROR_GRANULE_SHIFT) - 1) >>
                 MIRROR_GRANULE_SHIFT;
  words = (m->ngranules + 63) / 64;
  m->copied = calloc(words ? words : 1, sizeof *m->copied);
  if (m->copied == NULL) {
    free(m);
    return svm_error(ENOMEM, "mirror of %s: out of memory", svm_layer_path(src));
  }
  /* The copies of data in flight to dst: the copier's chunks, plus as much again for guests. */
  budget = m->o.request_size * m->o.requests;
  budget = budget < (64u << 20) ? (64u << 20) + budget : 2 * budget;
  if (m->o.buffer_budget)
    budget = m->o.buffer_budget;
  timeout = m->o.dst_timeout_ns ? m->o.dst_timeout_ns : UINT64_C(30000000000);
  if ((r = mirror_guard_new(dst, timeout, budget, &m->g)) < 0) {
    free(m->copied);
    free(m);
    return r;
  }
  svm_region_table_init(&m->rt);
  if ((r = svm_layer_new_filter(&mirror_ops, m, src, &m->layer)) < 0) {
    mirror_guard_close(m->g);
    svm_region_table_destroy(&m->rt);
    free(m->copied);
    free(m);
    return r;
  }
  *layer_out = m->layer;
  *out = m;
  return 0;
}

void svm_mirror_cancel(struct svm_mirror *m)
{
  mirror_guard_drop(m->g, -ECANCELED, "the move to %s was cancelled", svm_layer_path(m->dst));
}

int svm_mirror_status(struct svm_mirror *m)
{
  return mirror_guard_err(m->g);
}

int svm_mirror_status_msg(struct svm_mirror *m, char *msg, size_t len)
{
  return mirror_guard_status(m->g, msg, len);
}

void svm_mirror_get_counters(struct svm_mirror *m, struct svm_mirror_counters *c)
{
  *c = (struct svm_mirror_counters){
    .total = svm_layer_size(m->layer),
    .done = atomic_load_explicit(&m->done, memory_order_relaxed),
    .bytes_copied = atomic_load_explicit(&m->bytes_copied, memory_order_relaxed),
    .bytes_mirrored = atomic_load_explicit(&m->bytes_mirrored, memory_order_relaxed),
    .writes_parked = atomic_load_explicit(&m->parked, memory_order_relaxed),
    .buffer_peak = mirror_guard_peak(m->g),
  };
}
