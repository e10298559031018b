/* Answers: reply headers (simple and structured), errors, BLOCK_STATUS chunks, and sending
 * what is queued. A request's reply is queued when its I/O completes (nbds_req_done), which is
 * also when it stops counting as in flight for pause and swap; replies leave in completion
 * order, batched in one sendmsg() per loop turn. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "common/error.h"
#include "nfc/tls.h"
#include "svm/nbd/internal.h"

enum {
  MAX_IOV = 64,
  MAX_EXTENTS = 2048,               /* per context per BLOCK_STATUS reply */
  MAX_LOGGED_ERRORS = 8,            /* request errors logged per client */
};

void nbds_req_free(struct nbds_req *q)
{
  if (q == NULL)
    return;
  if (q->c) {
    q->c->nreqs--;
    q->c->bytes -= q->held;
  }
  free(q->buf);
  free(q);
}

static void queue_reply(struct nbds_conn *c, struct nbds_req *q)
{
  if (c->dead) {
    nbds_req_free(q);
    return;
  }
  q->next = NULL;
  q->sent = 0;
  if (c->out_tail)
    c->out_tail->next = q;
  else
    c->out_head = q;
  c->out_tail = q;
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

void nbds_reply_error(struct nbds_conn *c, struct nbds_req *q, uint32_t err)
{
  char tmp[16];

  atomic_fetch_add(&c->e->st_errors, 1);
  if (c->errors_logged < MAX_LOGGED_ERRORS) {
    c->errors_logged++;
    nbds_conn_log(c, "%s offset %llu length %u flags 0x%x: answered with NBD error %u%s",
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

void nbds_req_done(void *opaque, int64_t res)
{
  struct nbds_req *q = opaque;
  struct nbds_conn *c = q->c;

  /* A read answers with all of its buffer: one that completed with fewer bytes than asked
   * (a layer that let a short read through) would send memory it never filled. */
  if (res >= 0 && q->r.type == NBD_CMD_READ && (uint64_t)res != q->r.length)
    res = -EIO;
  if (res < 0)
    nbds_reply_error(c, q, nbds_errno_to_wire((int)-res));
  else
    reply_ok(c, q);
  c->inflight--;
  c->w->active--;
  nbds_export_end_request(c->e);
}

/* ---- BLOCK_STATUS ---- */

/* The disk's extent flags in base:allocation's terms (the disk layer does not speak NBD). */
static uint32_t base_flags(uint32_t f)
{
  return ((f & SVM_EXTENT_HOLE) ? NBD_STATE_HOLE : 0) | ((f & SVM_EXTENT_ZERO) ? NBD_STATE_ZERO : 0);
}

static int status_base(struct svm_layer *top, struct nbds_req *q, uint8_t *out, size_t *n)
{
  struct svm_layer_extent ext[64];
  size_t max = (q->r.flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : MAX_EXTENTS;
  uint64_t off = q->r.offset, end = q->r.offset + q->r.length;

  *n = 0;
  while (off < end && *n < max) {
    size_t got = 0, lim = max - *n < 64 ? max - *n : 64;
    int r = svm_layer_block_status(top, off, end - off, ext, lim, &got);
    if (r < 0)
      return r;
    if (got == 0)
      break;
    for (size_t i = 0; i < got; i++) {
      uint32_t fl = base_flags(ext[i].flags);
      /* merge with the previous descriptor when the flags match */
      if (*n > 0 && nbds_get32(out + 8 * (*n - 1) + 4) == fl) {
        uint32_t l = nbds_get32(out + 8 * (*n - 1));
        nbds_put32(out + 8 * (*n - 1), l + (uint32_t)ext[i].length);
      } else {
        nbds_put32(out + 8 * *n, (uint32_t)ext[i].length);
        nbds_put32(out + 8 * *n + 4, fl);
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

int nbds_block_status(struct nbds_conn *c, struct svm_layer *top, struct nbds_req *q)
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
      nbds_conn_log(c, "BLOCK_STATUS %s: %s", ctx->name, svm_last_error());
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

/* The queue's first `sent` bytes are out: free the replies they complete. */
static void sent_bytes(struct nbds_conn *c, size_t sent)
{
  while (sent > 0) {
    struct nbds_req *q = c->out_head;
    size_t left = q->hdrlen + q->buflen - q->sent;
    if (sent < left) {
      q->sent += sent;
      break;
    }
    sent -= left;
    c->out_head = q->next;
    if (c->out_head == NULL)
      c->out_tail = NULL;
    nbds_req_free(q);
  }
}

/* TLS has no writev: each reply's header and data go as they are (TLS makes its records),
 * until the session would block. A retried write passes the same buffer and length, as
 * OpenSSL requires. */
static void send_tls(struct nbds_conn *c)
{
  while (c->out_head && !c->dead) {
    struct nbds_req *q = c->out_head;
    const uint8_t *p;
    size_t len;
    ssize_t n;

    if (q->sent < q->hdrlen) {
      p = q->hdr + q->sent;
      len = q->hdrlen - q->sent;
    } else {
      p = (const uint8_t *)q->buf + (q->sent - q->hdrlen);
      len = q->hdrlen + q->buflen - q->sent;
    }
    if (len == 0) {                 /* nothing to send (cannot happen today): next */
      c->out_head = q->next;
      if (c->out_head == NULL)
        c->out_tail = NULL;
      nbds_req_free(q);
      continue;
    }
    n = nfc_tls_write(c->s.tls, p, len);
    if (n == -EAGAIN) {
      c->wr_events = nfc_tls_want(c->s.tls);
      return;
    }
    if (n < 0) {
      nbds_conn_kill(c, "send: %s", svm_last_error());
      return;
    }
    c->wr_events = POLLOUT;
    sent_bytes(c, (size_t)n);
  }
}

/* Send queued replies, as many as one sendmsg() takes. */
void nbds_conn_send(struct nbds_conn *c)
{
  if (c->s.tls) {
    send_tls(c);
    return;
  }
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
        nbds_conn_kill(c, "send: %s", strerror(errno));
      return;
    }
    sent_bytes(c, (size_t)sent);
  }
}
