/* The destination guard (internal.h).
 *
 * Requests (struct gop) sit on one list, in arrival order, from the call until their result is
 * handed back. A write first takes budget for its copy of the data; when the budget is spent
 * it waits on the list (state WAITING) and is issued, on its own thread (svm_io_post_node), by
 * whichever completion frees enough. The watchdog thread wakes at the oldest request's
 * deadline; past it, it drops the destination.
 *
 * Dropping takes every request off the list, marks it ABANDONED and posts its callback with the
 * drop's error to the thread that owns its engine; the request's late completion, if it ever
 * comes, only frees the copy (and gives its budget back). A request is freed when both its
 * owners are done with it: the layer below and the abandonment post (refs). A request whose
 * issue post is still pending (queued) is answered by that post instead: posts run in order,
 * and an abandonment posted before a late issue post would let the caller finish and free its
 * engine with the issue post, and the request, never run.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/error.h"
#include "svm/mirror/internal.h"

enum kind { OP_WRITE, OP_ZERO, OP_TRIM, OP_FLUSH };
enum state { ST_WAITING, ST_ISSUED, ST_ABANDONED };

struct gop {
  struct mirror_guard *g;
  struct svm_layer *target;     /* where it goes: dst, or the direct way */
  struct gop *prev, *next;      /* g->ops */
  struct gop *alink;            /* drop_v's chain of abandoned requests (set under g->mu) */
  struct gop *glink;            /* grant_locked's chain of granted writes (set under g->mu):
                                   a request may be on both at once, so two fields */
  enum kind kind;
  enum state state;
  bool queued;                  /* an issue post is pending on io (set under g->mu): that post,
                                   not an abandonment post, then answers a drop */
  atomic_int refs;
  struct svm_io *io;
  const void *buf;              /* the caller's data, valid until its callback runs */
  void *copy;                   /* what is written: a copy of buf, unless borrowed */
  bool borrowed;                /* a copier write straight from buf (see submit()) */
  uint64_t off, len;
  uint64_t held;                /* budget taken (bytes) */
  unsigned flags;
  svm_io_cb cb;
  void *opaque;
  uint64_t start_ns;
  struct svm_io_posted issue_node, done_node;
};

struct mirror_guard {
  struct svm_layer layer;       /* over dst; never freed with svm_layer_free */
  struct svm_layer copier_layer;  /* over direct (or dst): the bulk copy's way */
  struct svm_layer *direct;     /* O_DIRECT writes to dst's file (direct.c), or NULL */
  struct svm_layer *dst;
  atomic_int refs;              /* the owner + every request alive */
  atomic_int err;
  pthread_mutex_t mu;
  struct gop *head, *tail;
  uint64_t budget, used, peak;
  /* Copies of large writes (the copier's chunks) are kept for reuse: a fresh multi-megabyte
   * allocation is new pages, and faulting and zeroing them cost more than the copy itself.
   * Bounded by cache_cap bytes; taken and given under mu. */
  struct cached_buf *cache;
  uint64_t cache_bytes, cache_cap;
  char msg[512];
  uint64_t timeout_ns;
  pthread_cond_t cv;
  bool stop;
  pthread_t watchdog;
};

struct cached_buf {
  struct cached_buf *next;      /* stored in the buffer itself */
  size_t len;
};

enum { CACHE_MIN = 64 * 1024, CACHE_MAX_BYTES = 128 << 20 };

static void *copy_alloc(struct mirror_guard *g, size_t len)
{
  void *p = NULL;

  if (len >= CACHE_MIN) {
    pthread_mutex_lock(&g->mu);
    for (struct cached_buf **pp = &g->cache; *pp; pp = &(*pp)->next)
      if ((*pp)->len == len) {
        p = *pp;
        *pp = (*pp)->next;
        g->cache_bytes -= len;
        break;
      }
    pthread_mutex_unlock(&g->mu);
    if (p)
      return p;
  }
  /* aligned, for the direct way (O_DIRECT) */
  return posix_memalign(&p, SVM_IO_ALIGN, len ? len : 1) == 0 ? p : NULL;
}

