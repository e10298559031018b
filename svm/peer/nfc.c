/* NFC streams over the peer link: the TLS session (nfc/tls.h) as the transport of an NFC
 * connection (nfc/conn.h), on both sides.
 *
 * Sender: svm_peer_nfc_connect is the connect function of svm_nfc_put_file (svm/copy/nfc.h):
 * each stream dials the destination's --mgmt port with HELLO channel=nfc token=..., then
 * speaks NFC. Receiver: the server hands such a connection to svm_peer_nfc_serve with the
 * staging folder of the transfer.
 *
 * Deadlines: a sender's write that cannot go on for SVM_PEER_NFC_WRITE_MS means the link is
 * gone - the stream fails and the move opens it again (NFC resumes from what is durable); a read
 * waits longer, for the receiver's fsync. A receiver waits SVM_PEER_NFC_IDLE_MS for a frame. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/error.h"
#include "svm/copy/nfc.h"
#include "svm/peer/peer.h"

static int write_ms(void)
{
  /* Tests that cut a link make this shorter than their cut (SVM_PEER_NFC_WRITE_MS). */
  const char *s = getenv("SVM_PEER_NFC_WRITE_MS");
  int v = s ? atoi(s) : 0;

  return v > 0 ? v : SVM_PEER_NFC_WRITE_MS;
}

static ssize_t send_read(void *opaque, void *buf, size_t len)
{
  return nfc_tls_read_some(opaque, buf, len, SVM_PEER_NFC_READ_MS);
}

static ssize_t send_write(void *opaque, const void *buf, size_t len)
{
  int r = nfc_tls_write_full(opaque, buf, len, write_ms());

  return r < 0 ? r : (ssize_t)len;
}

static void send_close(void *opaque)
{
  svm_peer_hangup(opaque);
}

/* From another thread: fail a read or write blocked on this stream now. */
static void stream_abort(void *opaque)
{
  shutdown(nfc_tls_fd(opaque), SHUT_RDWR);
}

static const struct nfc_transport_ops send_ops = {
  .kind = "tls", .read = send_read, .write = send_write, .close = send_close,
  .abort = stream_abort,
};

int svm_peer_nfc_connect(void *opaque, unsigned stream, struct nfc_conn **out)
{
  const struct svm_peer_nfc_dest *d = opaque;
  struct svm_peer_msg *reply = malloc(sizeof *reply);
  struct nfc_tls *t;
  int r;

  (void)stream;
  if (!reply)
    return svm_error(ENOMEM, "out of memory");
  r = svm_peer_dial(d->creds, d->hostport, "nfc", d->self, d->token, reply, &t);
  free(reply);
  if (r < 0)
    return r;
  return nfc_conn_new(&send_ops, t, d->hostport, out);
}

static ssize_t recv_read(void *opaque, void *buf, size_t len)
{
  return nfc_tls_read_some(opaque, buf, len, SVM_PEER_NFC_IDLE_MS);
}

static ssize_t recv_write(void *opaque, const void *buf, size_t len)
{
  int r = nfc_tls_write_full(opaque, buf, len, SVM_PEER_NFC_IDLE_MS);

  return r < 0 ? r : (ssize_t)len;
}

/* The server frees the session when the stream's thread ends. */
static const struct nfc_transport_ops recv_ops = {
  .kind = "tls", .read = recv_read, .write = recv_write, .close = NULL, .abort = stream_abort,
};

int svm_peer_nfc_serve(struct nfc_tls *t, const char *dir)
{
  struct nfc_recv_counters n = { 0 };
  struct nfc_conn *c;
  int dfd, r;

  dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0)
    return svm_error(errno, "%s: %s", dir, strerror(errno));
  r = nfc_conn_new(&recv_ops, t, nfc_tls_peer(t), &c);
  if (r == 0) {
    r = svm_nfc_serve(c, dfd, NULL, &n);
    nfc_conn_free(c);
  }
  close(dfd);
  return r;
}
