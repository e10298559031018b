/* Internal: the peer link's wire format - how two svmd agents talk on the management interface
 * (svmd --mgmt ADDR:PORT), always inside the TLS session of nfc/tls.h (plaintext only with
 * --insecure on both sides).
 *
 * A message is a 12-byte header, big-endian, then `len` bytes of payload:
 *
 *     0  magic "SVMP"   4  version (1)   5  type   6  flags (0)   8  len (<= 16 KiB)
 *
 * The payload is text: "key=value\n" lines. A key is 1..32 of [a-z0-9-]; a value 0..1024 bytes
 * without NUL or newline; at most 64 lines; a key may repeat ("ds=..." once per datastore).
 * A request may carry seq=N; the answer carries the same, so a client that gave up waiting
 * for one answer never takes it for the next one's. Everything is checked before use; a
 * message that breaks a limit is refused with EPROTO and
 * the connection closed.
 *
 * The first message of every connection is HELLO, and its `channel` says what the connection
 * is for, so one port serves both:
 *   channel=control   requests below, one at a time, each answered by OK or ERROR
 *   channel=nfc       an NFC data stream (nfc/nfc.h) into the folder a PREPARE made; the
 *                     HELLO names it with token=...; after OK the stream belongs to NFC
 *
 *   client (source)                           server (destination)
 *   HELLO channel=control host= version=  ->
 *                                         <-  OK host= version= ds=NAME:FREE_BYTES ...
 *   PREPARE vm= datastore= bytes=         ->  checks name, datastore, free space; makes the
 *                                             hidden staging folder DS/.svm-incoming.VM
 *                                         <-  OK token=
 *   (NFC streams: HELLO channel=nfc token=, then NFC frames into the staging folder)
 *   COMMIT token=                         ->  the VM's files checked and durable, the folder
 *                                             renamed to DS/VM, the VM opened and exported
 *                                         <-  OK
 *   ABORT token=                          ->  the staging folder removed
 *                                         <-  OK
 *   STATUS token=                         ->  (after a stream failed, the source asks why)
 *                                         <-  OK [errno= message=: the last stream failure]
 *   (end of stream while prepared: the same as ABORT)
 */
#ifndef SVM_PEER_PROTO_H
#define SVM_PEER_PROTO_H

#include <stddef.h>
#include <stdint.h>

enum {
  SVM_PEER_MAGIC = 0x53564d50,    /* "SVMP" */
  SVM_PEER_VERSION = 1,
  SVM_PEER_HDR_SIZE = 12,
  SVM_PEER_MAX_PAYLOAD = 16 << 10,
  SVM_PEER_MAX_FIELDS = 64,
  SVM_PEER_MAX_KEY = 32,
  SVM_PEER_MAX_VALUE = 1024,
};

enum svm_peer_type {
  SVM_PEER_HELLO = 1,
  SVM_PEER_PREPARE,
  SVM_PEER_COMMIT,
  SVM_PEER_ABORT,
  SVM_PEER_OK,
  SVM_PEER_ERROR,         /* errno=N message=TEXT */
  SVM_PEER_STATUS,        /* how is the prepared transfer: OK [errno=N message=TEXT] */
  SVM_PEER_INFO,          /* prechecks: datastore=DS -> OK with the host's migration network,
                             datastore and CPU facts (svm/precheck/info.c) */
  SVM_PEER_TYPE_MAX = SVM_PEER_INFO,
};

struct svm_peer_field {
  const char *key, *value;        /* point into buf */
};

/* One message, parsed or being built. */
struct svm_peer_msg {
  uint8_t type;
  size_t nfields;
  struct svm_peer_field f[SVM_PEER_MAX_FIELDS];
  size_t used;                    /* bytes of buf in use */
  char buf[SVM_PEER_MAX_PAYLOAD + SVM_PEER_MAX_FIELDS];
};

const char *svm_peer_type_name(unsigned type);

/* Check a header: 0 and *type, *len; -EPROTO (magic, type, flags), -EPROTONOSUPPORT
 * (version), -EMSGSIZE (len). */
int svm_peer_hdr_parse(const uint8_t *hdr, uint8_t *type, uint32_t *len);
void svm_peer_hdr_format(uint8_t *hdr, uint8_t type, uint32_t len);

/* Parse a payload into m (m->type is left to the caller). -EPROTO with a message on any
 * broken limit. */
int svm_peer_payload_parse(struct svm_peer_msg *m, const char *p, size_t len);

/* Building: reset to an empty message of `type`, then add fields (value is cut at the limit;
 * a newline becomes a space). -EMSGSIZE when the message is full. */
void svm_peer_msg_init(struct svm_peer_msg *m, uint8_t type);
int svm_peer_msg_add(struct svm_peer_msg *m, const char *key, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));
/* The payload of a built message into out (SVM_PEER_MAX_PAYLOAD bytes): its length. */
size_t svm_peer_msg_payload(const struct svm_peer_msg *m, char *out);

/* The first value of key, or NULL. */
const char *svm_peer_get(const struct svm_peer_msg *m, const char *key);
/* A decimal u64 value: 0, -ENOENT (missing), -EINVAL (not a number). */
int svm_peer_get_u64(const struct svm_peer_msg *m, const char *key, uint64_t *out);

#endif
