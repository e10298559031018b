/* A client in the transmission phase, on its worker's thread: its bytes are parsed as they
 * arrive, each complete request is started at once (many in flight, bounded per client and per
 * worker) on the export's layer stack, and answered (reply.c) when its I/O completes, so replies
 * may leave out of order, as NBD allows. A request is "in flight" for the export (pause, swap)
 * from the moment it is started until its reply is queued; the stack pointer is read only then,
 * which is what lets svm_export_swap replace it while paused. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/error.h"
#include "nfc/tls.h"
#include "svm/nbd/internal.h"

void nbds_conn_log(struct nbds_conn *c, const char *fmt, ...)
{
  char msg[512];
  unsigned suppressed;
  va_list ap;

  if (!nbds_ratelimit_ok(&c->rl, &suppressed))
    return;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (suppressed)
    nbds_log_client(c->s.peer, "%s (%u lines about this client left out before)", msg,
                    suppressed);
  else
    nbds_log_client(c->s.peer, "%s", msg);
}

void nbds_conn_drop(struct nbds_conn *c)
{
  c->dead = true;
  c->eof = true;
}

/* Fatal for this client only: log once, stop reading and writing, close when idle. */
void nbds_conn_kill(struct nbds_conn *c, const char *fmt, ...)
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

/* Submit a started request to the layer stack; its completion answers it. */
static void req_submit(struct nbds_conn *c, struct nbds_req *q)
{
  struct nbds_worker *w = c->w;
  struct svm_layer *top = q->top;
  unsigned fua = (q->r.flags & NBD_CMD_FLAG_FUA) ? SVM_LAYER_FUA : 0;
  int r = 0;

  switch (q->r.type) {
  case NBD_CMD_READ:
    q->buf = malloc(q->r.length);
    r = q->buf ? svm_layer_read(top, w->io, q->buf, q->r.length, q->r.offset, nbds_req_done, q)
               : -ENOMEM;
    break;
  case NBD_CMD_WRITE:
    r = svm_layer_write(top, w->io, q->buf, q->r.length, q->r.offset, fua, nbds_req_done, q);
    break;
  case NBD_CMD_FLUSH:
    r = svm_layer_flush(top, w->io, nbds_req_done, q);
    break;
  case NBD_CMD_TRIM:
    r = svm_layer_trim(top, w->io, q->r.offset, q->r.length, fua, nbds_req_done, q);
    break;
  case NBD_CMD_WRITE_ZEROES: {
    unsigned f = fua;
    if (q->r.flags & NBD_CMD_FLAG_NO_HOLE)
      f |= SVM_LAYER_NO_HOLE;
    if (q->r.flags & NBD_CMD_FLAG_FAST_ZERO)
      f |= SVM_LAYER_FAST;
    r = svm_layer_zero(top, w->io, q->r.offset, q->r.length, f, nbds_req_done, q);
    break;
  }
  case NBD_CMD_BLOCK_STATUS:
    r = nbds_block_status(c, top, q);
    if (r == 0)
      nbds_req_done(q, 0);
    break;
  default:
    r = -EINVAL;
    break;
  }
  if (r < 0)
    nbds_req_done(q, r);
}

/* Start a valid request. Returns false when it must wait (paused, or no room). Policy layers
 * (change tracking, the mirror) act inside the stack, so every request starts the same way. */
static bool req_start(struct nbds_conn *c, struct nbds_req *q)
{
  struct nbds_worker *w = c->w;
  struct svm_export *e = c->e;

  if (w->active >= w->max_active)
    return false;
  if (!nbds_export_start_request(e))
    return false;
  q->top = atomic_load(&e->top);
  c->inflight++;
  w->active++;
  atomic_fetch_add(&e->st_requests, 1);
  req_submit(c, q);
  return true;
}

/* A complete request (header and payload in): answer it now or start it. */
static bool req_dispatch(struct nbds_conn *c, struct nbds_req *q)
{
  if (q->err) {
    nbds_reply_error(c, q, q->err);
    return true;
  }
  return req_start(c, q);
}

/* Room for one more request of this client (NBD_CONN_MAX_*). */
static inline bool conn_room(const struct nbds_conn *c)
{
  return c->nreqs < NBD_CONN_MAX_REQUESTS && c->bytes < NBD_CONN_MAX_BYTES;
}

/* q now counts against c's caps until it is freed (nbds_req_free). */
static void req_hold(struct nbds_conn *c, struct nbds_req *q, size_t bytes)
{
  q->held = bytes;
  c->nreqs++;
  c->bytes += bytes;
}

static bool conn_process(struct nbds_conn *c);

/* A request that has begun to arrive (a partial header, or a WRITE payload) must be in by its
 * deadline: a per-recv timeout would let a client that trickles a byte at a time hold its
 * buffers for ever. No deadline while we are not reading it (at its caps, or paused). */
bool nbds_conn_process(struct nbds_conn *c)
{
  bool r = conn_process(c);

  if (!c->dead && (c->rd || c->in_end > c->in_start) && nbds_conn_wants_input(c)) {
    if (c->deadline_ns == 0)
      c->deadline_ns = nbds_now_ns() + c->e->request_timeout_ns;
  } else {
    c->deadline_ns = 0;
  }
  return r;
}

