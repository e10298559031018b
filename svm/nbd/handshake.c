/* The fixed newstyle handshake, on a thread of its own per client (export.c), with one
 * deadline for the whole of it (s->deadline_ns): a client that sends a byte now and then
 * never trips a per-recv timeout, but it does not outlive this one. Every option is
 * length-checked before its payload is read; malformed options get the protocol's error reply and the client may go on, while a broken
 * stream (bad magic, truncated data, timeout) ends the client. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "nfc/tls.h"
#include "svm/nbd/internal.h"

enum { MAX_OPTIONS = 1024 };    /* a client looping forever on options is dropped */

/* What an option step says: go on with the next option, transmission starts, the client ended
 * the handshake (ABORT); negative: drop the client. */
enum { OPT_NEXT = 0, OPT_TRANSMIT = 1, OPT_ENDED = 2 };

/* Wait until fd is ready for `events` or the handshake's deadline passes. */
static int wait_ready(struct nbds_session *s, short events, const char *what)
{
  for (;;) {
    uint64_t now = nbds_now_ns();
    struct pollfd p = { .fd = s->fd, .events = events };
    int n;

    if (now >= s->deadline_ns)
      return svm_error(ETIMEDOUT, "handshake timed out: not complete within %llu s (%s)",
                       (unsigned long long)(s->e->handshake_timeout_ns / 1000000000u), what);
    n = poll(&p, 1, (int)((s->deadline_ns - now) / 1000000) + 1);
    if (n > 0 || (n < 0 && errno != EINTR))
      return 0;                     /* ready, or an error the next call reports */
  }
}

/* recv() or a TLS read: bytes, 0 at the end of the stream, or -1 with errno. */
static ssize_t hs_recv(struct nbds_session *s, void *buf, size_t len, short *want)
{
  ssize_t n;

  *want = POLLIN;
  if (s->tls == NULL)
    return recv(s->fd, buf, len, MSG_DONTWAIT);
  n = nfc_tls_read(s->tls, buf, len);
  if (n >= 0)
    return n;
  if (n == -EAGAIN)
    *want = nfc_tls_want(s->tls);
  errno = (int)-n;
  return -1;
}

