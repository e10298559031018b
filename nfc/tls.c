/* The TLS module: OpenSSL sessions over a socket, TLS 1.3 only, mutually authenticated by x509
 * certificates or a pre-shared key (see tls.h). Certificate generation for tests lives in
 * nfc/x509.c.
 *
 * Every session's socket is non-blocking; the blocking calls are loops of the non-blocking
 * ones around poll(), so one code path serves the peer link's threads and the NBD server's
 * poll loop. OpenSSL's WANT_READ/WANT_WRITE become -EAGAIN plus the poll event to wait for,
 * as libnbd's lib/crypto.c does for GnuTLS.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "nfc/tls.h"

enum { PSK_MAX_KEY = 64, PSK_MIN_KEY = 16, PSK_MAX_ID = 128, PSK_MAX_LINES = 64 };

/* The first byte of any TLS connection is a handshake record (content type 22). */
enum { TLS_RECORD_HANDSHAKE = 0x16 };

struct psk_entry {
  char identity[PSK_MAX_ID + 1];
  unsigned char key[PSK_MAX_KEY];
  size_t keylen;
};

enum cred_kind { CRED_X509, CRED_PSK };

struct nfc_tls_config {
  SSL_CTX *ctx;
  enum nfc_tls_role role;
  enum cred_kind kind;
  size_t npsk;
  struct psk_entry psk[];   /* npsk entries; a client uses psk[0] */
};

struct nfc_tls {
  SSL *ssl;                 /* NULL: plaintext */
  const char *kind;         /* nfc_tls_config_kind */
  int fd;
  short want;               /* POLLIN / POLLOUT after -EAGAIN */
  bool peeked;              /* server: plaintext check done */
  bool handshaken;
  char peer[128];
  char identity[PSK_MAX_ID + 1];
  char psk_unknown[PSK_MAX_ID + 1];   /* server: an identity the PSK file does not hold */
};

/* TLS_AES_128_GCM_SHA256: external PSKs are bound to SHA-256, which is what GnuTLS (libnbd,
 * nbdkit, QEMU) uses for them too. */
static const unsigned char tls13_aes128gcmsha256[] = { 0x13, 0x01 };

/* ---- errors ---------------------------------------------------------------------------- */

/* Turn the OpenSSL error queue (and the session's verify result) into -errno and a message
 * that names the peer and the reason. what: the operation ("handshake", "read"). */
static int tls_fail(struct nfc_tls *t, const char *what)
{
  unsigned long e = ERR_peek_last_error();
  int reason = ERR_GET_REASON(e);
  long vr = t->ssl ? SSL_get_verify_result(t->ssl) : X509_V_OK;
  char buf[256] = "";
  int errnum = EPROTO;
  const char *hint = "";

  if (e)
    ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();

  if (t->psk_unknown[0]) {
    return svm_error(EACCES, "tls %s: %s: PSK identity '%s' is not in this host's PSK file",
                     t->peer, what, t->psk_unknown);
  }
  if (vr != X509_V_OK && reason == SSL_R_CERTIFICATE_VERIFY_FAILED) {
    bool other_ca = vr == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
                    vr == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
                    vr == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT ||
                    vr == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT;
    return svm_error(EACCES, "tls %s: %s: peer certificate refused: %s%s", t->peer, what,
                     X509_verify_cert_error_string(vr),
                     other_ca ? " (it comes from another CA than our ca-cert.pem)" : "");
  }
  switch (reason) {
  case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
  case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
    errnum = EACCES;
    hint = " (the peer presented no certificate)";
    break;
  case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    errnum = EACCES;
    hint = " (the peer does not trust our certificate's CA)";
    break;
  case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    errnum = EACCES;
    hint = " (the peer says our certificate has expired)";
    break;
  case SSL_R_BINDER_DOES_NOT_VERIFY:
  case SSL_R_TLSV1_ALERT_DECRYPT_ERROR:
    errnum = EACCES;
    hint = " (wrong pre-shared key?)";
    break;
  case SSL_R_CERTIFICATE_VERIFY_FAILED:
  case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
  case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
  case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
  case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
  case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
  case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
  case SSL_R_NO_SHARED_CIPHER:
    errnum = EACCES;
    hint = " (the peer refused our credentials, or uses other ones)";
    break;
  case SSL_R_WRONG_VERSION_NUMBER:
  case SSL_R_PACKET_LENGTH_TOO_LONG:
  case SSL_R_RECORD_LENGTH_MISMATCH:
  case SSL_R_HTTP_REQUEST:
    errnum = ECONNREFUSED;
    hint = " (the peer does not speak TLS: plaintext? start it with TLS credentials)";
    break;
  case SSL_R_UNSUPPORTED_PROTOCOL:
  case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
    errnum = EPROTO;
    hint = " (the peer does not speak TLS 1.3)";
    break;
  default:
    break;
  }
  return svm_error(errnum, "tls %s: %s failed: %s%s", t->peer, what, buf[0] ? buf : "error",
                   hint);
}

