/* NFC connections: frame I/O over a blocking transport (see conn.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/error.h"
#include "nfc/conn.h"

struct nfc_conn {
  const struct nfc_transport_ops *ops;
  void *opaque;
  char peer[128];
  uint64_t sent, received;
  struct nfc_rate *rate;
};

/* ---- the plain transport ---------------------------------------------------------------- */

static ssize_t fd_read(void *opaque, void *buf, size_t len)
{
  int fd = (int)(intptr_t)opaque;
  for (;;) {
    ssize_t n = read(fd, buf, len);
    if (n >= 0)
      return n;
    if (errno != EINTR)
      return -errno;
  }
}

static ssize_t fd_write(void *opaque, const void *buf, size_t len)
{
  int fd = (int)(intptr_t)opaque;
  for (;;) {
    /* MSG_NOSIGNAL: a peer gone is -EPIPE here, not a SIGPIPE for the whole agent. */
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    if (n < 0 && errno == ENOTSOCK)
      n = write(fd, buf, len);
    if (n >= 0)
      return n;
    if (errno != EINTR)
      return -errno;
  }
}

static void fd_close(void *opaque)
{
  close((int)(intptr_t)opaque);
}

static void fd_abort(void *opaque)
{
  shutdown((int)(intptr_t)opaque, SHUT_RDWR);
}

static const struct nfc_transport_ops fd_ops = { "plain", fd_read, fd_write, fd_close,
                                                 fd_abort };

/* ---- life ----------------------------------------------------------------------------- */

int nfc_conn_new(const struct nfc_transport_ops *ops, void *opaque, const char *peer,
                 struct nfc_conn **out)
{
  struct nfc_conn *c = calloc(1, sizeof *c);

  if (c == NULL) {
    if (ops->close)
      ops->close(opaque);
    return svm_error(ENOMEM, "out of memory");
  }
  c->ops = ops;
  c->opaque = opaque;
  snprintf(c->peer, sizeof c->peer, "%s", peer ? peer : "peer");
  *out = c;
  return 0;
}

int nfc_conn_new_fd(int fd, const char *peer, struct nfc_conn **out)
{
  return nfc_conn_new(&fd_ops, (void *)(intptr_t)fd, peer, out);
}

void nfc_conn_free(struct nfc_conn *c)
{
  if (c == NULL)
    return;
  if (c->ops->close)
    c->ops->close(c->opaque);
  free(c);
}

void nfc_conn_abort(struct nfc_conn *c)
{
  if (c->ops->abort)
    c->ops->abort(c->opaque);
}

const char *nfc_conn_peer(const struct nfc_conn *c) { return c->peer; }
uint64_t nfc_conn_bytes_sent(const struct nfc_conn *c) { return c->sent; }
uint64_t nfc_conn_bytes_received(const struct nfc_conn *c) { return c->received; }
void nfc_conn_set_rate(struct nfc_conn *c, struct nfc_rate *rate) { c->rate = rate; }

/* ---- frames ---------------------------------------------------------------------------- */

static int write_all(struct nfc_conn *c, const void *buf, size_t len)
{
  const char *p = buf;

  while (len > 0) {
    ssize_t n = c->ops->write(c->opaque, p, len);
    if (n < 0)
      return (int)n;
    if (n == 0)
      return -EPIPE;
    p += n;
    len -= (size_t)n;
    c->sent += (uint64_t)n;
  }
  return 0;
}

/* 0, or -ENODATA when the stream ended before the first byte, -ECONNRESET inside. */
static int read_all(struct nfc_conn *c, void *buf, size_t len)
{
  char *p = buf;
  size_t got = 0;

  while (got < len) {
    ssize_t n = c->ops->read(c->opaque, p + got, len - got);
    if (n < 0)
      return (int)n;
    if (n == 0)
      return got == 0 ? -ENODATA : -ECONNRESET;
    got += (size_t)n;
    c->received += (uint64_t)n;
  }
  return 0;
}

int nfc_conn_send(struct nfc_conn *c, struct nfc_hdr *h, const void *payload)
{
  uint8_t hdr[NFC_HDR_SIZE];
  int r;

  h->crc = h->len ? svm_crc32c(0, payload, h->len) : 0;
  nfc_hdr_encode(hdr, h);
  if (c->rate != NULL)
    nfc_rate_take(c->rate, NFC_HDR_SIZE + (uint64_t)h->len);
  if ((r = write_all(c, hdr, sizeof hdr)) == 0 && h->len > 0)
    r = write_all(c, payload, h->len);
  return r;
}

void nfc_conn_send_error(struct nfc_conn *c, int errnum, const char *fmt, ...)
{
  char msg[NFC_MAX_MSG];
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n < 0)
    n = 0;
  if ((size_t)n >= sizeof msg)
    n = sizeof msg - 1;
  struct nfc_hdr h = { .type = NFC_ERROR, .len = (uint32_t)n, .off = (uint64_t)errnum };
  nfc_conn_send(c, &h, msg);
}

int nfc_conn_recv_hdr(struct nfc_conn *c, struct nfc_hdr *h)
{
  uint8_t hdr[NFC_HDR_SIZE];
  int r;

  if ((r = read_all(c, hdr, sizeof hdr)) < 0)
    return r;
  return nfc_hdr_decode(hdr, h);
}

int nfc_conn_recv_payload(struct nfc_conn *c, const struct nfc_hdr *h, void *buf)
{
  int r;

  if (h->len > 0 && (r = read_all(c, buf, h->len)) < 0)
    return r == -ENODATA ? -ECONNRESET : r;
  return nfc_payload_check(h, buf);
}

int nfc_conn_recv(struct nfc_conn *c, struct nfc_hdr *h, void *payload, size_t cap)
{
  int r;

  if ((r = nfc_conn_recv_hdr(c, h)) < 0)
    return r;
  if (h->len > cap)
    return -ENOBUFS;
  return nfc_conn_recv_payload(c, h, payload);
}

int nfc_conn_expect(struct nfc_conn *c, uint8_t type, struct nfc_hdr *h)
{
  char msg[NFC_MAX_MSG + 1];
  int r = nfc_conn_recv(c, h, msg, NFC_MAX_MSG);

  if (r < 0)
    return svm_error(-r, "%s: %s", c->peer,
                     r == -ENODATA || r == -ECONNRESET ? "connection closed"
                     : r == -EBADMSG ? "a frame failed its CRC-32C check"
                                     : strerror(-r));
  if (h->type == NFC_ERROR && type != NFC_ERROR) {
    msg[h->len] = '\0';
    return svm_error(h->off > 0 && h->off < 4096 ? (int)h->off : EIO, "%s refused: %s",
                     c->peer, msg);
  }
  if (h->type != type || h->len != 0)
    return svm_error(EPROTO, "%s: protocol error: frame type %u where %u was due", c->peer,
                     h->type, type);
  return 0;
}
