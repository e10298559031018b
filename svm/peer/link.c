/* The peer link's client side and the message I/O both sides share: credentials, dial, one
 * message each way, identity check. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/x509v3.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "svm/peer/peer.h"

int svm_peer_creds_load(const char *tls_dir, const char *psk_file, bool insecure,
                        struct svm_peer_creds *out)
{
  int r;

  memset(out, 0, sizeof *out);
  if ((tls_dir && psk_file) || (insecure && (tls_dir || psk_file)))
    return svm_error(EINVAL, "give one of --tls-dir, --tls-psk and --insecure");
  if (!tls_dir && !psk_file) {
    if (insecure)
      return 0;
    return svm_error(EINVAL, "the peer link needs TLS credentials: --tls-dir DIR (svmctl tls "
                     "init makes one) or --tls-psk FILE; --insecure allows plaintext (tests)");
  }
  if (tls_dir) {
    r = nfc_tls_config_x509(NFC_TLS_CLIENT, tls_dir, &out->client);
    if (r == 0)
      r = nfc_tls_config_x509(NFC_TLS_SERVER, tls_dir, &out->server);
  } else {
    r = nfc_tls_config_psk(NFC_TLS_CLIENT, psk_file, &out->client);
    if (r == 0)
      r = nfc_tls_config_psk(NFC_TLS_SERVER, psk_file, &out->server);
  }
  if (r < 0)
    svm_peer_creds_clear(out);
  return r;
}

void svm_peer_creds_clear(struct svm_peer_creds *c)
{
  nfc_tls_config_free(c->client);
  nfc_tls_config_free(c->server);
  c->client = c->server = NULL;
}

int svm_peer_send(struct nfc_tls *t, const struct svm_peer_msg *m, int timeout_ms)
{
  static _Thread_local char frame[SVM_PEER_HDR_SIZE + SVM_PEER_MAX_PAYLOAD];
  size_t len = svm_peer_msg_payload(m, frame + SVM_PEER_HDR_SIZE);

  svm_peer_hdr_format((uint8_t *)frame, m->type, (uint32_t)len);
  return nfc_tls_write_full(t, frame, SVM_PEER_HDR_SIZE + len, timeout_ms);
}

int svm_peer_recv(struct nfc_tls *t, struct svm_peer_msg *m, int timeout_ms)
{
  static _Thread_local char payload[SVM_PEER_MAX_PAYLOAD];
  uint8_t hdr[SVM_PEER_HDR_SIZE];
  uint32_t len;
  uint8_t type;
  ssize_t n;
  int r;

  /* The first byte alone: a clean end of stream between messages is not an error. */
  n = nfc_tls_read_some(t, hdr, 1, timeout_ms);
  if (n < 0)
    return (int)n;
  if (n == 0)
    return -ENODATA;
  if ((r = nfc_tls_read_full(t, hdr + 1, sizeof hdr - 1, timeout_ms)) < 0)
    return r;
  if ((r = svm_peer_hdr_parse(hdr, &type, &len)) < 0)
    return svm_error_prefix("%s", nfc_tls_peer(t));
  if ((r = nfc_tls_read_full(t, payload, len, timeout_ms)) < 0)
    return r;
  if ((r = svm_peer_payload_parse(m, payload, len)) < 0)
    return svm_error_prefix("%s", nfc_tls_peer(t));
  m->type = type;
  return 0;
}

void svm_peer_send_error(struct nfc_tls *t, int errnum, const char *msg)
{
  svm_peer_send_error_seq(t, errnum, msg, NULL);
}

void svm_peer_send_error_seq(struct nfc_tls *t, int errnum, const char *msg, const char *seq)
{
  struct svm_peer_msg *m = malloc(sizeof *m);

  if (!m)
    return;
  svm_peer_msg_init(m, SVM_PEER_ERROR);
  svm_peer_msg_add(m, "errno", "%d", errnum < 0 ? -errnum : errnum);
  svm_peer_msg_add(m, "message", "%s", msg);
  if (seq)
    svm_peer_msg_add(m, "seq", "%s", seq);
  svm_peer_send(t, m, 2000);
  free(m);
}

/* An ERROR message as -errno with its text. */
static int peer_error(struct nfc_tls *t, const struct svm_peer_msg *m)
{
  uint64_t e = 0;
  const char *msg = svm_peer_get(m, "message");

  if (svm_peer_get_u64(m, "errno", &e) < 0 || e == 0 || e > 4095)
    e = EPROTO;
  return svm_error((int)e, "peer %s: %s", nfc_tls_peer(t), msg ? msg : "error");
}