/* Map an SSL_* result: -EAGAIN with t->want set, 0 for a clean end of stream (reads), or the
 * failure. */
static int tls_result(struct nfc_tls *t, int ret, const char *what)
{
  int err = SSL_get_error(t->ssl, ret);

  switch (err) {
  case SSL_ERROR_WANT_READ:
    t->want = POLLIN;
    return -EAGAIN;
  case SSL_ERROR_WANT_WRITE:
    t->want = POLLOUT;
    return -EAGAIN;
  case SSL_ERROR_ZERO_RETURN:
    return 0;
  case SSL_ERROR_SYSCALL:
    if (ERR_peek_last_error())
      return tls_fail(t, what);
    if (errno == 0 || errno == EPIPE || errno == ECONNRESET) {
      ERR_clear_error();
      return svm_error(ECONNRESET, "tls %s: %s: the peer closed the connection%s", t->peer,
                       what, t->handshaken ? "" : " during the handshake (does it expect "
                                                  "other credentials, or plaintext?)");
    }
    return svm_error(errno, "tls %s: %s: %s", t->peer, what, strerror(errno));
  default:
    return tls_fail(t, what);
  }
}

/* ---- configuration --------------------------------------------------------------------- */

static SSL_CTX *ctx_new(enum nfc_tls_role role)
{
  SSL_CTX *ctx = SSL_CTX_new(role == NFC_TLS_SERVER ? TLS_server_method() : TLS_client_method());

  if (!ctx)
    return NULL;
  if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
      !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION)) {
    SSL_CTX_free(ctx);
    return NULL;
  }
  /* Partial writes and a buffer that may move between retries: the non-blocking write
   * contract of tls.h. No session tickets: every connection authenticates afresh, and a client
   * never has to read a ticket it did not ask for. An EOF without close_notify reads as the
   * end of stream: the protocols above are framed and detect a truncation themselves. */
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  return ctx;
}

static int config_alloc(enum nfc_tls_role role, enum cred_kind kind, size_t npsk,
                        struct nfc_tls_config **out)
{
  struct nfc_tls_config *cfg = calloc(1, sizeof *cfg + npsk * sizeof cfg->psk[0]);

  if (!cfg)
    return svm_error(ENOMEM, "tls: out of memory");
  cfg->ctx = ctx_new(role);
  if (!cfg->ctx) {
    free(cfg);
    return svm_error(ENOMEM, "tls: cannot make an OpenSSL context: %s",
                     ERR_error_string(ERR_get_error(), NULL));
  }
  cfg->role = role;
  cfg->kind = kind;
  cfg->npsk = npsk;
  SSL_CTX_set_app_data(cfg->ctx, cfg);
  *out = cfg;
  return 0;
}

void nfc_tls_config_free(struct nfc_tls_config *cfg)
{
  if (!cfg)
    return;
  SSL_CTX_free(cfg->ctx);
  OPENSSL_cleanse(cfg->psk, cfg->npsk * sizeof cfg->psk[0]);
  free(cfg);
}

const char *nfc_tls_config_kind(const struct nfc_tls_config *cfg)
{
  return !cfg ? "plaintext" : cfg->kind == CRED_PSK ? "psk" : "x509";
}

static int readable_file(const char *dir, const char *name, char *path, size_t size)
{
  if ((size_t)snprintf(path, size, "%s/%s", dir, name) >= size)
    return svm_error(ENAMETOOLONG, "tls: %s/%s: path too long", dir, name);
  if (access(path, R_OK) != 0)
    return svm_error(errno, "tls: %s: %s (make the credentials with: svmctl tls init --dir %s "
                     "--host NAME)", path, strerror(errno), dir);
  return 0;
}

