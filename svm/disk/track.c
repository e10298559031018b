/* The change-tracking layer (track.h).
 *
 * Fast path, inline on the caller's thread: cbt_mark_try() answers 1 when the range is
 * already marked in the open epoch (one load and compare per block, no lock, no syscall) or
 * lies in extents of the tracker's activity log (a mutex and a store, no I/O): the request
 * goes straight down. Otherwise the mark needs a log entry made durable (an 8 KiB write and an
 * fdatasync of the .ctk). That runs on a pool of mark threads shared by every tracking layer of
 * the process, AT THE SAME TIME as the data write, which goes down at once: the request is
 * acknowledged when both are done (a write whose mark is not yet durable is not acknowledged;
 * after a crash it may or may not be reported, as any unacknowledged write). So a data write
 * never waits for its mark, and the cold-extent case costs max(write, log entry), not the sum.
 * The mark threads' results come back to the thread that owns the request's I/O engine
 * (svm_io_post_node), where the two halves meet: both callbacks run on that one thread, so
 * the join needs no lock. Many first marks wait side by side in the pool, and the tracker's
 * group commit gives them one fdatasync together.
 *
 * The pool starts with the first slow mark, grows a thread whenever marks queue up with no
 * thread idle (up to POOL_MAX), and stops when the last tracking layer is closed. A layer is
 * closed only after its stack has been drained (export freed, or a swapped-out stack handed
 * back), so no job of it is queued or running then.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <svmotion/cbt.h>

#include "common/error.h"
#include "svm/disk/track.h"

enum { POOL_MAX = 64, POOL_STACK = 256 * 1024 };

struct track {
  struct cbt *t;
  atomic_bool logged;           /* a failed mark was logged: the next ones are not */
};

enum kind { KIND_WRITE, KIND_ZERO, KIND_TRIM };

/* A request whose mark needs I/O: the mark (on a pool thread) and the operation below run
 * together; the request completes when both have. */
struct job {
  struct job *next;
  struct svm_io_posted node;    /* the mark's way back to the owning thread */
  struct svm_layer *l;
  struct svm_io *io;
  enum kind kind;
  uint64_t off, len;
  svm_io_cb cb;
  void *opaque;
  int pending;                  /* halves still running (owning thread only) */
  int64_t res;                  /* the operation's result */
  int mark_rc;                  /* the mark's result */
  char msg[256];                /* why the mark failed (the error is thread-local) */
};

static struct {
  pthread_mutex_t life_mu;      /* users, and starting/stopping the pool as a whole */
  unsigned users;               /* open tracking layers */
  pthread_mutex_t mu;           /* the queue and the threads */
  pthread_cond_t cv;
  struct job *head, *tail;
  unsigned queued, idle, nthreads;
  bool stop;
  pthread_t threads[POOL_MAX];
} pool = {
  .life_mu = PTHREAD_MUTEX_INITIALIZER,
  .mu = PTHREAD_MUTEX_INITIALIZER,
  .cv = PTHREAD_COND_INITIALIZER,
};

/* ---- back on the owning thread ---- */

static int pass_down(struct svm_layer *below, struct svm_io *io, enum kind kind,
                     const void *buf, uint64_t off, uint64_t len, unsigned flags, svm_io_cb cb,
                     void *opaque)
{
  switch (kind) {
  case KIND_WRITE:
    return svm_layer_write(below, io, buf, (size_t)len, off, flags, cb, opaque);
  case KIND_ZERO:
    return svm_layer_zero(below, io, off, len, flags, cb, opaque);
  case KIND_TRIM:
    return svm_layer_trim(below, io, off, len, flags, cb, opaque);
  }
  return -EINVAL;
}

