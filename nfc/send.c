/* The sender's steps of the NFC protocol (see nfc.h). */
#include <errno.h>
#include <string.h>

#include "common/error.h"
#include "nfc/nfc.h"

static int sent(struct nfc_conn *c, int r, const char *what)
{
  if (r < 0)
    return svm_error(-r, "%s: sending %s failed: %s", nfc_conn_peer(c), what,
                     r == -EPIPE || r == -ECONNRESET ? "connection closed" : strerror(-r));
  return 0;
}

int nfc_send_open(struct nfc_conn *c, const struct nfc_open *o, bool create, uint64_t *resume)
{
  uint8_t buf[NFC_MAX_CTRL];
  struct nfc_hdr h;
  int n = nfc_open_encode(o, buf, sizeof buf), r;

  if (n < 0)
    return svm_error(EINVAL, "%s: cannot send file name '%s' (too long?)", nfc_conn_peer(c),
                     o->name);
  h = (struct nfc_hdr){ .type = NFC_OPEN, .flags = create ? NFC_OPEN_CREATE : 0,
                        .len = (uint32_t)n };
  if ((r = sent(c, nfc_conn_send(c, &h, buf), "OPEN")) < 0)
    return r;
  if ((r = nfc_conn_expect(c, NFC_READY, &h)) < 0)
    return svm_error_prefix("%s", o->name);
  if (h.off < o->start || h.off > o->end)
    return svm_error(EPROTO, "%s: %s: resume offset %llu outside the range", nfc_conn_peer(c),
                     o->name, (unsigned long long)h.off);
  *resume = h.off;
  return 0;
}

int nfc_send_data(struct nfc_conn *c, uint64_t off, const void *buf, uint32_t len)
{
  struct nfc_hdr h = { .type = NFC_DATA, .len = len, .off = off };
  return sent(c, nfc_conn_send(c, &h, buf), "data");
}

int nfc_send_zero(struct nfc_conn *c, uint64_t off, uint64_t len)
{
  struct nfc_hdr h = { .type = NFC_ZERO, .off = off, .count = len };
  return sent(c, nfc_conn_send(c, &h, NULL), "a zero range");
}

int nfc_send_end(struct nfc_conn *c)
{
  struct nfc_hdr h = { .type = NFC_END };
  int r = sent(c, nfc_conn_send(c, &h, NULL), "END");
  return r < 0 ? r : nfc_conn_expect(c, NFC_DONE, &h);
}

int nfc_send_commit(struct nfc_conn *c, const struct nfc_open *o)
{
  uint8_t buf[NFC_MAX_CTRL];
  int n = nfc_open_encode(o, buf, sizeof buf), r;

  if (n < 0)
    return svm_error(EINVAL, "%s: cannot send COMMIT of '%s'", nfc_conn_peer(c), o->name);
  struct nfc_hdr h = { .type = NFC_COMMIT, .len = (uint32_t)n };
  if ((r = sent(c, nfc_conn_send(c, &h, buf), "COMMIT")) < 0)
    return r;
  return nfc_conn_expect(c, NFC_DONE, &h);
}
