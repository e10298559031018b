/* Internal: an NFC connection - a blocking byte stream (a TLS session, or a plain socket for
 * --insecure and the tests) with frame I/O on top, byte counters, and an optional shared rate
 * cap. The transport is a tiny table of operations, so the protocol never knows whether TLS
 * is underneath:
 *
 *     static const struct nfc_transport_ops tls_ops = { "tls", my_read, my_write, my_close };
 *     nfc_conn_new(&tls_ops, session, "host-b:8200", &c);
 *
 * One thread uses a connection at a time. */
#ifndef NFC_CONN_H
#define NFC_CONN_H

#include <stdarg.h>
#include <stdint.h>
#include <sys/types.h>

#include "nfc/frame.h"
#include "nfc/rate.h"

struct nfc_transport_ops {
  const char *kind;                                              /* "tls", "plain" */
  /* Blocking. read: > 0 bytes, 0 at end of stream, or -errno. write: > 0 or -errno. */
  ssize_t (*read)(void *opaque, void *buf, size_t len);
  ssize_t (*write)(void *opaque, const void *buf, size_t len);
  void (*close)(void *opaque);                                   /* may be NULL */
  /* May be NULL. From another thread: make a read or write blocked on this connection fail
   * now (shutdown(2) of the socket); the connection is freed by its own thread as usual. */
  void (*abort)(void *opaque);
};

struct nfc_conn;

/* peer: for messages (copied). The connection owns opaque from here: nfc_conn_free() closes
 * it, also when this fails. */
int nfc_conn_new(const struct nfc_transport_ops *ops, void *opaque, const char *peer,
                 struct nfc_conn **out);
/* A plain socket (--insecure, unit tests); the connection owns fd. */
int nfc_conn_new_fd(int fd, const char *peer, struct nfc_conn **out);
/* A TLS session (nfc/tls.h) whose handshake is done, over the socket fd; the connection owns
 * both (closing sends close_notify). timeout_ms bounds every wait on the socket (-1: none): a
 * silent peer then fails the read or write with -ETIMEDOUT. */
struct nfc_tls;
int nfc_conn_new_tls(struct nfc_tls *t, int fd, int timeout_ms, struct nfc_conn **out);
void nfc_conn_free(struct nfc_conn *c);

/* See nfc_transport_ops.abort; does nothing when the transport cannot. */
void nfc_conn_abort(struct nfc_conn *c);

const char *nfc_conn_peer(const struct nfc_conn *c);
/* Every byte sent and received, headers included: what crossed the wire. */
uint64_t nfc_conn_bytes_sent(const struct nfc_conn *c);
uint64_t nfc_conn_bytes_received(const struct nfc_conn *c);
/* Frames sent from now on wait for the cap (shared by several connections; NULL: none). */
void nfc_conn_set_rate(struct nfc_conn *c, struct nfc_rate *rate);

/* Send one frame: h->len bytes of payload (the CRC is computed here). Returns 0 or -errno
 * (-EPIPE/-ECONNRESET when the peer went away). */
int nfc_conn_send(struct nfc_conn *c, struct nfc_hdr *h, const void *payload);
/* Send an ERROR frame carrying errnum and the message; best effort. */
void nfc_conn_send_error(struct nfc_conn *c, int errnum, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));

/* Receive one frame into h and payload (cap bytes, at least the limit of any type the caller
 * accepts). Returns 0; -ENODATA at a clean end of stream before a header; -ECONNRESET when
 * the stream ends inside a frame; -EPROTO/-EMSGSIZE/-EPROTONOSUPPORT from the header check;
 * -EBADMSG when the payload's CRC does not match; -ENOBUFS when the payload exceeds cap. An
 * ERROR frame from the peer is returned as a frame: the caller names it. */
int nfc_conn_recv(struct nfc_conn *c, struct nfc_hdr *h, void *payload, size_t cap);

/* The same in two steps, for a receiver that picks the payload's buffer after seeing the
 * header: recv_hdr returns what nfc_conn_recv returns for the header; recv_payload reads h->len
 * bytes into buf and checks the CRC (-EBADMSG). */
int nfc_conn_recv_hdr(struct nfc_conn *c, struct nfc_hdr *h);
int nfc_conn_recv_payload(struct nfc_conn *c, const struct nfc_hdr *h, void *buf);

/* Receive the next frame and require it to be `type` with no payload (READY, DONE); an ERROR
 * frame becomes its errno with the peer's message in svm_last_error(). */
int nfc_conn_expect(struct nfc_conn *c, uint8_t type, struct nfc_hdr *h);

#endif