static void log_failure(struct svm_layer *l, const struct job *j, int err)
{
  struct track *tr = l->priv;
  char line[512];
  int n;

  if (atomic_exchange(&tr->logged, true))
    return;
  n = snprintf(line, sizeof line, "%s: change tracking of %s: %s (the write at %llu+%llu fails "
               "with %s, and so will later ones until the tracker can write its .ctk: no write "
               "is acknowledged without its mark; further failures are not logged)\n",
               program_invocation_short_name, svm_layer_path(l), j->msg,
               (unsigned long long)j->off, (unsigned long long)j->len,
               err == -ENOSPC ? "ENOSPC" : "EIO");
  if (n > 0 && write(STDERR_FILENO, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1)
               < 0) { /* nowhere to report it */ }
}

/* One half done (on the owning thread). The last one completes the request: the mark failed
 * -> ENOSPC when the datastore is full (the guest sees a full disk, and tracking retries with
 * the next write), else EIO; otherwise the operation's own result. */
static void job_half_done(struct job *j)
{
  if (--j->pending > 0)
    return;
  struct job c = *j;
  free(j);
  if (c.mark_rc < 0) {
    int err = c.mark_rc == -ENOSPC || c.mark_rc == -EDQUOT ? -ENOSPC : -EIO;
    log_failure(c.l, &c, err);
    c.cb(c.opaque, err);
    return;
  }
  c.cb(c.opaque, c.res);
}

static void job_op_done(void *opaque, int64_t res)
{
  struct job *j = opaque;
  j->res = res;
  job_half_done(j);
}

static void job_mark_done(void *opaque, int64_t res)
{
  struct job *j = opaque;
  j->mark_rc = (int)res;
  job_half_done(j);
}

static int job_do_mark(struct job *j)
{
  struct track *tr = j->l->priv;
  int r = j->kind == KIND_TRIM ? cbt_discard(tr->t, j->off, j->len)
                               : cbt_mark(tr->t, j->off, j->len);

  if (r < 0)
    snprintf(j->msg, sizeof j->msg, "%s", svm_last_error());
  return r;
}

/* ---- the mark threads ---- */

static void job_mark(struct job *j)
{
  int r = job_do_mark(j);
  svm_io_post_node(j->io, &j->node, job_mark_done, j, r);
}

static void *pool_main(void *arg)
{
  (void)arg;
  pthread_mutex_lock(&pool.mu);
  for (;;) {
    struct job *j;

    pool.idle++;
    while (pool.head == NULL && !pool.stop)
      pthread_cond_wait(&pool.cv, &pool.mu);
    pool.idle--;
    if (pool.head == NULL)
      break;                    /* stopping, and nothing left */
    j = pool.head;
    pool.head = j->next;
    if (pool.head == NULL)
      pool.tail = NULL;
    pool.queued--;
    pthread_mutex_unlock(&pool.mu);
    job_mark(j);
    pthread_mutex_lock(&pool.mu);
  }
  pthread_mutex_unlock(&pool.mu);
  return NULL;
}

/* Under pool.mu: one more thread when marks wait with nobody idle to take them. */
static void pool_grow_locked(void)
{
  pthread_attr_t attr;

  if (pool.queued <= pool.idle || pool.nthreads == POOL_MAX)
    return;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, POOL_STACK);
  if (pthread_create(&pool.threads[pool.nthreads], &attr, pool_main, NULL) == 0)
    pool.nthreads++;
  pthread_attr_destroy(&attr);
}

/* Returns false when the pool has no thread at all (none could be started). */
static bool pool_queue(struct job *j)
{
  bool ok;

  pthread_mutex_lock(&pool.mu);
  j->next = NULL;
  if (pool.tail)
    pool.tail->next = j;
  else
    pool.head = j;
  pool.tail = j;
  pool.queued++;
  pool_grow_locked();
  ok = pool.nthreads > 0;
  if (!ok) {
    pool.head = pool.tail = NULL;
    pool.queued = 0;
  }
  pthread_cond_signal(&pool.cv);
  pthread_mutex_unlock(&pool.mu);
  return ok;
}