static void copy_free(struct mirror_guard *g, void *p, size_t len)
{
  if (p && len >= CACHE_MIN) {
    pthread_mutex_lock(&g->mu);
    if (g->cache_bytes + len <= g->cache_cap) {
      struct cached_buf *c = p;
      c->len = len;
      c->next = g->cache;
      g->cache = c;
      g->cache_bytes += len;
      p = NULL;
    }
    pthread_mutex_unlock(&g->mu);
  }
  free(p);
}

static const char *kind_name[] = { "write", "zero", "trim", "flush" };

static uint64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void guard_unref(struct mirror_guard *g)
{
  if (atomic_fetch_sub(&g->refs, 1) != 1)
    return;
  while (g->cache) {
    struct cached_buf *c = g->cache;
    g->cache = c->next;
    free(c);
  }
  pthread_mutex_destroy(&g->mu);
  pthread_cond_destroy(&g->cv);
  mirror_direct_close(g->direct);
  free(g);
}

static void gop_unref(struct gop *op)
{
  struct mirror_guard *g = op->g;

  if (atomic_fetch_sub(&op->refs, 1) != 1)
    return;
  copy_free(g, op->copy, op->len);
  free(op);
  guard_unref(g);
}

static void unlink_locked(struct mirror_guard *g, struct gop *op)
{
  if (op->prev)
    op->prev->next = op->next;
  else
    g->head = op->next;
  if (op->next)
    op->next->prev = op->prev;
  else
    g->tail = op->prev;
  op->prev = op->next = NULL;
}

static void append_locked(struct mirror_guard *g, struct gop *op)
{
  op->next = NULL;
  op->prev = g->tail;
  if (g->tail)
    g->tail->next = op;
  else
    g->head = op;
  g->tail = op;
}

/* ---- dropping ------------------------------------------------------------------------------ */

static void abandoned(void *opaque, int64_t res)
{
  struct gop *op = opaque;

  op->cb(op->opaque, res);
  gop_unref(op);
}

__attribute__((format(printf, 3, 0)))
static void drop_v(struct mirror_guard *g, int err, const char *fmt, va_list ap)
{
  struct gop *list = NULL, *op;

  pthread_mutex_lock(&g->mu);
  if (atomic_load(&g->err) == 0) {
    vsnprintf(g->msg, sizeof g->msg, fmt, ap);
    atomic_store(&g->err, err < 0 ? err : -EIO);
  }
  err = atomic_load(&g->err);
  while ((op = g->head) != NULL) {
    bool answer = !op->queued;  /* else issue_posted() answers it */
    unlink_locked(g, op);
    if (op->state == ST_ISSUED && answer)
      atomic_fetch_add(&op->refs, 1);   /* the layer below keeps its own */
    op->state = ST_ABANDONED;
    if (answer) {
      op->alink = list;
      list = op;
    }
  }
  pthread_mutex_unlock(&g->mu);
  /* Oldest first: list is newest first, but each goes to its own engine, in posting order
   * there; the order between engines does not matter. */
  while ((op = list) != NULL) {
    list = op->alink;
    svm_io_post_node(op->io, &op->done_node, abandoned, op, err);
  }
}

void mirror_guard_drop(struct mirror_guard *g, int err, const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  drop_v(g, err, fmt, ap);
  va_end(ap);
}

static void drop(struct mirror_guard *g, int err, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));
static void drop(struct mirror_guard *g, int err, const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  drop_v(g, err, fmt, ap);
  va_end(ap);
}

static const char *fix_for(int err)
{
  switch (-err) {
  case ENOSPC:
  case EDQUOT:
    return "the destination is full: free space on its datastore or choose another one";
  case ETIMEDOUT:
    return "the destination hangs: check its storage (or network) and try again";
  case ENOMEM:
    return "out of memory: try again with fewer moves at once";
  default:
    return "check the destination's storage and try again";
  }
}

/* ---- requests ------------------------------------------------------------------------------ */

static int issue(struct gop *op, bool retry);
static void issue_posted(void *opaque, int64_t res);

/* Under g->mu: the waiting writes that fit in the budget now, in order, taken off the wait
 * (chained by glink) for the caller to post once unlocked. */
static struct gop *grant_locked(struct mirror_guard *g)
{
  struct gop *go = NULL, **tail = &go;