int nfc_tls_config_x509(enum nfc_tls_role role, const char *dir, struct nfc_tls_config **out)
{
  const bool server = role == NFC_TLS_SERVER;
  char ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX];
  struct nfc_tls_config *cfg;
  int r;

  if ((r = readable_file(dir, "ca-cert.pem", ca, sizeof ca)) < 0 ||
      (r = readable_file(dir, server ? "server-cert.pem" : "client-cert.pem", cert,
                         sizeof cert)) < 0 ||
      (r = readable_file(dir, server ? "server-key.pem" : "client-key.pem", key, sizeof key)) < 0)
    return r;
  if ((r = config_alloc(role, CRED_X509, 0, &cfg)) < 0)
    return r;

  /* Only our CA: never the system's store, so a certificate from any public CA is refused. */
  if (SSL_CTX_load_verify_locations(cfg->ctx, ca, NULL) != 1) {
    r = svm_error(EINVAL, "tls: %s: not a usable CA certificate: %s", ca,
                  ERR_error_string(ERR_get_error(), NULL));
    goto fail;
  }
  if (SSL_CTX_use_certificate_chain_file(cfg->ctx, cert) != 1) {
    r = svm_error(EINVAL, "tls: %s: not a usable certificate: %s", cert,
                  ERR_error_string(ERR_get_error(), NULL));
    goto fail;
  }
  if (SSL_CTX_use_PrivateKey_file(cfg->ctx, key, SSL_FILETYPE_PEM) != 1) {
    r = svm_error(EINVAL, "tls: %s: not a usable private key: %s", key,
                  ERR_error_string(ERR_get_error(), NULL));
    goto fail;
  }
  if (SSL_CTX_check_private_key(cfg->ctx) != 1) {
    r = svm_error(EINVAL, "tls: %s does not belong to %s", key, cert);
    goto fail;
  }
  /* Mutual: a server requires the client's certificate; both verify against ca-cert.pem. */
  SSL_CTX_set_verify(cfg->ctx, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                     NULL);
  SSL_CTX_set_verify_depth(cfg->ctx, 4);
  if (server) {
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
    if (names)
      SSL_CTX_set_client_CA_list(cfg->ctx, names);
  }
  ERR_clear_error();
  *out = cfg;
  return 0;

fail:
  ERR_clear_error();
  nfc_tls_config_free(cfg);
  return r;
}

static int hexval(int c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* One "identity:hexkey" line (no newline) into e; -EINVAL with a message naming file:lineno. */
static int psk_parse_line(const char *file, int lineno, const char *line, struct psk_entry *e)
{
  const char *colon = strchr(line, ':');
  size_t idlen, hexlen, i;

  if (!colon)
    return svm_error(EINVAL, "tls: %s:%d: expected identity:hexkey", file, lineno);
  idlen = (size_t)(colon - line);
  hexlen = strlen(colon + 1);
  if (idlen == 0 || idlen > PSK_MAX_ID)
    return svm_error(EINVAL, "tls: %s:%d: the identity must have 1 to %d characters", file,
                     lineno, PSK_MAX_ID);
  if (hexlen % 2 || hexlen / 2 < PSK_MIN_KEY || hexlen / 2 > PSK_MAX_KEY)
    return svm_error(EINVAL, "tls: %s:%d: the key must be %d to %d bytes in hex (make one "
                     "with: openssl rand -hex 32)", file, lineno, PSK_MIN_KEY, PSK_MAX_KEY);
  for (i = 0; i < hexlen / 2; i++) {
    int hi = hexval((unsigned char)colon[1 + 2 * i]), lo = hexval((unsigned char)colon[2 + 2 * i]);
    if (hi < 0 || lo < 0)
      return svm_error(EINVAL, "tls: %s:%d: the key is not hexadecimal", file, lineno);
    e->key[i] = (unsigned char)(hi << 4 | lo);
  }
  memcpy(e->identity, line, idlen);
  e->identity[idlen] = '\0';
  e->keylen = hexlen / 2;
  return 0;
}

/* A session holding the external PSK e, bound to TLS_AES_128_GCM_SHA256. */
static SSL_SESSION *psk_session(SSL *ssl, const struct psk_entry *e)
{
  const SSL_CIPHER *cipher = SSL_CIPHER_find(ssl, tls13_aes128gcmsha256);
  SSL_SESSION *s;

  if (!cipher || !(s = SSL_SESSION_new()))
    return NULL;
  if (!SSL_SESSION_set1_master_key(s, e->key, e->keylen) || !SSL_SESSION_set_cipher(s, cipher) ||
      !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION)) {
    SSL_SESSION_free(s);
    return NULL;
  }
  return s;
}

