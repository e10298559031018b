/* The transmission phase: I/O threads, each with its own engine (svm/io.h) and a poll() loop
 * over its clients' sockets and the engine's eventfd.
 *
 * A client's bytes are parsed as they arrive; each complete request is started at once (many
 * in flight, bounded per client and per thread) and answered when its I/O completes, so
 * replies may leave out of order, as NBD allows. Replies queue on the client and go out with
 * one sendmsg() per loop turn. A request is "in flight" for the export (drain/pause/swap) from
 * the moment it is started until its reply is queued.
 *
 * Thread model: a connection belongs to one worker and is touched only by that thread; the
 * export's counters are atomics; the layer pointer is read only while a request is counted in
 * flight, which is what lets svm_export_swap replace it while paused.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/error.h"
#include "svm/nbd/internal.h"

enum {
  IN_SIZE = 128 * 1024,             /* per-client receive buffer */
  CONN_MAX_INFLIGHT = 128,          /* started, unanswered requests per client */
  CONN_MAX_OUT = 64 * 1024 * 1024,  /* queued reply bytes before we stop reading */
  MAX_IOV = 64,
  MAX_EXTENTS = 2048,               /* per context per BLOCK_STATUS reply */
  MAX_LOGGED_ERRORS = 8,            /* request errors logged per client */
};

struct nbds_conn;

struct nbds_req {
  struct nbds_req *next;             /* out queue, hook queue */
  struct nbds_conn *c;
  struct svm_layer *top;            /* the stack it runs on (fixed while it is in flight) */
  int hook_res;                     /* hook result, when run on a hook thread */
  char hook_msg[160];
  struct nbds_request r;
  uint32_t err;                     /* NBD error decided before running (validation) */
  uint32_t got;                     /* WRITE payload bytes received */
  uint8_t hdr[32];
  size_t hdrlen;
  void *buf;                        /* READ data, WRITE payload, BLOCK_STATUS chunks */
  size_t buflen;                    /* bytes of buf that go out in the reply */
  size_t sent;                      /* of hdr + buf */
};

struct nbds_conn {
  struct nbds_worker *w;
  struct svm_export *e;
  struct nbds_session s;
  struct nbds_limits lim;
  uint8_t *in;
  size_t in_start, in_end;
  struct nbds_req *rd;               /* WRITE whose payload is arriving */
  struct nbds_req *ready;            /* complete, waiting for room or for resume */
  struct nbds_req *out_head, *out_tail;
  size_t out_bytes;
  unsigned inflight;
  unsigned errors_logged;
  bool eof;                         /* read no more: DISC or end of stream */
  bool dead;                        /* drop: no more output, close when idle */
};

struct nbds_worker {
  struct svm_export *e;
  struct svm_io *io;
  pthread_t thread;
  int wake;                         /* eventfd */
  pthread_mutex_t mu;
  struct nbds_session *incoming;     /* handed over by handshake threads */
  unsigned nincoming, incoming_cap;
  bool stop;
  struct nbds_conn **conns;
  unsigned nconns, conns_cap;
  unsigned active, max_active;
  uint64_t offload_until_ns;        /* hooks go to the hook threads until then */
  struct nbds_req *hooked;           /* back from the hook threads (under mu) */
  struct pollfd *pfd;
  unsigned pfd_cap;
};