  for (struct gop *w = g->head; w; w = w->next) {
    if (w->state != ST_WAITING)
      continue;
    if (g->used > 0 && g->used + w->len > g->budget)
      break;
    w->state = ST_ISSUED;
    w->queued = true;
    w->held = w->len;
    g->used += w->len;
    g->peak = g->used > g->peak ? g->used : g->peak;
    w->glink = NULL;
    *tail = w;
    tail = &w->glink;
  }
  return go;
}

static void post_granted(struct gop *go)
{
  struct gop *w;

  while ((w = go) != NULL) {
    go = w->glink;
    svm_io_post_node(w->io, &w->issue_node, issue_posted, w, 0);
  }
}

/* The layer below completed the request (on op->io's thread). */
static void gop_done(void *opaque, int64_t res)
{
  struct gop *op = opaque, *go = NULL;
  struct mirror_guard *g = op->g;
  bool gone;

  pthread_mutex_lock(&g->mu);
  g->used -= op->held;
  op->held = 0;
  gone = op->state == ST_ABANDONED;
  if (!gone) {
    unlink_locked(g, op);
    go = grant_locked(g);
  }
  pthread_mutex_unlock(&g->mu);
  copy_free(g, op->copy, op->len);
  op->copy = NULL;
  post_granted(go);
  if (gone) {
    gop_unref(op);
    return;
  }
  if (res < 0)
    drop(g, (int)res, "%s: %s at offset %" PRIu64 " failed: %s (%s)", svm_layer_path(g->dst),
         kind_name[op->kind], op->off, strerror((int)-res), fix_for((int)res));
  op->cb(op->opaque, res);
  gop_unref(op);
}

/* A waiting write got its budget, or a request is tried again: issue it here, on its own
 * thread, unless it was abandoned meanwhile; then answer the caller with the drop's error
 * (the drop left that to this post) and touch nothing else: its buffer is the caller's. */
static void issue_posted(void *opaque, int64_t res)
{
  struct gop *op = opaque;
  struct mirror_guard *g = op->g;
  bool gone;
  int err;

  (void)res;
  pthread_mutex_lock(&g->mu);
  op->queued = false;
  gone = op->state == ST_ABANDONED;
  if (gone) {
    g->used -= op->held;
    op->held = 0;
  }
  err = atomic_load(&g->err);
  pthread_mutex_unlock(&g->mu);
  if (gone) {
    op->cb(op->opaque, err);
    gop_unref(op);
  } else {
    issue(op, true);
  }
}

/* Send the request down. -EAGAIN (the caller's engine is full) goes back to the caller when
 * the request is new (submit() undoes it), else it is tried again once one of the engine's
 * requests completes. Any other failure is the request's result. */
static int issue(struct gop *op, bool retry)
{
  struct svm_layer *d = op->target;
  int r = -EINVAL;

  switch (op->kind) {
  case OP_WRITE:
    if (op->borrowed) {
      r = svm_layer_write(d, op->io, op->buf, op->len, op->off, op->flags, gop_done, op);
      break;
    }
    if ((op->copy = copy_alloc(op->g, op->len)) == NULL) {
      r = -ENOMEM;
      break;
    }
    memcpy(op->copy, op->buf, op->len);
    r = svm_layer_write(d, op->io, op->copy, op->len, op->off, op->flags, gop_done, op);
    break;
  case OP_ZERO:
    r = svm_layer_zero(d, op->io, op->off, op->len, op->flags, gop_done, op);
    break;
  case OP_TRIM:
    r = svm_layer_trim(d, op->io, op->off, op->len, op->flags, gop_done, op);
    break;
  case OP_FLUSH:
    r = svm_layer_flush(d, op->io, gop_done, op);
    break;
  }
  if (r == -EAGAIN) {
    struct mirror_guard *g = op->g;
    bool gone;

    copy_free(g, op->copy, op->len);
    op->copy = NULL;
    if (!retry)
      return r;
    pthread_mutex_lock(&g->mu);
    gone = op->state == ST_ABANDONED;   /* dropped while down here: its answer is posted */
    if (gone) {
      g->used -= op->held;
      op->held = 0;
    } else {
      op->queued = true;
    }
    pthread_mutex_unlock(&g->mu);
    if (gone)
      gop_unref(op);                    /* the layer below's reference: it took nothing */
    else
      svm_io_post_on_room(op->io, &op->issue_node, issue_posted, op);
  } else if (r < 0) {
    gop_done(op, r);            /* never reached the layer: fail it the same way */
  }
  return 0;
}