static int psk_use_session(SSL *ssl, const EVP_MD *md, const unsigned char **id, size_t *idlen,
                           SSL_SESSION **sess)
{
  const struct nfc_tls_config *cfg = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
  const SSL_CIPHER *cipher = SSL_CIPHER_find(ssl, tls13_aes128gcmsha256);
  struct nfc_tls *t = SSL_get_app_data(ssl);

  *sess = NULL;
  *id = NULL;
  *idlen = 0;
  /* After a HelloRetryRequest the hash is fixed: offer the PSK only if it matches. */
  if (md && cipher && SSL_CIPHER_get_handshake_digest(cipher) != md)
    return 1;
  if (!(*sess = psk_session(ssl, &cfg->psk[0])))
    return 0;
  *id = (const unsigned char *)cfg->psk[0].identity;
  *idlen = strlen(cfg->psk[0].identity);
  snprintf(t->identity, sizeof t->identity, "%s", cfg->psk[0].identity);
  return 1;
}

static int psk_find_session(SSL *ssl, const unsigned char *id, size_t idlen, SSL_SESSION **sess)
{
  const struct nfc_tls_config *cfg = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
  struct nfc_tls *t = SSL_get_app_data(ssl);
  size_t i;

  *sess = NULL;
  for (i = 0; i < cfg->npsk; i++) {
    const struct psk_entry *e = &cfg->psk[i];
    if (strlen(e->identity) == idlen && memcmp(e->identity, id, idlen) == 0) {
      if (!(*sess = psk_session(ssl, e)))
        return 0;
      snprintf(t->identity, sizeof t->identity, "%s", e->identity);
      return 1;
    }
  }
  /* Unknown identity: no session, so the handshake fails (the server has no certificate to
   * fall back on); remember the name for the message. */
  idlen = idlen < PSK_MAX_ID ? idlen : PSK_MAX_ID;
  for (i = 0; i < idlen; i++)
    t->psk_unknown[i] = (id[i] >= 0x20 && id[i] < 0x7f) ? (char)id[i] : '?';
  t->psk_unknown[idlen] = '\0';
  return 1;
}

int nfc_tls_config_psk(enum nfc_tls_role role, const char *file, struct nfc_tls_config **out)
{
  struct psk_entry entries[PSK_MAX_LINES];
  struct nfc_tls_config *cfg;
  CLEANUP_FREE char *line = NULL;
  size_t cap = 0, n = 0;
  int lineno = 0, r = 0;
  ssize_t len;
  FILE *f;

  f = fopen(file, "re");
  if (!f)
    return svm_error(errno, "tls: %s: %s", file, strerror(errno));
  while ((len = getline(&line, &cap, f)) >= 0) {
    lineno++;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
      line[--len] = '\0';
    if (len == 0 || line[0] == '#')
      continue;
    if (n == PSK_MAX_LINES) {
      r = svm_error(EINVAL, "tls: %s: more than %d keys", file, PSK_MAX_LINES);
      break;
    }
    if ((r = psk_parse_line(file, lineno, line, &entries[n])) < 0)
      break;
    n++;
  }
  fclose(f);
  if (r == 0 && n == 0)
    r = svm_error(EINVAL, "tls: %s: no identity:hexkey line", file);
  if (r == 0)
    r = config_alloc(role, CRED_PSK, n, &cfg);
  if (r == 0) {
    memcpy(cfg->psk, entries, n * sizeof entries[0]);
    /* Ciphers whose hash is SHA-256, the hash the PSK is bound to. */
    if (SSL_CTX_set_ciphersuites(cfg->ctx, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256")
        != 1) {
      nfc_tls_config_free(cfg);
      r = svm_error(EPROTO, "tls: cannot restrict the cipher suites for PSK");
    } else {
      if (role == NFC_TLS_SERVER)
        SSL_CTX_set_psk_find_session_callback(cfg->ctx, psk_find_session);
      else
        SSL_CTX_set_psk_use_session_callback(cfg->ctx, psk_use_session);
      *out = cfg;
    }
  }
  OPENSSL_cleanse(entries, sizeof entries);
  if (line)
    OPENSSL_cleanse(line, cap);
  return r;
}

/* ---- sessions -------------------------------------------------------------------------- */

static bool is_ip_literal(const char *name)
{
  ASN1_OCTET_STRING *ip = a2i_IPADDRESS(name);

  if (!ip)
    return false;
  ASN1_OCTET_STRING_free(ip);
  return true;
}

int nfc_tls_new(struct nfc_tls_config *cfg, int fd, const char *peer, const char *expect_name,
                struct nfc_tls **out)
{
  struct nfc_tls *t = calloc(1, sizeof *t);
  int flags;

  if (!t)
    return svm_error(ENOMEM, "tls %s: out of memory", peer);
  t->fd = fd;
  t->kind = nfc_tls_config_kind(cfg);
  snprintf(t->peer, sizeof t->peer, "%s", peer ? peer : "peer");
  flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    int e = errno;
    free(t);
    return svm_error(e, "tls %s: fcntl: %s", peer, strerror(e));
  }
  if (!cfg) {
    t->handshaken = true;
    *out = t;
    return 0;
  }
  t->ssl = SSL_new(cfg->ctx);
  if (!t->ssl || !SSL_set_fd(t->ssl, fd)) {
    SSL_free(t->ssl);
    free(t);
    ERR_clear_error();
    return svm_error(ENOMEM, "tls %s: cannot make a session", peer);
  }
  SSL_set_app_data(t->ssl, t);
  if (cfg->role == NFC_TLS_SERVER) {
    SSL_set_accept_state(t->ssl);
  } else {
    SSL_set_connect_state(t->ssl);
    if (expect_name && expect_name[0] && cfg->kind == CRED_X509) {
      int ok = is_ip_literal(expect_name)
                   ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), expect_name)
                   : SSL_set1_host(t->ssl, expect_name) &&
                         SSL_set_tlsext_host_name(t->ssl, expect_name);
      if (!ok) {
        SSL_free(t->ssl);
        free(t);
        ERR_clear_error();
        return svm_error(EINVAL, "tls %s: cannot verify against host name '%s'", peer,
                         expect_name);
      }
    }
  }
  *out = t;
  return 0;
}