int svm_peer_call(struct nfc_tls *t, struct svm_peer_msg *m, int timeout_ms)
{
  static _Atomic unsigned long next_seq = 1;
  unsigned long seq = next_seq++;
  uint8_t sent = m->type;
  char want[24];
  const char *got;
  int r;

  snprintf(want, sizeof want, "%lu", seq);
  if ((r = svm_peer_msg_add(m, "seq", "%s", want)) < 0 || (r = svm_peer_send(t, m, timeout_ms)) < 0)
    return r;
  /* Skip answers to earlier requests whose wait timed out. */
  do
    r = svm_peer_recv(t, m, timeout_ms);
  while (r == 0 && (got = svm_peer_get(m, "seq")) && strcmp(got, want) != 0);
  if (r == -ENODATA)
    return svm_error(ECONNRESET, "peer %s closed the connection instead of answering %s",
                     nfc_tls_peer(t), svm_peer_type_name(sent));
  if (r < 0)
    return r;
  if (m->type == SVM_PEER_ERROR)
    return peer_error(t, m);
  if (m->type != SVM_PEER_OK)
    return svm_error(EPROTO, "peer %s answered %s with %s", nfc_tls_peer(t),
                     svm_peer_type_name(sent), svm_peer_type_name(m->type));
  return 0;
}

static int split_hostport(const char *s, char *host, size_t hlen, char *port, size_t plen)
{
  const char *colon = strrchr(s, ':');
  const char *h = s;
  size_t n;

  if (!colon || !colon[1])
    return svm_error(EINVAL, "'%s' is not ADDR:PORT", s);
  n = (size_t)(colon - s);
  if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
    h++;
    n -= 2;
  }
  if (n == 0 || n >= hlen || strlen(colon + 1) >= plen)
    return svm_error(EINVAL, "'%s' is not ADDR:PORT", s);
  memcpy(host, h, n);
  host[n] = '\0';
  strcpy(port, colon + 1);
  return 0;
}

/* Keepalive so that a peer that vanished (host down, no FIN) is noticed in about a minute and a
 * half, while a link that comes back within that keeps the connection. */
static void tune_socket(int fd)
{
  int one = 1, idle = 30, intvl = 10, cnt = 6;

  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* A connected TCP socket to host:port within timeout_ms. */
static int tcp_connect(const char *hostport, const char *host, const char *port, int timeout_ms)
{
  struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
  struct addrinfo *res, *ai;
  int r, err = ECONNREFUSED;

  r = getaddrinfo(host, port, &hints, &res);
  if (r != 0)
    return svm_error(EHOSTUNREACH, "peer %s: %s", hostport, gai_strerror(r));
  for (ai = res; ai; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    socklen_t sl = sizeof err;

    if (fd < 0) {
      err = errno;
      continue;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ||
        (errno == EINPROGRESS && poll(&p, 1, timeout_ms) == 1 &&
         getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) == 0 && err == 0)) {
      freeaddrinfo(res);
      tune_socket(fd);
      return fd;
    }
    if (errno == EINPROGRESS && p.revents == 0)
      err = ETIMEDOUT;
    else if (errno != EINPROGRESS)
      err = errno;
    close(fd);
  }
  freeaddrinfo(res);
  return svm_error(err, "peer %s: connect: %s (is svmd running there with --mgmt %s?)",
                   hostport, strerror(err), hostport);
}

int svm_peer_dial(const struct svm_peer_creds *creds, const char *hostport, const char *channel,
                  const char *self, const char *token, struct svm_peer_msg *reply,
                  struct nfc_tls **out)
{
  char host[256], port[16];
  struct nfc_tls *t = NULL;
  ASN1_OCTET_STRING *ip;
  bool literal;
  int fd, r;

  *out = NULL;
  if ((r = split_hostport(hostport, host, sizeof host, port, sizeof port)) < 0)
    return r;
  fd = tcp_connect(hostport, host, port, SVM_PEER_HANDSHAKE_MS);
  if (fd < 0)
    return fd;
  ip = a2i_IPADDRESS(host);
  literal = ip != NULL;
  ASN1_OCTET_STRING_free(ip);
  r = nfc_tls_new(creds->client, fd, hostport, literal ? NULL : host, &t);
  if (r < 0) {
    close(fd);
    return r;
  }
  r = nfc_tls_handshake(t, SVM_PEER_HANDSHAKE_MS);
  if (r == 0) {
    svm_peer_msg_init(reply, SVM_PEER_HELLO);
    svm_peer_msg_add(reply, "channel", "%s", channel);
    svm_peer_msg_add(reply, "host", "%s", self);
    svm_peer_msg_add(reply, "version", "%s", SVM_VERSION);
    if (token)
      svm_peer_msg_add(reply, "token", "%s", token);
    r = svm_peer_call(t, reply, SVM_PEER_HANDSHAKE_MS);
  }
  if (r < 0) {
    svm_peer_hangup(t);
    return r;
  }
  *out = t;
  return 0;
}

void svm_peer_hangup(struct nfc_tls *t)
{
  int fd;

  if (!t)
    return;
  fd = nfc_tls_fd(t);
  nfc_tls_shutdown(t);
  nfc_tls_free(t);
  close(fd);
}

int svm_peer_check_identity(struct nfc_tls *t, const char *claimed_host)
{
  const char *id = nfc_tls_peer_identity(t);

  /* A PSK identity is a user name, not a host: only certificates name hosts. */
  if (strcmp(nfc_tls_kind(t), "x509") != 0)
    return 0;
  if (!claimed_host || strcmp(id, claimed_host) != 0) {
    return svm_error(EACCES, "peer %s says it is host '%s' but its certificate is for '%s'",
                     nfc_tls_peer(t), claimed_host ? claimed_host : "", id);
  }
  return 0;
}