static int submit(struct svm_layer *l, enum kind kind, struct svm_io *io, const void *buf,
                  uint64_t len, uint64_t off, unsigned flags, svm_io_cb cb, void *opaque)
{
  struct mirror_guard *g = l->priv;
  struct gop *op;
  bool now = true;
  int err = atomic_load_explicit(&g->err, memory_order_relaxed);

  if (err)
    return err;
  if ((op = calloc(1, sizeof *op)) == NULL)
    return -ENOMEM;
  *op = (struct gop){ .g = g, .target = l->below, .kind = kind, .io = io, .buf = buf, .off = off, .len = len,
                      .flags = flags, .cb = cb, .opaque = opaque, .start_ns = now_ns() };
  /* A copier chunk the direct way needs no copy: it goes to the file on the copier's own
   * engine, whose end waits for everything in its engine before the copy engine frees the
   * buffer (svm_io_free), even after a drop. A copy would cost a memcpy, and the kernel's
   * pinning of fresh small pages instead of the engine's huge ones (measured: 8 ms per
   * io_submit of 30 MiB, the copier's writes bunched up behind it). */
  op->borrowed = kind == OP_WRITE && l == &g->copier_layer && g->direct != NULL &&
                 mirror_direct_takes(buf, len, off, flags);
  atomic_init(&op->refs, 1);
  pthread_mutex_lock(&g->mu);
  if ((err = atomic_load(&g->err)) != 0) {
    pthread_mutex_unlock(&g->mu);
    free(op);
    return err;
  }
  atomic_fetch_add(&g->refs, 1);
  op->state = ST_ISSUED;
  if (kind == OP_WRITE && !op->borrowed) {
    bool waits = g->used > 0 && g->used + len > g->budget;
    /* Behind a waiting write too: writes keep their order. */
    for (struct gop *w = g->head; w && !waits; w = w->next)
      waits = w->state == ST_WAITING;
    if (waits) {
      op->state = ST_WAITING;
      now = false;
    } else {
      op->held = len;
      g->used += len;
      g->peak = g->used > g->peak ? g->used : g->peak;
    }
  }
  append_locked(g, op);
  pthread_mutex_unlock(&g->mu);
  if (now && issue(op, false) == -EAGAIN) {
    struct gop *go;
    bool gone;

    pthread_mutex_lock(&g->mu);
    gone = op->state == ST_ABANDONED;
    if (!gone) {
      unlink_locked(g, op);
      g->used -= op->held;
    }
    go = grant_locked(g);
    pthread_mutex_unlock(&g->mu);
    post_granted(go);
    gop_unref(op);              /* abandoned meanwhile: its abandonment answers the caller */
    return gone ? 0 : -EAGAIN;
  }
  return 0;
}

/* ---- the layer ----------------------------------------------------------------------------- */

static int guard_write(struct svm_layer *l, struct svm_io *io, const void *buf, size_t len,
                       uint64_t off, unsigned flags, svm_io_cb cb, void *opaque)
{
  return submit(l, OP_WRITE, io, buf, len, off, flags, cb, opaque);
}

static int guard_zero(struct svm_layer *l, struct svm_io *io, uint64_t off, uint64_t len,
                      unsigned flags, svm_io_cb cb, void *opaque)
{
  return submit(l, OP_ZERO, io, NULL, len, off, flags, cb, opaque);
}

static int guard_trim(struct svm_layer *l, struct svm_io *io, uint64_t off, uint64_t len,
                      unsigned flags, svm_io_cb cb, void *opaque)
{
  return submit(l, OP_TRIM, io, NULL, len, off, flags, cb, opaque);
}

static int guard_flush(struct svm_layer *l, struct svm_io *io, svm_io_cb cb, void *opaque)
{
  return submit(l, OP_FLUSH, io, NULL, 0, 0, 0, cb, opaque);
}

/* Reads, block status and flush_sync pass through to dst (NULL operations). */
static const struct svm_layer_ops guard_ops = {
  .kind = "mirror-destination",
  .write = guard_write,
  .zero = guard_zero,
  .trim = guard_trim,
  .flush = guard_flush,
};

/* ---- the watchdog -------------------------------------------------------------------------- */