void nfc_tls_free(struct nfc_tls *t)
{
  if (!t)
    return;
  SSL_free(t->ssl);
  free(t);
}

/* A server looks at the first byte before OpenSSL does: anything but a TLS handshake record is
 * a plaintext peer, refused with that reason rather than OpenSSL's "wrong version number". */
static int check_plaintext_peer(struct nfc_tls *t)
{
  unsigned char b;
  ssize_t n = recv(t->fd, &b, 1, MSG_PEEK);

  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    t->want = POLLIN;
    return -EAGAIN;
  }
  if (n < 0)
    return svm_error(errno, "tls %s: %s", t->peer, strerror(errno));
  if (n == 0)
    return svm_error(ECONNRESET, "tls %s: the peer closed the connection before the handshake",
                     t->peer);
  if (b != TLS_RECORD_HANDSHAKE)
    return svm_error(ECONNREFUSED, "tls %s: refused a plaintext peer (first byte 0x%02x, not "
                     "a TLS handshake): start it with TLS credentials, or both with --insecure",
                     t->peer, b);
  t->peeked = true;
  return 0;
}

int nfc_tls_handshake_step(struct nfc_tls *t)
{
  int r;

  if (t->handshaken)
    return 0;
  if (!SSL_is_server(t->ssl) || t->peeked) {
    /* nothing to peek */
  } else if ((r = check_plaintext_peer(t)) < 0) {
    return r;
  }
  ERR_clear_error();
  r = SSL_do_handshake(t->ssl);
  if (r == 1) {
    X509 *cert = SSL_get0_peer_certificate(t->ssl);
    if (cert) {
      X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, t->identity,
                                sizeof t->identity);
    }
    t->handshaken = true;
    return 0;
  }
  r = tls_result(t, r, "handshake");
  return r == 0 ? svm_error(ECONNRESET, "tls %s: the peer closed the connection during the "
                            "handshake", t->peer)
                : r;
}

/* Wait for t->want until timeout_ms (-1: forever). */
static int tls_wait(struct nfc_tls *t, int timeout_ms, const char *what)
{
  struct pollfd p = { .fd = t->fd, .events = t->want ? t->want : POLLIN };
  int r;

  do
    r = poll(&p, 1, timeout_ms);
  while (r < 0 && errno == EINTR);
  if (r < 0)
    return svm_error(errno, "tls %s: poll: %s", t->peer, strerror(errno));
  if (r == 0)
    return svm_error(ETIMEDOUT, "tls %s: %s: no answer within %d ms", t->peer, what, timeout_ms);
  return 0;
}

