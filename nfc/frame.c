/* NFC frames: encoding and the parser that trusts nothing (see frame.h). */
#include <errno.h>
#include <string.h>

#include "common/crc32c.h"
#include "nfc/frame.h"

static void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { put16(p, v >> 16); put16(p + 2, (uint16_t)v); }
static void put64(uint8_t *p, uint64_t v) { put32(p, v >> 32); put32(p + 4, (uint32_t)v); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) << 16 | get16(p + 2); }
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) << 32 | get32(p + 4); }

void nfc_hdr_encode(uint8_t out[NFC_HDR_SIZE], const struct nfc_hdr *h)
{
  put32(out, NFC_MAGIC);
  out[4] = NFC_VERSION;
  out[5] = h->type;
  put16(out + 6, h->flags);
  put32(out + 8, h->len);
  put32(out + 12, h->crc);
  put64(out + 16, h->off);
  put64(out + 24, h->count);
}

static uint32_t max_len(uint8_t type)
{
  switch (type) {
  case NFC_DATA: return NFC_MAX_DATA;
  case NFC_OPEN: case NFC_COMMIT: case NFC_GET: return NFC_MAX_CTRL;
  case NFC_ERROR: return NFC_MAX_MSG;
  default: return 0;            /* READY, ZERO, END, DONE carry no payload */
  }
}

int nfc_hdr_decode(const uint8_t in[NFC_HDR_SIZE], struct nfc_hdr *h)
{
  if (get32(in) != NFC_MAGIC)
    return -EPROTO;
  if (in[4] != NFC_VERSION)
    return -EPROTONOSUPPORT;
  *h = (struct nfc_hdr){ .type = in[5], .flags = get16(in + 6), .len = get32(in + 8),
                         .crc = get32(in + 12), .off = get64(in + 16),
                         .count = get64(in + 24) };
  if (h->type < NFC_OPEN || h->type > NFC_TYPE_MAX)
    return -EPROTO;
  if (h->flags & ~(h->type == NFC_OPEN ? NFC_OPEN_CREATE : 0))
    return -EPROTO;
  if (h->len > max_len(h->type))
    return -EMSGSIZE;
  if (h->type == NFC_DATA && (h->len == 0 || h->off > UINT64_MAX - h->len))
    return -EPROTO;
  if (h->type == NFC_ZERO && (h->count == 0 || h->off > UINT64_MAX - h->count))
    return -EPROTO;
  if (h->type != NFC_ZERO && h->count != 0)
    return -EPROTO;
  return 0;
}

int nfc_payload_check(const struct nfc_hdr *h, const void *payload)
{
  return svm_crc32c(0, payload, h->len) == h->crc ? 0 : -EBADMSG;
}

bool nfc_name_ok(const char *name)
{
  size_t n = strnlen(name, NFC_MAX_NAME + 1);

  if (n == 0 || n > NFC_MAX_NAME || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
    return false;
  for (size_t i = 0; i < n; i++)
    if (name[i] == '/' || (unsigned char)name[i] < 0x20 || name[i] == 0x7f)
      return false;
  /* The receiver's progress records are ".NAME.nfc-START": never a name the sender chooses. */
  if (name[0] == '.' && strstr(name, ".nfc-") != NULL)
    return false;
  return true;
}

/* Payload: size, source_id, start, end (8 bytes each), provisioning, nranges (4 each),
 * nranges x (start, end), name length (2), name. */
int nfc_open_encode(const struct nfc_open *o, uint8_t *buf, size_t cap)
{
  size_t n = strnlen(o->name, NFC_MAX_NAME + 1);
  size_t need = 40 + 16 * (size_t)o->nranges + 2 + n;

  if (n > NFC_MAX_NAME || o->nranges > NFC_MAX_RANGES || need > cap || need > NFC_MAX_CTRL)
    return -EINVAL;
  put64(buf, o->size);
  put64(buf + 8, o->source_id);
  put64(buf + 16, o->start);
  put64(buf + 24, o->end);
  put32(buf + 32, o->provisioning);
  put32(buf + 36, o->nranges);
  uint8_t *p = buf + 40;
  for (uint32_t i = 0; i < o->nranges; i++, p += 16) {
    put64(p, o->ranges[i][0]);
    put64(p + 8, o->ranges[i][1]);
  }
  put16(p, (uint16_t)n);
  memcpy(p + 2, o->name, n);
  return (int)need;
}

int nfc_open_decode(const uint8_t *buf, size_t len, struct nfc_open *o)
{
  memset(o, 0, sizeof *o);
  if (len < 42)
    return -EPROTO;
  o->size = get64(buf);
  o->source_id = get64(buf + 8);
  o->start = get64(buf + 16);
  o->end = get64(buf + 24);
  o->provisioning = get32(buf + 32);
  o->nranges = get32(buf + 36);
  if (o->provisioning > 2 || o->nranges > NFC_MAX_RANGES || o->start > o->end ||
      o->end > o->size)
    return -EPROTO;
  if (len < 42 + 16 * (size_t)o->nranges)
    return -EPROTO;
  const uint8_t *p = buf + 40;
  uint64_t prev = 0;
  for (uint32_t i = 0; i < o->nranges; i++, p += 16) {
    o->ranges[i][0] = get64(p);
    o->ranges[i][1] = get64(p + 8);
    if (o->ranges[i][0] != prev || o->ranges[i][1] < o->ranges[i][0] ||
        o->ranges[i][1] > o->size)
      return -EPROTO;           /* ranges tile [0, size) in order */
    prev = o->ranges[i][1];
  }
  if (o->nranges > 0 && prev != o->size)
    return -EPROTO;
  size_t n = get16(p);
  if (n == 0 || n > NFC_MAX_NAME || (size_t)(p + 2 - buf) + n != len)
    return -EPROTO;
  memcpy(o->name, p + 2, n);
  o->name[n] = '\0';
  if (strlen(o->name) != n || !nfc_name_ok(o->name))
    return -EACCES;
  return 0;
}