static void *watchdog_main(void *arg)
{
  struct mirror_guard *g = arg;

  pthread_mutex_lock(&g->mu);
  while (!g->stop) {
    const struct gop *old = NULL;
    uint64_t now = now_ns(), until;
    struct timespec ts;

    for (const struct gop *op = g->head; op; op = op->next)
      if (old == NULL || op->start_ns < old->start_ns)
        old = op;
    if (old != NULL && now - old->start_ns >= g->timeout_ns) {
      enum kind k = old->kind;
      uint64_t off = old->off, age = now - old->start_ns;
      pthread_mutex_unlock(&g->mu);
      drop(g, -ETIMEDOUT, "%s: a %s at offset %" PRIu64 " has not completed after %.1f s (%s)",
           svm_layer_path(g->dst), kind_name[k], off, (double)age / 1e9,
           fix_for(-ETIMEDOUT));
      pthread_mutex_lock(&g->mu);
      continue;
    }
    until = old != NULL ? old->start_ns + g->timeout_ns : now + g->timeout_ns;
    ts.tv_sec = (time_t)(until / 1000000000u);
    ts.tv_nsec = (long)(until % 1000000000u);
    pthread_cond_timedwait(&g->cv, &g->mu, &ts);
  }
  pthread_mutex_unlock(&g->mu);
  return NULL;
}

/* ---- life ---------------------------------------------------------------------------------- */

int mirror_guard_new(struct svm_layer *dst, uint64_t timeout_ns, uint64_t budget,
                     struct mirror_guard **out)
{
  struct mirror_guard *g = calloc(1, sizeof *g);
  pthread_condattr_t ca;
  int r;

  *out = NULL;
  if (g == NULL)
    return svm_error(ENOMEM, "mirror to %s: out of memory", svm_layer_path(dst));
  g->layer = (struct svm_layer){ .ops = &guard_ops, .below = dst, .priv = g,
                                 .size = dst->size, .readonly = dst->readonly };
  g->dst = dst;
  if ((r = mirror_direct_open(dst, true, &g->direct)) < 0) {
    free(g);
    return r;
  }
  g->copier_layer = g->layer;
  g->copier_layer.below = g->direct ? g->direct : dst;
  g->timeout_ns = timeout_ns;
  g->budget = budget;
  g->cache_cap = budget < CACHE_MAX_BYTES ? budget : CACHE_MAX_BYTES;
  atomic_init(&g->refs, 1);
  atomic_init(&g->err, 0);
  pthread_mutex_init(&g->mu, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&g->cv, &ca);
  pthread_condattr_destroy(&ca);
  if ((r = pthread_create(&g->watchdog, NULL, watchdog_main, g)) != 0) {
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    mirror_direct_close(g->direct);
    free(g);
    return svm_error(r, "mirror to %s: cannot start its watchdog thread: %s",
                     svm_layer_path(dst), strerror(r));
  }
  *out = g;
  return 0;
}

struct svm_layer *mirror_guard_layer(struct mirror_guard *g)
{
  return &g->layer;
}

struct svm_layer *mirror_guard_copier_layer(struct mirror_guard *g)
{
  return &g->copier_layer;
}

int mirror_guard_err(struct mirror_guard *g)
{
  return atomic_load_explicit(&g->err, memory_order_relaxed);
}

int mirror_guard_status(struct mirror_guard *g, char *msg, size_t len)
{
  int err;

  pthread_mutex_lock(&g->mu);
  err = atomic_load(&g->err);
  if (msg != NULL && len > 0)
    snprintf(msg, len, "%s", err ? g->msg : "");
  pthread_mutex_unlock(&g->mu);
  return err;
}

uint64_t mirror_guard_peak(struct mirror_guard *g)
{
  uint64_t n;

  pthread_mutex_lock(&g->mu);
  n = g->peak;
  pthread_mutex_unlock(&g->mu);
  return n;
}

/* The stack above is drained: only requests abandoned to a hung destination may still be out,
 * and they keep the guard alive until they come back. */
void mirror_guard_close(struct mirror_guard *g)
{
  if (g == NULL)
    return;
  pthread_mutex_lock(&g->mu);
  g->stop = true;
  pthread_cond_signal(&g->cv);
  pthread_mutex_unlock(&g->mu);
  pthread_join(g->watchdog, NULL);
  guard_unref(g);
}