static bool conn_process(struct nbds_conn *c)
{
  if (c->dead)
    return false;
  if (c->ready) {
    if (!req_dispatch(c, c->ready))
      return c->w->active >= c->w->max_active;
    c->ready = NULL;
  }
  while (!c->dead) {
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
      c->deadline_ns = 0;           /* it is in: the next one has a deadline of its own */
      if (!req_dispatch(c, p)) {
        c->ready = p;
        return c->w->active >= c->w->max_active;
      }
      continue;
    }
    if (c->eof || avail < NBD_REQUEST_SIZE || !conn_room(c))
      break;
    if (nbds_decode_request(c->in + c->in_start, avail, &r) < 0) {
      nbds_conn_kill(c, "bad request magic 0x%08x: dropping the client",
                nbds_get32(c->in + c->in_start));
      return false;
    }
    c->in_start += NBD_REQUEST_SIZE;
    err = nbds_check_request(&r, &c->lim, &payload);
    if (err < 0) {
      nbds_conn_kill(c, "WRITE of %u bytes (at most %d): dropping the client", r.length,
                NBD_MAX_REQUEST);
      return false;
    }
    if (r.type == NBD_CMD_DISC && err == NBD_OK) {
      c->eof = true;                /* finish what is in flight, then close */
      break;
    }
    q = calloc(1, sizeof *q);
    if (q == NULL) {
      nbds_conn_kill(c, "out of memory");
      return false;
    }
    q->c = c;
    q->r = r;
    q->err = (uint32_t)err;
    c->deadline_ns = 0;
    /* what it will hold: its payload, or its READ buffer (BLOCK_STATUS: a little) */
    req_hold(c, q, payload > 0 ? payload
                   : r.type == NBD_CMD_READ && err == NBD_OK ? r.length : 4096);
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
  } else if (c->in_start > NBD_IN_SIZE / 2) {
    memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
    c->in_end -= c->in_start;
    c->in_start = 0;
  }
  return false;
}

bool nbds_conn_wants_input(const struct nbds_conn *c)
{
  /* a WRITE payload that has begun is always taken: it is counted already */
  return !c->eof && !c->dead && c->ready == NULL && (c->rd != NULL || conn_room(c));
}

/* recv(), or a TLS read: bytes, 0 at the end of the stream, or -1 with errno (EAGAIN: wait
 * for c->rd_events). */
static inline ssize_t conn_recv(struct nbds_conn *c, void *buf, size_t len)
{
  ssize_t n;

  if (c->s.tls == NULL)
    return recv(c->s.fd, buf, len, MSG_DONTWAIT);
  n = nfc_tls_read(c->s.tls, buf, len);
  if (n >= 0) {
    c->rd_events = POLLIN;
    return n;
  }
  if (n == -EAGAIN)
    c->rd_events = nfc_tls_want(c->s.tls);
  errno = (int)-n;
  return -1;
}

/* Receive what the socket has. */
void nbds_conn_read(struct nbds_conn *c)
{
  for (;;) {
    ssize_t n;
    struct nbds_req *p = c->rd;

    if (p && c->in_start == c->in_end && p->buf && p->r.length - p->got >= 4096) {
      /* a large payload goes straight into its buffer */
      n = conn_recv(c, (uint8_t *)p->buf + p->got, p->r.length - p->got);
      if (n > 0) {
        p->got += (uint32_t)n;
        if (p->got == p->r.length)
          return;
        continue;
      }
    } else {
      if (c->in_end == NBD_IN_SIZE) {
        if (c->in_start == 0)
          return;                     /* full: parse first */
        memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
        c->in_end -= c->in_start;
        c->in_start = 0;
      }
      n = conn_recv(c, c->in + c->in_end, NBD_IN_SIZE - c->in_end);
      if (n > 0) {
        c->in_end += (size_t)n;
        return;
      }
    }
    if (n == 0) {
      if (c->rd || c->in_start != c->in_end)
        nbds_conn_kill(c, "disconnected in the middle of a request");
      c->eof = true;
      return;
    }
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      nbds_conn_kill(c, "receive: %s", strerror(errno));
    return;
  }
}

void nbds_conn_free(struct nbds_conn *c)
{
  struct nbds_req *q = c->out_head;
  while (q) {
    struct nbds_req *n = q->next;
    nbds_req_free(q);
    q = n;
  }
  nbds_req_free(c->rd);
  nbds_req_free(c->ready);
  nbds_session_end_tls(&c->s);
  close(c->s.fd);
  nbds_session_clear(&c->s);
  free(c->in);
  nbds_client_gone(c->s.l);
  free(c);
}

bool nbds_conn_finished(const struct nbds_conn *c)
{
  if (c->inflight > 0)
    return false;
  if (c->dead)
    return true;
  return c->eof && c->ready == NULL && c->rd == NULL && c->out_head == NULL;
}

struct nbds_conn *nbds_conn_new(struct nbds_worker *w, const struct nbds_session *s)
{
  struct nbds_conn *c = calloc(1, sizeof *c);

  if (c == NULL || (c->in = malloc(NBD_IN_SIZE)) == NULL) {
    free(c);
    return NULL;
  }
  c->w = w;
  c->e = s->e;
  c->s = *s;
  c->lim.size = s->e->size;
  c->lim.max_len = NBD_MAX_REQUEST;
  c->lim.read_only = atomic_load(&s->e->top)->readonly;
  c->lim.structured = s->structured;
  c->lim.have_contexts = s->ncontexts > 0;
  c->rd_events = POLLIN;
  c->wr_events = POLLOUT;
  return c;
}
