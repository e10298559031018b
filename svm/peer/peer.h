/* Internal: the peer link between svmd agents (wire format: proto.h).
 *
 * Credentials (link.c): an agent has one TLS config per role, from --tls-dir (x509) or
 * --tls-psk (PSK), or none with --insecure. A TLS agent refuses plaintext peers and a plaintext
 * agent cannot talk to a TLS one.
 *
 * Client (link.c): svm_peer_dial connects to ADDR:PORT, runs the TLS handshake, sends HELLO and
 * returns the peer's answer; svm_peer_call sends one request and waits for its OK. Every wait is
 * bounded.
 *
 * Server (server.c): one listening socket on --mgmt, one thread per connection (at most
 * SVM_PEER_MAX_CONNS; more are refused), each running the small state machine below. What a
 * request does to the host (folders, VMs) is the agent's: struct svm_peer_ops.
 *
 *     control connection:  HELLO -> READY --PREPARE--> PREPARED --COMMIT/ABORT--> READY
 *                                                        \--end of stream: abort
 *     nfc connection:      HELLO (token of a PREPARED transfer) -> handed to ops->nfc_stream
 *
 * Every refusal is logged with the peer's address and the reason, before any file is made.
 */
#ifndef SVM_PEER_H
#define SVM_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nfc/tls.h"
#include "svm/peer/proto.h"

enum {
  SVM_PEER_MAX_CONNS = 64,            /* connections a server serves at once */
  SVM_PEER_HANDSHAKE_MS = 10000,      /* TLS handshake and HELLO */
  SVM_PEER_CALL_MS = 120000,          /* one request (COMMIT syncs and opens disks) */
  SVM_PEER_TOKEN_LEN = 32,            /* hex characters */
  SVM_PEER_NFC_WRITE_MS = 15000,      /* a sender's write that cannot go on: the link is gone */
  SVM_PEER_NFC_READ_MS = 300000,      /* a sender waits for the receiver's fsync */
  SVM_PEER_NFC_IDLE_MS = 300000,      /* a receiver waits for the next frame */
};

struct svm_peer_creds {
  struct nfc_tls_config *client, *server;    /* both NULL: plaintext (--insecure) */
};

/* From --tls-dir DIR or --tls-psk FILE (exactly one), or neither with insecure. */
int svm_peer_creds_load(const char *tls_dir, const char *psk_file, bool insecure,
                        struct svm_peer_creds *out);
void svm_peer_creds_clear(struct svm_peer_creds *c);

/* One message each way on an established session. recv: -ENODATA at a clean end of stream
 * before a message. An ERROR received is returned as a message (type SVM_PEER_ERROR). */
int svm_peer_send(struct nfc_tls *t, const struct svm_peer_msg *m, int timeout_ms);
int svm_peer_recv(struct nfc_tls *t, struct svm_peer_msg *m, int timeout_ms);
/* Best effort: tell the peer why, as an ERROR. */
void svm_peer_send_error(struct nfc_tls *t, int errnum, const char *msg);
/* The same, answering the request that carried seq (NULL: none). */
void svm_peer_send_error_seq(struct nfc_tls *t, int errnum, const char *msg, const char *seq);

/* Client: connect to "ADDR:PORT" (ADDR may be [v6] or a name), handshake, HELLO with
 * channel, this host's name and (nfc) token; *reply is the peer's OK. The server's certificate
 * must carry ADDR when ADDR is a host name; with an address literal the chain (our CA) and the
 * HELLO's host name against the certificate's CN identify the peer (checked by the caller,
 * svm_peer_check_identity). */
int svm_peer_dial(const struct svm_peer_creds *creds, const char *hostport, const char *channel,
                  const char *self, const char *token, struct svm_peer_msg *reply,
                  struct nfc_tls **out);
/* Send m (with a fresh seq=) and wait for its answer in m: 0 on OK, or the peer's ERROR as
 * -errno with its message (prefixed with the peer). Answers to earlier requests are skipped. */
int svm_peer_call(struct nfc_tls *t, struct svm_peer_msg *m, int timeout_ms);
/* Close and free a dialled session (and its socket). */
void svm_peer_hangup(struct nfc_tls *t);

/* The peer's certificate (or PSK identity) against the host name it gave: with x509 they must
 * be equal; with PSK and plaintext there is nothing to compare. -EACCES with a message. */
int svm_peer_check_identity(struct nfc_tls *t, const char *claimed_host);

/* ---- server ---------------------------------------------------------------------------- */

struct svm_peer_server;

struct svm_peer_ops {
  void (*log)(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
  /* HELLO on a control connection: add host=, version=, ds=NAME:FREE to reply. */
  int (*hello)(void *opaque, struct svm_peer_msg *reply);
  /* PREPARE from `peer` (host name `host`): make the staging folder for the VM; its path into
   * dir (PATH_MAX). Nothing is created when this fails. */
  int (*prepare)(void *opaque, const char *peer, const char *host,
                 const struct svm_peer_msg *req, char *dir);
  /* COMMIT: the files in dir are all there; make the VM this host's. On failure dir is still
   * there and abort follows. */
  int (*commit)(void *opaque, const char *peer, const char *dir, const struct svm_peer_msg *req);
  /* ABORT, a failed COMMIT, or the control connection lost while prepared: remove dir. Every
   * NFC stream of the transfer has ended before this is called. */
  void (*abort)(void *opaque, const char *peer, const char *dir);
  /* An NFC stream of a prepared transfer: serve it (files land in dir only) until it ends. */
  int (*nfc_stream)(void *opaque, struct nfc_tls *t, const char *dir);
  /* INFO (prechecks, optional): this host's facts into reply. Changes nothing. */
  int (*info)(void *opaque, const struct svm_peer_msg *req, struct svm_peer_msg *reply);
  void *opaque;
};

/* Listen on "ADDR:PORT" (PORT 0: any; svm_peer_server_addr tells) and serve until stop. creds:
 * the server config or NULL (plaintext, --insecure). */
int svm_peer_server_start(const char *listen, struct nfc_tls_config *tls,
                          const struct svm_peer_ops *ops, struct svm_peer_server **out);
const char *svm_peer_server_addr(const struct svm_peer_server *s);
/* Close the listener, cut every connection, abort what was prepared, join every thread. */
void svm_peer_server_stop(struct svm_peer_server *s);

/* ---- NFC streams over the link (nfc.c) -------------------------------------------------- */

struct nfc_conn;

/* Where a sender's streams go: the destination and the transfer PREPARE made. */
struct svm_peer_nfc_dest {
  const struct svm_peer_creds *creds;
  const char *hostport;
  const char *self;                   /* this host's name, for the peer's logs */
  char token[SVM_PEER_TOKEN_LEN + 1];
};

/* svm_nfc_connect_fn (svm/copy/nfc.h) for svm_nfc_put_file: opaque is a svm_peer_nfc_dest. */
int svm_peer_nfc_connect(void *opaque, unsigned stream, struct nfc_conn **out);

/* Receive one NFC stream into dir (the session stays the caller's). */
int svm_peer_nfc_serve(struct nfc_tls *t, const char *dir);

#endif