static void conn_log(struct nbds_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void conn_log(struct nbds_conn *c, const char *fmt, ...)
{
  char msg[512];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  nbds_log_client(c->s.peer, "%s", msg);
}

/* Fatal for this client only: log once, stop reading and writing, close when idle. */
static void conn_kill(struct nbds_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void conn_kill(struct nbds_conn *c, const char *fmt, ...)
{
  char msg[512];
  va_list ap;

  if (c->dead)
    return;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  nbds_log_client(c->s.peer, "%s", msg);
  c->dead = true;
  c->eof = true;
  atomic_fetch_add(&c->e->st_errors, 1);
}

static void req_free(struct nbds_req *q)
{
  if (q == NULL)
    return;
  free(q->buf);
  free(q);
}

static void queue_reply(struct nbds_conn *c, struct nbds_req *q)
{
  if (c->dead) {
    req_free(q);
    return;
  }
  q->next = NULL;
  q->sent = 0;
  if (c->out_tail)
    c->out_tail->next = q;
  else
    c->out_head = q;
  c->out_tail = q;
  c->out_bytes += q->hdrlen + q->buflen;
}

static void set_simple(struct nbds_req *q, uint32_t err)
{
  nbds_put32(q->hdr, NBD_SIMPLE_MAGIC);
  nbds_put32(q->hdr + 4, err);
  nbds_put64(q->hdr + 8, q->r.cookie);
  q->hdrlen = NBD_SIMPLE_REPLY_SIZE;
}

static void set_chunk(struct nbds_req *q, uint8_t *p, uint16_t flags, uint16_t type,
                      uint32_t len)
{
  nbds_put32(p, NBD_STRUCT_MAGIC);
  nbds_put16(p + 4, flags);
  nbds_put16(p + 6, type);
  nbds_put64(p + 8, q->r.cookie);
  nbds_put32(p + 16, len);
}

/* Answer a request with an error (NBD wire code). */
static void reply_error(struct nbds_conn *c, struct nbds_req *q, uint32_t err)
{
  char tmp[16];

  atomic_fetch_add(&c->e->st_errors, 1);
  if (c->errors_logged < MAX_LOGGED_ERRORS) {
    c->errors_logged++;
    conn_log(c, "%s offset %llu length %u flags 0x%x: answered with NBD error %u%s",
             nbds_cmd_name(q->r.type, tmp, sizeof tmp), (unsigned long long)q->r.offset,
             q->r.length, q->r.flags, err,
             c->errors_logged == MAX_LOGGED_ERRORS ? " (further errors not logged)" : "");
  }
  free(q->buf);
  q->buf = NULL;
  q->buflen = 0;
  if (c->s.structured && (q->r.type == NBD_CMD_READ || q->r.type == NBD_CMD_BLOCK_STATUS)) {
    set_chunk(q, q->hdr, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, 6);
    nbds_put32(q->hdr + 20, err);
    nbds_put16(q->hdr + 24, 0);
    q->hdrlen = NBD_STRUCT_REPLY_SIZE + 6;
  } else {
    set_simple(q, err);
  }
  queue_reply(c, q);
}

static void reply_ok(struct nbds_conn *c, struct nbds_req *q)
{
  if (q->r.type == NBD_CMD_READ) {
    if (c->s.structured) {
      set_chunk(q, q->hdr, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, 8 + q->r.length);
      nbds_put64(q->hdr + 20, q->r.offset);
      q->hdrlen = NBD_STRUCT_REPLY_SIZE + 8;
    } else {
      set_simple(q, NBD_OK);
    }
    q->buflen = q->r.length;
  } else if (q->r.type == NBD_CMD_BLOCK_STATUS) {
    q->hdrlen = 0;                  /* the chunks are all in buf */
  } else {
    free(q->buf);
    q->buf = NULL;
    q->buflen = 0;
    set_simple(q, NBD_OK);
  }
  queue_reply(c, q);
}

/* The I/O of a started request completed (or failed to start): answer it. */
static void req_done(void *opaque, int64_t res)
{
  struct nbds_req *q = opaque;
  struct nbds_conn *c = q->c;

  if (res < 0)
    reply_error(c, q, nbds_errno_to_wire((int)-res));
  else
    reply_ok(c, q);
  c->inflight--;
  c->w->active--;
  nbds_export_end_request(c->e);
}

/* ---- BLOCK_STATUS ---- */

/* One context's descriptors, appended to buf at *pos. */
static int status_base(struct svm_layer *top, struct nbds_req *q, uint8_t *out, size_t *n)
{
  struct svm_layer_extent ext[64];
  size_t max = (q->r.flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : MAX_EXTENTS;
  uint64_t off = q->r.offset, end = q->r.offset + q->r.length;

  *n = 0;
  while (off < end && *n < max) {
    size_t got = 0, lim = max - *n < 64 ? max - *n : 64;
    int r = top->ops->block_status(top, off, end - off, ext, lim, &got);
    if (r < 0)
      return r;
    if (got == 0)
      break;
    for (size_t i = 0; i < got; i++) {
      /* merge with the previous descriptor when the flags match */
      if (*n > 0 && nbds_get32(out + 8 * (*n - 1) + 4) == ext[i].flags) {
        uint32_t l = nbds_get32(out + 8 * (*n - 1));
        nbds_put32(out + 8 * (*n - 1), l + (uint32_t)ext[i].length);
      } else {
        nbds_put32(out + 8 * *n, (uint32_t)ext[i].length);
        nbds_put32(out + 8 * *n + 4, ext[i].flags);
        (*n)++;
      }
      off += ext[i].length;
    }
  }
  return 0;
}

static int status_provider(struct svm_export *e, const struct nbds_context *ctx,
                           struct nbds_req *q, uint8_t *out, size_t *n)
{
  const struct svm_meta_provider *p = &e->providers[ctx->provider];
  struct svm_meta_extent *ext = NULL;
  size_t next = 0, max = (q->r.flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : MAX_EXTENTS;
  uint64_t off = q->r.offset, end = q->r.offset + q->r.length;
  int r = p->extents(p->opaque, ctx->name, q->r.offset, q->r.length, &ext, &next);

  *n = 0;
  if (r < 0) {
    free(ext);
    return r;
  }
  for (size_t i = 0; i <= next && off < end && *n < max; i++) {
    uint64_t s = i < next ? ext[i].offset : end;
    uint64_t t = i < next ? ext[i].offset + ext[i].length : end;
    if (s < off)
      s = off;
    if (t > end)
      t = end;
    if (s > off) {                  /* the gap before: clean */
      nbds_put32(out + 8 * *n, (uint32_t)(s - off));
      nbds_put32(out + 8 * *n + 4, 0);
      (*n)++;
      off = s;
      if (*n == max)
        break;
    }
    if (i < next && t > off) {
      nbds_put32(out + 8 * *n, (uint32_t)(t - off));
      nbds_put32(out + 8 * *n + 4, NBD_STATE_DIRTY);
      (*n)++;
      off = t;
    }
  }
  free(ext);
  return 0;
}

static int block_status(struct nbds_conn *c, struct svm_layer *top, struct nbds_req *q)
{
  size_t per = NBD_STRUCT_REPLY_SIZE + 4 + 8 * (size_t)MAX_EXTENTS;
  uint8_t *buf = malloc(per * c->s.ncontexts);
  size_t pos = 0;

  if (buf == NULL)
    return -ENOMEM;
  for (unsigned i = 0; i < c->s.ncontexts; i++) {
    const struct nbds_context *ctx = &c->s.contexts[i];
    uint8_t *chunk = buf + pos;
    size_t n = 0;
    int r = ctx->provider < 0 ? status_base(top, q, chunk + 24, &n)
                              : status_provider(c->e, ctx, q, chunk + 24, &n);
    if (r < 0) {
      conn_log(c, "BLOCK_STATUS %s: %s", ctx->name, svm_last_error());
      free(buf);
      return r;
    }
    set_chunk(q, chunk, i + 1 == c->s.ncontexts ? NBD_REPLY_FLAG_DONE : 0,
              NBD_REPLY_TYPE_BLOCK_STATUS, (uint32_t)(4 + 8 * n));
    nbds_put32(chunk + 20, i);
    pos += 24 + 8 * n;
  }
  q->buf = buf;
  q->buflen = pos;
  return 0;
}

/* ---- starting requests ---- */

static unsigned hook_kind(const struct nbds_req *q)
{
  switch (q->r.type) {
  case NBD_CMD_WRITE:
    return SVM_WRITE_DATA;
  case NBD_CMD_TRIM:
    return SVM_WRITE_TRIM;
  case NBD_CMD_WRITE_ZEROES:
    return SVM_WRITE_ZEROES;
  default:
    return 0;
  }
}

static void hook_failed(struct nbds_conn *c, struct nbds_req *q, const char *why)
{
  conn_log(c, "write hook failed at offset %llu length %u: %s",
           (unsigned long long)q->r.offset, q->r.length, why);
}

/* Submit the data part of a started request to its layer (the hook, if any, has passed). */
static void req_submit(struct nbds_conn *c, struct nbds_req *q)
{
  struct nbds_worker *w = c->w;
  struct svm_layer *top = q->top;
  unsigned fua = (q->r.flags & NBD_CMD_FLAG_FUA) ? SVM_LAYER_FUA : 0;
  int r = 0;

  switch (q->r.type) {
  case NBD_CMD_READ:
    q->buf = malloc(q->r.length);
    r = q->buf ? top->ops->read(top, w->io, q->buf, q->r.length, q->r.offset, req_done, q)
               : -ENOMEM;
    break;
  case NBD_CMD_WRITE:
    r = top->ops->write(top, w->io, q->buf, q->r.length, q->r.offset, fua, req_done, q);
    break;
  case NBD_CMD_FLUSH:
    r = top->ops->flush(top, w->io, req_done, q);
    break;
  case NBD_CMD_TRIM:
    r = top->ops->trim(top, w->io, q->r.offset, q->r.length, fua, req_done, q);
    break;
  case NBD_CMD_WRITE_ZEROES: {
    unsigned f = fua;
    if (q->r.flags & NBD_CMD_FLAG_NO_HOLE)
      f |= SVM_LAYER_NO_HOLE;
    if (q->r.flags & NBD_CMD_FLAG_FAST_ZERO)
      f |= SVM_LAYER_FAST;
    r = top->ops->zero(top, w->io, q->r.offset, q->r.length, f, req_done, q);
    break;
  }
  case NBD_CMD_BLOCK_STATUS:
    r = block_status(c, top, q);
    if (r == 0)
      req_done(q, 0);
    break;
  default:
    r = -EINVAL;
    break;
  }
  if (r < 0)
    req_done(q, r);
}

/* Start a valid request. Returns false when it must wait (paused, or no room).
 *
 * The write hook runs before the data is submitted. Inline on this thread it costs nothing
 * when it is fast (CBT: a block already marked in this epoch is one load and compare); but a
 * slow call (a first mark waits for an fdatasync of the tracking file) would hold up every
 * client of this thread, one fdatasync per request. So after a slow call the thread sends its
 * hooked requests to the export's hook threads for a while: there many run at once and share
 * their fdatasyncs (CBT's group commit), and each comes back here for its data. */
static bool req_start(struct nbds_conn *c, struct nbds_req *q)
{
  struct nbds_worker *w = c->w;
  struct svm_export *e = c->e;
  unsigned kind;

  if (w->active >= w->max_active)
    return false;
  if (!nbds_export_start_request(e))
    return false;
  q->top = atomic_load(&e->top);
  c->inflight++;
  w->active++;
  atomic_fetch_add(&e->st_requests, 1);

  kind = hook_kind(q);
  if (kind && e->hook) {
    uint64_t t0 = nbds_now_ns(), t1;
    int r;

    if (t0 < w->offload_until_ns) {
      nbds_hook_queue(e, q);
      return true;
    }
    r = e->hook(e->hook_opaque, q->r.offset, q->r.length, kind);
    t1 = nbds_now_ns();
    if (t1 - t0 > NBD_HOOK_SLOW_NS)
      w->offload_until_ns = t1 + NBD_HOOK_OFFLOAD_NS;
    if (r < 0) {
      hook_failed(c, q, svm_last_error());
      req_done(q, -EIO);
      return true;
    }
  }
  req_submit(c, q);
  return true;
}

/* ---- the hook threads' side ---- */

/* Called on a hook thread: the hook ran (result in q->hook_res); hand the request back to its
 * worker. */
void nbds_hook_done(struct nbds_req *q)
{
  struct nbds_worker *w = q->c->w;
  bool wake;

  pthread_mutex_lock(&w->mu);
  wake = w->hooked == NULL;
  q->next = w->hooked;
  w->hooked = q;
  pthread_mutex_unlock(&w->mu);
  if (wake)
    nbds_worker_wake(w);
}

void nbds_hook_run(struct svm_export *e, struct nbds_req *q)
{
  q->hook_res = e->hook(e->hook_opaque, q->r.offset, q->r.length, hook_kind(q));
  if (q->hook_res < 0)
    snprintf(q->hook_msg, sizeof q->hook_msg, "%s", svm_last_error());
  nbds_hook_done(q);
}

struct nbds_req *nbds_hook_next(struct nbds_req *q)
{
  return q->next;
}

void nbds_hook_set_next(struct nbds_req *q, struct nbds_req *next)
{
  q->next = next;
}

/* On the worker: requests back from the hook threads go on to their data. */
static void take_hooked(struct nbds_worker *w)
{
  struct nbds_req *q, *next;

  pthread_mutex_lock(&w->mu);
  q = w->hooked;
  w->hooked = NULL;
  pthread_mutex_unlock(&w->mu);
  for (; q; q = next) {
    next = q->next;
    q->next = NULL;
    if (q->hook_res < 0) {
      hook_failed(q->c, q, q->hook_msg);
      req_done(q, -EIO);
    } else {
      req_submit(q->c, q);
    }
  }
}

/* A complete request (header and payload in): answer it now or start it. */
static bool req_dispatch(struct nbds_conn *c, struct nbds_req *q)
{
  if (q->err) {
    reply_error(c, q, q->err);
    return true;
  }
  return req_start(c, q);
}

/* Parse and start whatever the receive buffer holds. Returns true when a request is waiting
 * for room on this worker (the loop should come back without sleeping). */
static bool conn_process(struct nbds_conn *c)
{
  if (c->dead)
    return false;
  if (c->ready) {
    if (!req_dispatch(c, c->ready))
      return c->w->active >= c->w->max_active;
    c->ready = NULL;
  }
  while (!c->dead && c->inflight < CONN_MAX_INFLIGHT && c->out_bytes < CONN_MAX_OUT) {
    size_t avail = c->in_end - c->in_start;
    struct nbds_request r;
    struct nbds_req *q;
    uint32_t payload = 0;
    int err;

    if (c->rd) {
      struct nbds_req *p = c->rd;
      uint32_t need = p->r.length - p->got;
      uint32_t n = avail < need ? (uint32_t)avail : need;
      if (p->buf)
        memcpy((uint8_t *)p->buf + p->got, c->in + c->in_start, n);
      p->got += n;
      c->in_start += n;
      if (p->got < p->r.length)
        break;
      c->rd = NULL;
      if (!req_dispatch(c, p)) {
        c->ready = p;
        return c->w->active >= c->w->max_active;
      }
      continue;
    }
    if (c->eof || avail < NBD_REQUEST_SIZE)
      break;
    if (nbds_decode_request(c->in + c->in_start, avail, &r) < 0) {
      conn_kill(c, "bad request magic 0x%08x: dropping the client",
                nbds_get32(c->in + c->in_start));
      return false;
    }
    c->in_start += NBD_REQUEST_SIZE;
    err = nbds_check_request(&r, &c->lim, &payload);
    if (err < 0) {
      conn_kill(c, "WRITE of %u bytes (at most %d): dropping the client", r.length,
                NBD_MAX_REQUEST);
      return false;
    }
    if (r.type == NBD_CMD_DISC && err == NBD_OK) {
      c->eof = true;                /* finish what is in flight, then close */
      break;
    }
    q = calloc(1, sizeof *q);
    if (q == NULL) {
      conn_kill(c, "out of memory");
      return false;
    }
    q->c = c;
    q->r = r;
    q->err = (uint32_t)err;
    if (payload > 0) {
      if (err == NBD_OK && (q->buf = malloc(payload)) == NULL)
        q->err = NBD_ENOMEM;        /* payload still read, and dropped */
      c->rd = q;
      continue;
    }
    if (!req_dispatch(c, q)) {
      c->ready = q;
      return c->w->active >= c->w->max_active;
    }
  }
  /* compact the receive buffer */
  if (c->in_start == c->in_end) {
    c->in_start = c->in_end = 0;
  } else if (c->in_start > IN_SIZE / 2) {
    memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
    c->in_end -= c->in_start;
    c->in_start = 0;
  }
  return false;
}

static bool conn_wants_input(const struct nbds_conn *c)
{
  return !c->eof && !c->dead && c->ready == NULL && c->inflight < CONN_MAX_INFLIGHT &&
         c->out_bytes < CONN_MAX_OUT;
}

/* Receive what the socket has. */
static void conn_read(struct nbds_conn *c)
{
  for (;;) {
    ssize_t n;
    struct nbds_req *p = c->rd;

    if (p && c->in_start == c->in_end && p->buf && p->r.length - p->got >= 4096) {
      /* a large payload goes straight into its buffer */
      n = recv(c->s.fd, (uint8_t *)p->buf + p->got, p->r.length - p->got, MSG_DONTWAIT);
      if (n > 0) {
        p->got += (uint32_t)n;
        if (p->got == p->r.length)
          return;
        continue;
      }
    } else {
      if (c->in_end == IN_SIZE) {
        if (c->in_start == 0)
          return;                     /* full: parse first */
        memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
        c->in_end -= c->in_start;
        c->in_start = 0;
      }
      n = recv(c->s.fd, c->in + c->in_end, IN_SIZE - c->in_end, MSG_DONTWAIT);
      if (n > 0) {
        c->in_end += (size_t)n;
        return;
      }
    }
    if (n == 0) {
      if (c->rd || c->in_start != c->in_end)
        conn_kill(c, "disconnected in the middle of a request");
      c->eof = true;
      return;
    }
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      conn_kill(c, "receive: %s", strerror(errno));
    return;
  }
}

/* Send queued replies, as many as one sendmsg() takes. */
static void conn_flush(struct nbds_conn *c)
{
  while (c->out_head && !c->dead) {
    struct iovec iov[MAX_IOV];
    struct msghdr mh = { .msg_iov = iov };
    int n = 0;
    ssize_t sent;

    for (struct nbds_req *q = c->out_head; q && n + 2 <= MAX_IOV; q = q->next) {
      size_t s = q->sent;
      if (s < q->hdrlen) {
        iov[n].iov_base = q->hdr + s;
        iov[n++].iov_len = q->hdrlen - s;
        s = 0;
      } else {
        s -= q->hdrlen;
      }
      if (q->buflen > s) {
        iov[n].iov_base = (uint8_t *)q->buf + s;
        iov[n++].iov_len = q->buflen - s;
      }
    }
    mh.msg_iovlen = (size_t)n;
    sent = sendmsg(c->s.fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent < 0) {
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        conn_kill(c, "send: %s", strerror(errno));
      return;
    }
    c->out_bytes -= (size_t)sent;
    while (sent > 0) {
      struct nbds_req *q = c->out_head;
      size_t left = q->hdrlen + q->buflen - q->sent;
      if ((size_t)sent < left) {
        q->sent += (size_t)sent;
        break;
      }
      sent -= (ssize_t)left;
      c->out_head = q->next;
      if (c->out_head == NULL)
        c->out_tail = NULL;
      req_free(q);
    }
  }
}

static void conn_free(struct nbds_conn *c)
{
  struct nbds_req *q = c->out_head;
  while (q) {
    struct nbds_req *n = q->next;
    req_free(q);
    q = n;
  }
  req_free(c->rd);
  req_free(c->ready);
  close(c->s.fd);
  nbds_session_clear(&c->s);
  free(c->in);
  nbds_export_client_gone(c->e);
  free(c);
}

/* Done with this client? Only when nothing of it is in the engine any more. */
static bool conn_finished(const struct nbds_conn *c)
{
  if (c->inflight > 0)
    return false;
  if (c->dead)
    return true;
  return c->eof && c->ready == NULL && c->rd == NULL && c->out_head == NULL;
}

/* ---- the worker ---- */

static int take_incoming(struct nbds_worker *w)
{
  pthread_mutex_lock(&w->mu);
  for (unsigned i = 0; i < w->nincoming; i++) {
    struct nbds_session *s = &w->incoming[i];
    struct nbds_conn *c = calloc(1, sizeof *c);
    if (c)
      c->in = malloc(IN_SIZE);
    if (c == NULL || c->in == NULL ||
        (w->nconns == w->conns_cap &&
         !(w->conns = reallocarray(w->conns, w->conns_cap = w->conns_cap * 2 + 8,
                                   sizeof *w->conns)))) {
      nbds_log_client(s->peer, "out of memory: dropping the client");
      if (c)
        free(c->in);
      free(c);
      close(s->fd);
      nbds_session_clear(s);
      nbds_export_client_gone(w->e);
      continue;
    }
    c->w = w;
    c->e = w->e;
    c->s = *s;
    c->lim.size = w->e->size;
    c->lim.max_len = NBD_MAX_REQUEST;
    c->lim.read_only = atomic_load(&w->e->top)->readonly;
    c->lim.structured = s->structured;
    c->lim.have_contexts = s->ncontexts > 0;
    w->conns[w->nconns++] = c;
  }
  w->nincoming = 0;
  bool stop = w->stop;
  pthread_mutex_unlock(&w->mu);
  return stop;
}

static void *worker_main(void *arg)
{
  struct nbds_worker *w = arg;

  for (;;) {
    unsigned np = 0;
    bool spin = false;

    if (take_incoming(w))
      break;
    take_hooked(w);
    for (unsigned i = 0; i < w->nconns; i++)
      spin |= conn_process(w->conns[i]);
    svm_io_reap(w->io, 0);          /* submit, and run what already completed */
    for (unsigned i = 0; i < w->nconns;) {
      struct nbds_conn *c = w->conns[i];
      conn_flush(c);
      if (conn_finished(c)) {
        conn_free(c);
        w->conns[i] = w->conns[--w->nconns];
        continue;
      }
      i++;
    }

    if (w->pfd_cap < w->nconns + 2) {
      struct pollfd *p = reallocarray(w->pfd, w->nconns + 2 + 16, sizeof *p);
      if (p == NULL) {
        usleep(10000);              /* out of memory: try again shortly */
        continue;
      }
      w->pfd = p;
      w->pfd_cap = w->nconns + 2 + 16;
    }
    w->pfd[np++] = (struct pollfd){ .fd = w->wake, .events = POLLIN };
    /* The engine's eventfd only while it holds requests: completions that happened inline
     * were reaped above, and waking up for their signal would cost a poll and a read. */
    w->pfd[np++] = (struct pollfd){ .fd = svm_io_in_flight(w->io) ? svm_io_event_fd(w->io) : -1,
                                    .events = POLLIN };
    for (unsigned i = 0; i < w->nconns; i++) {
      struct nbds_conn *c = w->conns[i];
      short ev = 0;
      if (conn_wants_input(c))
        ev |= POLLIN;
      if (c->out_head && !c->dead)
        ev |= POLLOUT;
      /* dead clients with I/O still in the engine: not polled (fd -1) */
      w->pfd[np++] = (struct pollfd){ .fd = c->dead ? -1 : c->s.fd, .events = ev };
    }
    if (poll(w->pfd, np, spin && w->active < w->max_active ? 0 : -1) < 0 && errno != EINTR)
      usleep(1000);
    if (w->pfd[0].revents & POLLIN) {
      uint64_t v;
      if (read(w->wake, &v, sizeof v) < 0) { /* nothing to do: it was a wake-up */ }
    }
    if (w->pfd[1].revents & POLLIN) {
      uint64_t v;
      if (read(w->pfd[1].fd, &v, sizeof v) < 0) { /* the reap below collects anyway */ }
    }
    for (unsigned i = 0; i < w->nconns; i++) {
      struct nbds_conn *c = w->conns[i];
      short re = w->pfd[i + 2].revents;
      if (re & POLLIN)
        conn_read(c);
      else if (re & (POLLERR | POLLHUP | POLLNVAL))
        conn_kill(c, "connection lost");
      if ((re & POLLOUT) && !c->dead)
        conn_flush(c);
    }
  }

  /* Stopping: drop every client, but let the engine finish what it holds first, since its
   * callbacks refer to our requests. */
  for (unsigned i = 0; i < w->nconns; i++)
    w->conns[i]->dead = true;
  while (w->active > 0) {
    /* requests still at the hook threads come back here */
    take_hooked(w);
    if (svm_io_in_flight(w->io) > 0) {
      if (svm_io_reap(w->io, 1) < 0)
        break;
    } else if (w->active > 0) {
      struct pollfd p = { .fd = w->wake, .events = POLLIN };
      uint64_t v;
      if (poll(&p, 1, 100) > 0 && read(w->wake, &v, sizeof v) < 0) { /* woken */ }
    }
  }
  for (unsigned i = 0; i < w->nconns; i++)
    conn_free(w->conns[i]);
  w->nconns = 0;
  return NULL;
}

int nbds_worker_new(struct svm_export *e, struct nbds_worker **out)
{
  struct nbds_worker *w = calloc(1, sizeof *w);
  int r;

  *out = NULL;
  if (w == NULL)
    return svm_error(ENOMEM, "out of memory");
  w->e = e;
  w->max_active = e->depth;
  w->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (w->wake < 0) {
    r = svm_error(errno, "eventfd: %s", strerror(errno));
    free(w);
    return r;
  }
  /* Twice the requests we start: a chained step (FUA sync, zero fallback) is queued from a
   * completion callback and must always find room. */
  r = svm_io_new(SVM_IO_AUTO, 2 * e->depth, &w->io);
  if (r < 0) {
    close(w->wake);
    free(w);
    return r;
  }
  pthread_mutex_init(&w->mu, NULL);
  r = pthread_create(&w->thread, NULL, worker_main, w);
  if (r != 0) {
    svm_io_free(w->io);
    close(w->wake);
    pthread_mutex_destroy(&w->mu);
    free(w);
    return svm_error(r, "cannot start an NBD I/O thread: %s", strerror(r));
  }
  *out = w;
  return 0;
}

void nbds_worker_wake(struct nbds_worker *w)
{
  uint64_t one = 1;
  if (write(w->wake, &one, sizeof one) < 0) { /* counter full: already woken */ }
}

void nbds_worker_stop(struct nbds_worker *w)
{
  if (w == NULL)
    return;
  pthread_mutex_lock(&w->mu);
  w->stop = true;
  pthread_mutex_unlock(&w->mu);
  nbds_worker_wake(w);
  pthread_join(w->thread, NULL);
  /* sessions handed over but never taken */
  for (unsigned i = 0; i < w->nincoming; i++) {
    close(w->incoming[i].fd);
    nbds_session_clear(&w->incoming[i]);
    nbds_export_client_gone(w->e);
  }
  svm_io_free(w->io);
  close(w->wake);
  pthread_mutex_destroy(&w->mu);
  free(w->incoming);
  free(w->conns);
  free(w->pfd);
  free(w);
}

int nbds_worker_add(struct nbds_worker *w, struct nbds_session *s)
{
  int fl = fcntl(s->fd, F_GETFL);

  if (fl < 0 || fcntl(s->fd, F_SETFL, fl | O_NONBLOCK) < 0)
    return svm_error(errno, "fcntl: %s", strerror(errno));
  pthread_mutex_lock(&w->mu);
  if (w->stop) {
    pthread_mutex_unlock(&w->mu);
    return svm_error(ESHUTDOWN, "export is shutting down");
  }
  if (w->nincoming == w->incoming_cap) {
    unsigned cap = w->incoming_cap * 2 + 8;
    struct nbds_session *n = reallocarray(w->incoming, cap, sizeof *n);
    if (n == NULL) {
      pthread_mutex_unlock(&w->mu);
      return svm_error(ENOMEM, "out of memory");
    }
    w->incoming = n;
    w->incoming_cap = cap;
  }
  w->incoming[w->nincoming++] = *s;
  pthread_mutex_unlock(&w->mu);
  nbds_worker_wake(w);
  return 0;
}
