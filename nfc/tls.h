/* Internal: the one TLS module of svmotion (OpenSSL). It serves the peer link (svm/peer), the
 * NFC data streams (nfc/) and the NBD server's STARTTLS (svm/nbd).
 *
 * TLS 1.3 only, always mutually authenticated:
 *   - x509: a directory in QEMU's and libvirt's layout (ca-cert.pem, server-cert.pem,
 *     server-key.pem, client-cert.pem, client-key.pem). A server asks for and verifies the
 *     client's certificate; a client verifies the server's. Chains are verified against
 *     ca-cert.pem only (never the system store), with expiry; the peer's host name is checked
 *     when the caller knows it (nfc_tls_new's expect_name).
 *   - psk: a file of "identity:hexkey" lines, the format of libnbd, nbdkit and QEMU
 *     (tls-creds-psk keys.psk), so nbdinfo/nbdcopy --tls-psk speak to the same endpoint.
 *     A client offers the first line's identity; a server accepts any identity of the file.
 *     Knowing the key authenticates both ends (TLS 1.3 external PSK, psk_dhe_ke).
 * A NULL config is plaintext (svmd --insecure): the same calls then read and write the fd, so
 * callers have one code path.
 *
 * A session (struct nfc_tls) runs over a connected socket it does not own: nfc_tls_free does
 * not close the fd. The module makes the fd non-blocking; every call is either non-blocking
 * (returns -EAGAIN; nfc_tls_want says which poll event to wait for, as libnbd's crypto.c does)
 * or blocking with a deadline (the *_full calls and nfc_tls_handshake poll internally).
 *
 * Errors return -errno and leave a message (svm_last_error) naming the peer and the reason:
 * "tls 127.0.0.1:4711: certificate verify failed: certificate has expired".
 *   -ECONNREFUSED  the peer spoke plaintext to a TLS endpoint
 *   -EACCES        authentication failed (no / bad / expired certificate, unknown CA,
 *                  wrong PSK or identity, wrong host name)
 *   -ETIMEDOUT     the deadline passed
 *   -ECONNRESET    the peer closed the connection in the middle of something
 *   -EPROTO        any other TLS failure
 *
 * A write to a peer that hung up raises SIGPIPE inside OpenSSL: programs using this module
 * ignore SIGPIPE (svmd does) and get -EPIPE.
 *
 * Threads: a config is immutable once made and may be shared by any number of sessions on any
 * threads (it is reference counted by OpenSSL's SSL_CTX). A session is used by one thread at a
 * time.
 */
#ifndef SVM_NFC_TLS_H
#define SVM_NFC_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <svmotion/tls.h>

enum nfc_tls_role {
  NFC_TLS_CLIENT,       /* connects; verifies the server, presents client-cert.pem */
  NFC_TLS_SERVER,       /* accepts; presents server-cert.pem, requires a client certificate */
};

struct nfc_tls_config;
struct nfc_tls;

/* Credentials from a QEMU-layout x509 directory. Fails with a message naming the file if one
 * is missing, unreadable, or if the key does not match its certificate. */
int nfc_tls_config_x509(enum nfc_tls_role role, const char *dir, struct nfc_tls_config **out);

/* Credentials from a PSK file of "identity:hexkey" lines (key 16..64 bytes, hex). */
int nfc_tls_config_psk(enum nfc_tls_role role, const char *file, struct nfc_tls_config **out);

void nfc_tls_config_free(struct nfc_tls_config *cfg);

/* What the config authenticates with: "x509", "psk"; "plaintext" for NULL. */
const char *nfc_tls_config_kind(const struct nfc_tls_config *cfg);

/* A session over the connected socket fd. cfg NULL: plaintext. peer names the other end in
 * messages (e.g. "192.0.2.2:4711"). expect_name, client only, optional: the host name (or IP
 * literal) the server's certificate must carry. No I/O happens here. */
int nfc_tls_new(struct nfc_tls_config *cfg, int fd, const char *peer, const char *expect_name,
                struct nfc_tls **out);

/* Free the session; does not send anything and does not close fd. */
void nfc_tls_free(struct nfc_tls *t);

/* One non-blocking handshake step: 0 done, -EAGAIN (wait for nfc_tls_want), -errno failed.
 * A server refuses a plaintext client here (-ECONNREFUSED) before reading anything else. */
int nfc_tls_handshake_step(struct nfc_tls *t);

/* The whole handshake, polling until done or timeout_ms (-1: no limit). */
int nfc_tls_handshake(struct nfc_tls *t, int timeout_ms);

/* Non-blocking I/O. read: >0 bytes, 0 at end of stream (close_notify or the peer's EOF),
 * -EAGAIN, -errno. write: >0 bytes taken (possibly fewer than len), -EAGAIN, -errno. After
 * -EAGAIN, retry a write with the same buffer and at least the same length. */
ssize_t nfc_tls_read(struct nfc_tls *t, void *buf, size_t len);
ssize_t nfc_tls_write(struct nfc_tls *t, const void *buf, size_t len);

/* After -EAGAIN: POLLIN or POLLOUT, the event the last call waits for. */
short nfc_tls_want(const struct nfc_tls *t);

/* Bytes already decrypted inside the session: readable without waiting on the fd. A poll
 * loop must drain these before it sleeps on POLLIN. */
size_t nfc_tls_pending(const struct nfc_tls *t);

/* Blocking: all of len bytes, or an error. timeout_ms bounds each wait for the socket (-1: no
 * limit). read_full fails with -ECONNRESET on end of stream before len bytes. */
int nfc_tls_read_full(struct nfc_tls *t, void *buf, size_t len, int timeout_ms);
int nfc_tls_write_full(struct nfc_tls *t, const void *buf, size_t len, int timeout_ms);

/* Blocking: at least one byte (the number read), 0 at end of stream, or -errno. */
ssize_t nfc_tls_read_some(struct nfc_tls *t, void *buf, size_t len, int timeout_ms);

/* Send close_notify, best effort and without waiting. */
void nfc_tls_shutdown(struct nfc_tls *t);

/* Who the peer is, for logs and identity checks, valid after the handshake: the certificate's
 * common name, the PSK identity, or "" in plaintext. */
const char *nfc_tls_peer_identity(const struct nfc_tls *t);

/* The peer label given to nfc_tls_new; the socket. */
const char *nfc_tls_peer(const struct nfc_tls *t);
int nfc_tls_fd(const struct nfc_tls *t);
bool nfc_tls_is_plaintext(const struct nfc_tls *t);
/* "x509", "psk" or "plaintext": what authenticated the session. */
const char *nfc_tls_kind(const struct nfc_tls *t);

/* nfc_tls_make_credentials (svmctl tls init) is public: <svmotion/tls.h>. */

#endif