int nfc_tls_handshake(struct nfc_tls *t, int timeout_ms)
{
  int r;

  while ((r = nfc_tls_handshake_step(t)) == -EAGAIN)
    if ((r = tls_wait(t, timeout_ms, "TLS handshake")) < 0)
      return r;
  return r;
}

ssize_t nfc_tls_read(struct nfc_tls *t, void *buf, size_t len)
{
  size_t got = 0;
  int r;

  if (len == 0)
    return 0;
  if (!t->ssl) {
    ssize_t n = recv(t->fd, buf, len, 0);
    if (n >= 0)
      return n;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      t->want = POLLIN;
      return -EAGAIN;
    }
    if (errno == ECONNRESET)
      return svm_error(ECONNRESET, "%s: connection reset", t->peer);
    return svm_error(errno, "%s: recv: %s", t->peer, strerror(errno));
  }
  if (!t->handshaken && (r = nfc_tls_handshake_step(t)) < 0)
    return r;
  ERR_clear_error();
  r = SSL_read_ex(t->ssl, buf, len, &got);
  if (r == 1)
    return (ssize_t)got;
  return tls_result(t, r, "read");
}

ssize_t nfc_tls_write(struct nfc_tls *t, const void *buf, size_t len)
{
  size_t put = 0;
  int r;

  if (len == 0)
    return 0;
  if (!t->ssl) {
    ssize_t n = send(t->fd, buf, len, MSG_NOSIGNAL);
    if (n >= 0)
      return n;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      t->want = POLLOUT;
      return -EAGAIN;
    }
    return svm_error(errno, "%s: send: %s", t->peer, strerror(errno));
  }
  if (!t->handshaken && (r = nfc_tls_handshake_step(t)) < 0)
    return r;
  ERR_clear_error();
  r = SSL_write_ex(t->ssl, buf, len, &put);
  if (r == 1)
    return (ssize_t)put;
  r = tls_result(t, r, "write");
  return r == 0 ? svm_error(EPIPE, "tls %s: write: the peer closed the connection", t->peer) : r;
}

short nfc_tls_want(const struct nfc_tls *t)
{
  return t->want ? t->want : POLLIN;
}

size_t nfc_tls_pending(const struct nfc_tls *t)
{
  return t->ssl ? (size_t)SSL_pending(t->ssl) : 0;
}

ssize_t nfc_tls_read_some(struct nfc_tls *t, void *buf, size_t len, int timeout_ms)
{
  ssize_t n;
  int r;

  while ((n = nfc_tls_read(t, buf, len)) == -EAGAIN)
    if ((r = tls_wait(t, timeout_ms, "read")) < 0)
      return r;
  return n;
}

int nfc_tls_read_full(struct nfc_tls *t, void *buf, size_t len, int timeout_ms)
{
  unsigned char *p = buf;

  while (len > 0) {
    ssize_t n = nfc_tls_read_some(t, p, len, timeout_ms);
    if (n < 0)
      return (int)n;
    if (n == 0)
      return svm_error(ECONNRESET, "%s%s: the peer closed the connection", t->ssl ? "tls " : "",
                       t->peer);
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int nfc_tls_write_full(struct nfc_tls *t, const void *buf, size_t len, int timeout_ms)
{
  const unsigned char *p = buf;
  int r;

  while (len > 0) {
    ssize_t n = nfc_tls_write(t, p, len);
    if (n == -EAGAIN) {
      if ((r = tls_wait(t, timeout_ms, "write")) < 0)
        return r;
      continue;
    }
    if (n < 0)
      return (int)n;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

void nfc_tls_shutdown(struct nfc_tls *t)
{
  if (t->ssl && t->handshaken) {
    SSL_shutdown(t->ssl);
    ERR_clear_error();
  }
}

const char *nfc_tls_peer_identity(const struct nfc_tls *t)
{
  return t->identity;
}

const char *nfc_tls_peer(const struct nfc_tls *t)
{
  return t->peer;
}

int nfc_tls_fd(const struct nfc_tls *t)
{
  return t->fd;
}

const char *nfc_tls_kind(const struct nfc_tls *t)
{
  return t->kind;
}

bool nfc_tls_is_plaintext(const struct nfc_tls *t)
{
  return t->ssl == NULL;
}