static ssize_t hs_send(struct nbds_session *s, const void *buf, size_t len, short *want)
{
  ssize_t n;

  *want = POLLOUT;
  if (s->tls == NULL)
    return send(s->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
  n = nfc_tls_write(s->tls, buf, len);
  if (n >= 0)
    return n;
  if (n == -EAGAIN)
    *want = nfc_tls_want(s->tls);
  errno = (int)-n;
  return -1;
}

static int recv_full(struct nbds_session *s, void *buf, size_t len, const char *what)
{
  uint8_t *p = buf;
  while (len > 0) {
    short want;
    ssize_t n = hs_recv(s, p, len, &want);
    if (n == 0 || (n < 0 && errno == ECONNRESET))
      return svm_error(ECONNRESET, "disconnected during the handshake (reading %s)", what);
    if (n < 0) {
      int r;
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        return svm_error(errno, "handshake: reading %s: %s", what, strerror(errno));
      r = wait_ready(s, want, what);
      if (r < 0)
        return r;
      continue;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int discard(struct nbds_session *s, uint32_t len)
{
  uint8_t tmp[4096];
  while (len > 0) {
    uint32_t n = len < sizeof tmp ? len : (uint32_t)sizeof tmp;
    int r = recv_full(s, tmp, n, "option payload");
    if (r < 0)
      return r;
    len -= n;
  }
  return 0;
}

static int send_full(struct nbds_session *s, const void *buf, size_t len)
{
  const uint8_t *p = buf;
  while (len > 0) {
    short want;
    ssize_t n = hs_send(s, p, len, &want);
    if (n < 0) {
      int r;
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        return svm_error(errno, "handshake: send: %s", strerror(errno));
      r = wait_ready(s, want, "client not reading");
      if (r < 0)
        return r;
      continue;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int reply(struct nbds_session *s, uint32_t opt, uint32_t type, const void *data,
                 uint32_t len)
{
  uint8_t hdr[20];
  int r;

  nbds_put64(hdr, NBD_REP_MAGIC);
  nbds_put32(hdr + 8, opt);
  nbds_put32(hdr + 12, type);
  nbds_put32(hdr + 16, len);
  r = send_full(s, hdr, sizeof hdr);
  if (r == 0 && len > 0)
    r = send_full(s, data, len);
  return r;
}

uint16_t nbds_export_tflags(const struct svm_export *e, bool structured)
{
  struct svm_layer *top = atomic_load(&((struct svm_export *)e)->top);
  uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
               NBD_FLAG_CAN_MULTI_CONN;
  if (top->readonly)
    f |= NBD_FLAG_READ_ONLY;
  else
    f |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
  if (structured)
    f |= NBD_FLAG_SEND_DF;    /* reads always go out in one chunk */
  return f;
}

void nbds_session_end_tls(struct nbds_session *s)
{
  if (s->tls) {
    nfc_tls_shutdown(s->tls);
    nfc_tls_free(s->tls);
    s->tls = NULL;
  }
}

/* NBD_OPT_STARTTLS: acknowledged in plaintext, then the TLS handshake, within the handshake's
 * deadline. What was negotiated before is forgotten (the protocol says so: it could have been
 * tampered with). */
static int opt_starttls(struct svm_export *e, struct nbds_session *s, uint32_t opt, uint32_t len)
{
  uint64_t now;
  int r;

  if (e->tls == NULL)
    return reply(s, opt, NBD_REP_ERR_UNSUP, NULL, 0);
  if (len != 0 || s->tls)
    return reply(s, opt, NBD_REP_ERR_INVALID, NULL, 0);
  r = reply(s, opt, NBD_REP_ACK, NULL, 0);
  if (r < 0)
    return r;
  r = nfc_tls_new(e->tls, s->fd, s->peer, NULL, &s->tls);
  if (r < 0)
    return r;
  now = nbds_now_ns();
  r = nfc_tls_handshake(s->tls, now >= s->deadline_ns ? 0
                                 : (int)((s->deadline_ns - now) / 1000000) + 1);
  if (r < 0)
    return svm_error_prefix("STARTTLS");
  s->structured = false;
  nbds_session_clear(s);
  return OPT_NEXT;
}

void nbds_session_clear(struct nbds_session *s)
{
  for (unsigned i = 0; i < s->ncontexts; i++)
    free(s->contexts[i].name);
  s->ncontexts = 0;
}

/* NBD_OPT_INFO / NBD_OPT_GO: describe the export; GO then starts transmission. */
static int opt_info(struct svm_export *e, struct nbds_session *s, uint32_t opt,
                    const uint8_t *d, uint32_t len)
{
  struct nbds_go go;
  uint8_t info[14];
  uint32_t err = nbds_parse_go(d, len, &go);
  bool want_name = false;
  int r;

  if (err)
    return reply(s, opt, err, NULL, 0);
  if (!nbds_name_matches(go.name, go.namelen, e->name))
    return reply(s, opt, NBD_REP_ERR_UNKNOWN, NULL, 0);
  for (unsigned i = 0; i < go.ninfo; i++)
    if (nbds_get16(go.info + 2 * i) == NBD_INFO_NAME)
      want_name = true;

  nbds_put16(info, NBD_INFO_EXPORT);
  nbds_put64(info + 2, e->size);
  nbds_put16(info + 10, nbds_export_tflags(e, s->structured));
  r = reply(s, opt, NBD_REP_INFO, info, 12);
  if (r < 0)
    return r;
  /* Block sizes: any alignment works (buffered I/O), 4 KiB is best, 32 MiB at most. */
  nbds_put16(info, NBD_INFO_BLOCK_SIZE);
  nbds_put32(info + 2, NBD_MIN_BLOCK);
  nbds_put32(info + 6, NBD_PREF_BLOCK);
  nbds_put32(info + 10, NBD_MAX_REQUEST);
  r = reply(s, opt, NBD_REP_INFO, info, 14);
  if (r < 0)
    return r;
  if (want_name) {
    size_t nl = strlen(e->name);
    uint8_t *buf = malloc(2 + nl);
    if (buf == NULL)
      return svm_error(ENOMEM, "out of memory");
    nbds_put16(buf, NBD_INFO_NAME);
    memcpy(buf + 2, e->name, nl);
    r = reply(s, opt, NBD_REP_INFO, buf, (uint32_t)(2 + nl));
    free(buf);
    if (r < 0)
      return r;
  }
  r = reply(s, opt, NBD_REP_ACK, NULL, 0);
  if (r < 0)
    return r;
  return opt == NBD_OPT_GO ? OPT_TRANSMIT : OPT_NEXT;
}

static int meta_reply(struct nbds_session *s, uint32_t opt, uint32_t id, const char *name)
{
  size_t nl = strlen(name);
  uint8_t buf[4 + NBD_MAX_STRING + 64];
  if (nl > NBD_MAX_STRING + 60)
    nl = NBD_MAX_STRING + 60;
  nbds_put32(buf, id);
  memcpy(buf + 4, name, nl);
  return reply(s, opt, NBD_REP_META_CONTEXT, buf, (uint32_t)(4 + nl));
}

/* Add a context to the session (SET) or just report it (LIST). */
static int meta_match(struct nbds_session *s, uint32_t opt, int provider, const char *name)
{
  uint32_t id = 0;
  if (opt == NBD_OPT_SET_META_CONTEXT) {
    unsigned i;
    for (i = 0; i < s->ncontexts; i++)
      if (strcmp(s->contexts[i].name, name) == 0)
        break;
    if (i == s->ncontexts) {
      if (s->ncontexts == NBD_MAX_CONTEXTS)
        return 0;                   /* quietly not selected: the client sees which were */
      s->contexts[i].name = strdup(name);
      if (s->contexts[i].name == NULL)
        return svm_error(ENOMEM, "out of memory");
      s->contexts[i].provider = provider;
      s->ncontexts++;
    }
    id = i;
  }
  return meta_reply(s, opt, id, name);
}

static int opt_meta(struct svm_export *e, struct nbds_session *s, uint32_t opt,
                    const uint8_t *d, uint32_t len)
{
  struct nbds_meta m;
  uint32_t err, pos;
  bool list = opt == NBD_OPT_LIST_META_CONTEXT;
  unsigned np = atomic_load_explicit(&e->nproviders, memory_order_acquire);
  int r;

  if (!list && !s->structured)
    return reply(s, opt, NBD_REP_ERR_INVALID, NULL, 0);
  err = nbds_parse_meta(d, len, &m);
  if (err)
    return reply(s, opt, err, NULL, 0);
  if (!nbds_name_matches(m.name, m.namelen, e->name))
    return reply(s, opt, NBD_REP_ERR_UNKNOWN, NULL, 0);
  if (!list)
    nbds_session_clear(s);           /* each SET replaces the previous selection */
  if (list && m.nqueries == 0) {
    r = meta_match(s, opt, -1, "base:allocation");
    if (r < 0)
      return r;
  }
  pos = m.first;
  for (uint32_t i = 0; i < m.nqueries; i++) {
    const char *q;
    uint32_t qlen;
    char name[NBD_MAX_STRING + 1];

    nbds_meta_next(d, &pos, &q, &qlen);
    memcpy(name, q, qlen);
    name[qlen] = '\0';
    if (strlen(name) != qlen)
      continue;                     /* embedded NUL: names no context */
    if (strcmp(name, "base:allocation") == 0 || (list && strcmp(name, "base:") == 0)) {
      r = meta_match(s, opt, -1, "base:allocation");
      if (r < 0)
        return r;
      continue;
    }
    for (unsigned p = 0; p < np; p++) {
      const char *pre = e->providers[p].prefix;
      size_t pl = strlen(pre);
      if (strncmp(name, pre, pl) != 0 || name[pl] == '\0')
        continue;                   /* a bare namespace query cannot be enumerated */
      if (e->providers[p].resolve(e->providers[p].opaque, name) == 0) {
        r = meta_match(s, opt, (int)p, name);
        if (r < 0)
          return r;
      }
      svm_error_clear();
      break;
    }
  }
  return reply(s, opt, NBD_REP_ACK, NULL, 0);
}

/* NBD_OPT_EXPORT_NAME: the old way to start transmission (no reply on failure: the client
 * is dropped, as the protocol says). */
static int opt_export_name(struct svm_export *e, struct nbds_session *s, const uint8_t *d,
                           uint32_t len, bool no_zeroes)
{
  uint8_t tail[10 + 124] = { 0 };
  int r;

  if (!nbds_name_matches((const char *)d, len, e->name))
    return svm_error(ENOENT, "unknown export '%.*s' (NBD_OPT_EXPORT_NAME)",
                     (int)(len < 256 ? len : 256), (const char *)d);
  nbds_put64(tail, e->size);
  nbds_put16(tail + 8, nbds_export_tflags(e, s->structured));
  r = send_full(s, tail, no_zeroes ? 10 : sizeof tail);
  return r < 0 ? r : OPT_TRANSMIT;
}

static int opt_list(struct svm_export *e, struct nbds_session *s, uint32_t opt, uint32_t len)
{
  size_t nl = strlen(e->name);
  uint8_t srv[4 + NBD_MAX_STRING];
  int r;

  if (len != 0)
    return reply(s, opt, NBD_REP_ERR_INVALID, NULL, 0);
  if (nl > NBD_MAX_STRING)
    nl = NBD_MAX_STRING;
  nbds_put32(srv, (uint32_t)nl);
  memcpy(srv + 4, e->name, nl);
  r = reply(s, opt, NBD_REP_SERVER, srv, (uint32_t)(4 + nl));
  return r < 0 ? r : reply(s, opt, NBD_REP_ACK, NULL, 0);
}

/* One option: OPT_NEXT, OPT_TRANSMIT (GO, EXPORT_NAME), OPT_ENDED, or negative. */
static int opt_dispatch(struct svm_export *e, struct nbds_session *s, uint32_t opt,
                        const uint8_t *d, uint32_t len, bool no_zeroes)
{
  if (s->tls_required && s->tls == NULL && opt != NBD_OPT_STARTTLS && opt != NBD_OPT_ABORT) {
    /* TCP to an export with TLS: nothing in plaintext, not even the export's name */
    if (opt == NBD_OPT_EXPORT_NAME)
      return svm_error(EACCES, "NBD_OPT_EXPORT_NAME in plaintext: this export requires TLS "
                       "(the client must use NBD_OPT_STARTTLS, e.g. nbdinfo --tls=require)");
    return reply(s, opt, NBD_REP_ERR_TLS_REQD, NULL, 0);
  }
  switch (opt) {
  case NBD_OPT_STARTTLS:
    return opt_starttls(e, s, opt, len);
  case NBD_OPT_EXPORT_NAME:
    return opt_export_name(e, s, d, len, no_zeroes);
  case NBD_OPT_ABORT:
    (void)reply(s, opt, NBD_REP_ACK, NULL, 0);   /* the client may already be gone */
    return OPT_ENDED;
  case NBD_OPT_LIST:
    return opt_list(e, s, opt, len);
  case NBD_OPT_INFO:
  case NBD_OPT_GO:
    return opt_info(e, s, opt, d, len);
  case NBD_OPT_STRUCTURED_REPLY:
    if (len != 0)
      return reply(s, opt, NBD_REP_ERR_INVALID, NULL, 0);
    s->structured = true;
    return reply(s, opt, NBD_REP_ACK, NULL, 0);
  case NBD_OPT_LIST_META_CONTEXT:
  case NBD_OPT_SET_META_CONTEXT:
    return opt_meta(e, s, opt, d, len);
  default:                      /* unknown */
    return reply(s, opt, NBD_REP_ERR_UNSUP, NULL, 0);
  }
}

/* The server's greeting and the client's flags. */
static int greet(struct nbds_session *s, bool *no_zeroes)
{
  uint8_t hello[18], buf[4];
  uint32_t cflags;
  int r;

  nbds_put64(hello, NBD_MAGIC);
  nbds_put64(hello + 8, NBD_IHAVEOPT);
  nbds_put16(hello + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
  r = send_full(s, hello, sizeof hello);
  if (r < 0)
    return r;
  r = recv_full(s, buf, 4, "client flags");
  if (r < 0)
    return r;
  cflags = nbds_get32(buf);
  if (cflags & ~(uint32_t)(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES))
    return svm_error(EPROTO, "unknown client flags 0x%x", cflags);
  *no_zeroes = cflags & NBD_FLAG_NO_ZEROES;
  return 0;
}

/* The next option's header and payload (into data, NBD_MAX_OPTION bytes). Returns 1 with
 * *opt and *len set, 0 when an oversized option was skipped (and answered), or negative. */
static int read_option(struct nbds_session *s, uint8_t *data, uint32_t *opt, uint32_t *len)
{
  uint8_t buf[NBD_OPT_HEADER_SIZE];
  int r = recv_full(s, buf, sizeof buf, "option header");

  if (r < 0)
    return r;
  if (nbds_decode_option(buf, sizeof buf, opt, len) < 0)
    return svm_error(EPROTO, "bad option magic 0x%016llx", (unsigned long long)nbds_get64(buf));
  if (*len > NBD_MAX_OPTION) {
    if (*len > NBD_MAX_OPTION_DISCARD || *opt == NBD_OPT_EXPORT_NAME)
      return svm_error(EPROTO, "option %u with a %u-byte payload (at most %d)", *opt, *len,
                       NBD_MAX_OPTION);
    r = discard(s, *len);
    if (r == 0)
      r = reply(s, *opt, NBD_REP_ERR_TOO_BIG, NULL, 0);
    return r;
  }
  r = recv_full(s, data, *len, "option payload");
  return r < 0 ? r : 1;
}

int nbds_handshake(struct svm_export *e, struct nbds_session *s)
{
  CLEANUP_FREE uint8_t *data = NULL;
  bool no_zeroes = false;
  int r = greet(s, &no_zeroes);

  if (r < 0)
    return r;
  data = malloc(NBD_MAX_OPTION);
  if (data == NULL)
    return svm_error(ENOMEM, "out of memory");
  for (unsigned n = 0; n < MAX_OPTIONS; n++) {
    uint32_t opt, len;

    r = read_option(s, data, &opt, &len);
    if (r > 0)
      r = opt_dispatch(e, s, opt, data, len, no_zeroes);
    if (r < 0 || r == OPT_TRANSMIT)
      return r;
    if (r == OPT_ENDED)
      return 0;                 /* ABORT: ended cleanly */
  }
  return svm_error(EPROTO, "more than %d options without starting transmission", MAX_OPTIONS);
}