static void pool_stop(void)
{
  pthread_mutex_lock(&pool.mu);
  pool.stop = true;
  pthread_cond_broadcast(&pool.cv);
  pthread_mutex_unlock(&pool.mu);
  for (unsigned i = 0; i < pool.nthreads; i++)
    pthread_join(pool.threads[i], NULL);
  pool.nthreads = 0;
  pool.stop = false;
}

/* ---- the layer ---- */

static int track_slow(struct svm_layer *l, struct svm_io *io, enum kind kind, const void *buf,
                      uint64_t off, uint64_t len, unsigned flags, svm_io_cb cb, void *opaque)
{
  struct job *j = calloc(1, sizeof *j);
  int r;

  if (j == NULL)
    return svm_error(ENOMEM, "change tracking of %s: out of memory", svm_layer_path(l));
  *j = (struct job){ .l = l, .io = io, .kind = kind, .off = off, .len = len, .cb = cb,
                     .opaque = opaque, .pending = 2 };
  if (!pool_queue(j)) {
    /* No mark thread could be started: mark here first, slowly but correctly. */
    j->mark_rc = job_do_mark(j);
    j->pending = 1;
  }
  /* The operation goes down now, beside its mark; its callback may run inline. */
  r = pass_down(l->below, io, kind, buf, off, len, flags, job_op_done, j);
  if (r < 0)
    job_op_done(j, r);
  return 0;
}

static int track_op(struct svm_layer *l, struct svm_io *io, enum kind kind, const void *buf,
                    uint64_t off, uint64_t len, unsigned flags, svm_io_cb cb, void *opaque)
{
  struct track *tr = l->priv;
  int r = cbt_mark_try(tr->t, off, len);

  if (r > 0)                    /* already durable in this epoch: no hop, no syscall */
    return pass_down(l->below, io, kind, buf, off, len, flags, cb, opaque);
  if (r < 0)
    return r;
  return track_slow(l, io, kind, buf, off, len, flags, cb, opaque);
}

static int track_write(struct svm_layer *l, struct svm_io *io, const void *buf, size_t len,
                       uint64_t off, unsigned flags, svm_io_cb cb, void *opaque)
{
  return track_op(l, io, KIND_WRITE, buf, off, len, flags, cb, opaque);
}

static int track_zero(struct svm_layer *l, struct svm_io *io, uint64_t off, uint64_t len,
                      unsigned flags, svm_io_cb cb, void *opaque)
{
  return track_op(l, io, KIND_ZERO, NULL, off, len, flags, cb, opaque);
}

static int track_trim(struct svm_layer *l, struct svm_io *io, uint64_t off, uint64_t len,
                      unsigned flags, svm_io_cb cb, void *opaque)
{
  return track_op(l, io, KIND_TRIM, NULL, off, len, flags, cb, opaque);
}

static void track_close(struct svm_layer *l)
{
  free(l->priv);
  pthread_mutex_lock(&pool.life_mu);
  if (--pool.users == 0)
    pool_stop();
  pthread_mutex_unlock(&pool.life_mu);
}

static const struct svm_layer_ops track_ops = {
  .kind = "track",
  .write = track_write,
  .zero = track_zero,
  .trim = track_trim,
  .close = track_close,
};

int svm_layer_open_track(struct cbt *t, struct svm_layer *below, struct svm_layer **out)
{
  struct track *tr;
  int r;

  *out = NULL;
  if (t == NULL)
    return svm_error(EINVAL, "change tracking of %s: no tracker", svm_layer_path(below));
  tr = calloc(1, sizeof *tr);
  if (tr == NULL)
    return svm_error(ENOMEM, "change tracking of %s: out of memory", svm_layer_path(below));
  tr->t = t;
  r = svm_layer_new_filter(&track_ops, tr, below, out);
  if (r < 0) {
    free(tr);
    return r;
  }
  pthread_mutex_lock(&pool.life_mu);
  pool.users++;
  pthread_mutex_unlock(&pool.life_mu);
  return 0;
}
