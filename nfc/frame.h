/* Internal: NFC frames. Every message on an NFC stream is a 32-byte header, big-endian, then
 * `len` bytes of payload:
 *
 *     0  magic "NFC1"   4  version (1)   5  type   6  flags (16 bits)
 *     8  len: payload bytes             12  crc: CRC-32C of the payload
 *    16  off: offset in the file (DATA, ZERO, READY), or an errno (ERROR)
 *    24  count: bytes a ZERO frame covers (0 otherwise)
 *
 * The parser trusts nothing: every field is checked against the type's limits before a byte of
 * payload is read, and the payload's CRC before it is used. */
#ifndef NFC_FRAME_H
#define NFC_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
  NFC_MAGIC = 0x4e464331,         /* "NFC1" */
  NFC_VERSION = 1,
  NFC_HDR_SIZE = 32,
  NFC_MAX_DATA = 8 << 20,         /* payload of one DATA frame */
  NFC_MAX_CTRL = 16 << 10,        /* payload of any other frame */
  NFC_MAX_NAME = 230,             /* a file name: NAME_MAX less room for ".NAME.nfc-START" */
  NFC_MAX_RANGES = 64,            /* ranges (streams) of one file */
  NFC_MAX_MSG = 1024,             /* text of an ERROR frame */
};

enum nfc_type {
  NFC_OPEN = 1,     /* sender: a range of a file; payload struct nfc_open */
  NFC_READY,        /* receiver: go on from off (what is durable of the range) */
  NFC_DATA,         /* sender: len bytes at off */
  NFC_ZERO,         /* sender: count bytes at off read as zeros */
  NFC_END,          /* sender: the range is all sent; make it durable */
  NFC_COMMIT,       /* sender: every range is durable; finish the file; payload nfc_open */
  NFC_DONE,         /* receiver: END or COMMIT done, durable */
  NFC_ERROR,        /* either: payload a message, off an errno */
  NFC_GET,          /* client: send me this file (payload nfc_open: name, provisioning); the
                       roles turn for one file: the server sends OPEN ... COMMIT */
  NFC_TYPE_MAX = NFC_GET,
};

enum {
  NFC_OPEN_CREATE = 1,            /* flags of OPEN: the first stream of a file creates it */
};

struct nfc_hdr {
  uint8_t type;
  uint16_t flags;
  uint32_t len, crc;
  uint64_t off, count;
};

/* OPEN and COMMIT payload: which file, which range. */
struct nfc_open {
  uint64_t size;          /* of the whole file */
  uint64_t source_id;     /* identifies the source's content: a record of another one is void */
  uint64_t start, end;    /* this stream's range (COMMIT: 0, size) */
  uint32_t provisioning;  /* 0 thin, 1 thick, 2 eager-zeroed thick */
  uint32_t nranges;       /* COMMIT: how many ranges follow in `ranges` */
  uint64_t ranges[NFC_MAX_RANGES][2];
  char name[NFC_MAX_NAME + 1];
};

void nfc_hdr_encode(uint8_t out[NFC_HDR_SIZE], const struct nfc_hdr *h);
/* Decode and check a header: magic, version, type, flags, and len against the type's limit.
 * Returns 0 or -EPROTO (bad magic, type, flags), -EMSGSIZE (len over the limit),
 * -EPROTONOSUPPORT (another version). */
int nfc_hdr_decode(const uint8_t in[NFC_HDR_SIZE], struct nfc_hdr *h);
/* The payload of a frame whose header was decoded: -EBADMSG when the CRC does not match. */
int nfc_payload_check(const struct nfc_hdr *h, const void *payload);

/* OPEN/COMMIT payload: encode into buf (at least NFC_MAX_CTRL bytes), returns the length or
 * -EINVAL; decode checks every length, the ranges (ordered, inside size) and the name
 * (nfc_name_ok). */
int nfc_open_encode(const struct nfc_open *o, uint8_t *buf, size_t cap);
int nfc_open_decode(const uint8_t *buf, size_t len, struct nfc_open *o);

/* A file name from the network: one component, no '/', not "." or "..", no NUL, no control
 * characters, not a receiver's own ".*.nfc" record, 1..NFC_MAX_NAME bytes. */
bool nfc_name_ok(const char *name);

#endif
