/* An NFC connection over a TLS session (nfc/tls.h): the transport table of conn.h on the
 * session's deadline-bounded blocking calls. The deadline is what ends a receiver's
 * connection whose link was cut without a reset, so that the range it held can be resumed. */
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/error.h"
#include "nfc/conn.h"
#include "nfc/tls.h"

struct tls_transport {
  struct nfc_tls *t;
  int fd;
  int timeout_ms;
};

static ssize_t tls_read(void *opaque, void *buf, size_t len)
{
  struct tls_transport *x = opaque;
  return nfc_tls_read_some(x->t, buf, len, x->timeout_ms);
}

static ssize_t tls_write(void *opaque, const void *buf, size_t len)
{
  struct tls_transport *x = opaque;
  int r = nfc_tls_write_full(x->t, buf, len, x->timeout_ms);
  return r < 0 ? r : (ssize_t)len;
}

static void tls_close(void *opaque)
{
  struct tls_transport *x = opaque;

  nfc_tls_shutdown(x->t);
  nfc_tls_free(x->t);
  close(x->fd);
  free(x);
}

static void tls_abort(void *opaque)
{
  struct tls_transport *x = opaque;
  shutdown(x->fd, SHUT_RDWR);
}

static const struct nfc_transport_ops tls_ops = { "tls", tls_read, tls_write, tls_close,
                                                  tls_abort };

int nfc_conn_new_tls(struct nfc_tls *t, int fd, int timeout_ms, struct nfc_conn **out)
{
  struct tls_transport *x = malloc(sizeof *x);

  if (x == NULL) {
    nfc_tls_free(t);
    close(fd);
    return svm_error(ENOMEM, "out of memory");
  }
  *x = (struct tls_transport){ t, fd, timeout_ms };
  return nfc_conn_new(&tls_ops, x, nfc_tls_peer(t), out);
}
