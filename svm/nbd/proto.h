/* Internal: NBD wire constants, request/option structs and the pure parsing functions
 * (svm/nbd-parse.c). Everything on the wire is big-endian.
 *
 * The parser does no I/O and keeps no state: it turns bytes into structs and decides which
 * NBD error a request deserves, so that the libFuzzer target (tests/fuzz/fuzz-nbd-request.c)
 * and the unit tests drive exactly the code the server runs.
 */
#ifndef SVM_NBD_PROTO_H
#define SVM_NBD_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Handshake magics. */
#define NBD_MAGIC          UINT64_C(0x4e42444d41474943)   /* "NBDMAGIC" */
#define NBD_IHAVEOPT       UINT64_C(0x49484156454F5054)   /* "IHAVEOPT" */
#define NBD_REP_MAGIC      UINT64_C(0x3e889045565a9)
#define NBD_REQUEST_MAGIC  UINT32_C(0x25609513)
#define NBD_SIMPLE_MAGIC   UINT32_C(0x67446698)
#define NBD_STRUCT_MAGIC   UINT32_C(0x668e33ef)

/* Handshake flags (server) and client flags. */
enum {
  NBD_FLAG_FIXED_NEWSTYLE = 1 << 0,
  NBD_FLAG_NO_ZEROES = 1 << 1,
};

/* Options. */
enum {
  NBD_OPT_EXPORT_NAME = 1,
  NBD_OPT_ABORT = 2,
  NBD_OPT_LIST = 3,
  NBD_OPT_STARTTLS = 5,
  NBD_OPT_INFO = 6,
  NBD_OPT_GO = 7,
  NBD_OPT_STRUCTURED_REPLY = 8,
  NBD_OPT_LIST_META_CONTEXT = 9,
  NBD_OPT_SET_META_CONTEXT = 10,
};

/* Option replies. */
#define NBD_REP_ERR_BIT UINT32_C(0x80000000)
enum {
  NBD_REP_ACK = 1,
  NBD_REP_SERVER = 2,
  NBD_REP_INFO = 3,
  NBD_REP_META_CONTEXT = 4,
};
#define NBD_REP_ERR_UNSUP    (NBD_REP_ERR_BIT | 1)
#define NBD_REP_ERR_POLICY   (NBD_REP_ERR_BIT | 2)
#define NBD_REP_ERR_INVALID  (NBD_REP_ERR_BIT | 3)
#define NBD_REP_ERR_PLATFORM (NBD_REP_ERR_BIT | 4)
#define NBD_REP_ERR_TLS_REQD (NBD_REP_ERR_BIT | 5)
#define NBD_REP_ERR_UNKNOWN  (NBD_REP_ERR_BIT | 6)
#define NBD_REP_ERR_SHUTDOWN (NBD_REP_ERR_BIT | 7)
#define NBD_REP_ERR_TOO_BIG  (NBD_REP_ERR_BIT | 9)

/* NBD_REP_INFO types. */
enum {
  NBD_INFO_EXPORT = 0,
  NBD_INFO_NAME = 1,
  NBD_INFO_DESCRIPTION = 2,
  NBD_INFO_BLOCK_SIZE = 3,
};

/* Transmission flags. */
enum {
  NBD_FLAG_HAS_FLAGS = 1 << 0,
  NBD_FLAG_READ_ONLY = 1 << 1,
  NBD_FLAG_SEND_FLUSH = 1 << 2,
  NBD_FLAG_SEND_FUA = 1 << 3,
  NBD_FLAG_ROTATIONAL = 1 << 4,
  NBD_FLAG_SEND_TRIM = 1 << 5,
  NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6,
  NBD_FLAG_SEND_DF = 1 << 7,
  NBD_FLAG_CAN_MULTI_CONN = 1 << 8,
  NBD_FLAG_SEND_FAST_ZERO = 1 << 11,
};

/* Commands and command flags. */
enum {
  NBD_CMD_READ = 0,
  NBD_CMD_WRITE = 1,
  NBD_CMD_DISC = 2,
  NBD_CMD_FLUSH = 3,
  NBD_CMD_TRIM = 4,
  NBD_CMD_CACHE = 5,
  NBD_CMD_WRITE_ZEROES = 6,
  NBD_CMD_BLOCK_STATUS = 7,
};
enum {
  NBD_CMD_FLAG_FUA = 1 << 0,
  NBD_CMD_FLAG_NO_HOLE = 1 << 1,
  NBD_CMD_FLAG_DF = 1 << 2,
  NBD_CMD_FLAG_REQ_ONE = 1 << 3,
  NBD_CMD_FLAG_FAST_ZERO = 1 << 4,
};

/* Structured reply chunks. */
enum {
  NBD_REPLY_FLAG_DONE = 1,
  NBD_REPLY_TYPE_NONE = 0,
  NBD_REPLY_TYPE_OFFSET_DATA = 1,
  NBD_REPLY_TYPE_OFFSET_HOLE = 2,
  NBD_REPLY_TYPE_BLOCK_STATUS = 5,
  NBD_REPLY_TYPE_ERROR = (1 << 15) + 1,
};

/* base:allocation extent flags. */
enum { NBD_STATE_HOLE = 1, NBD_STATE_ZERO = 2 };
/* Flag of a changed extent in a provider's context (svm_meta_provider). */
enum { NBD_STATE_DIRTY = 1 };

/* Errors on the wire (not the host's errno values). */
enum {
  NBD_OK = 0,
  NBD_EPERM = 1,
  NBD_EIO = 5,
  NBD_ENOMEM = 12,
  NBD_EINVAL = 22,
  NBD_ENOSPC = 28,
  NBD_EOVERFLOW = 75,
  NBD_ENOTSUP = 95,
  NBD_ESHUTDOWN = 108,
};

/* Sizes and bounds. */
enum {
  NBD_REQUEST_SIZE = 28,
  NBD_OPT_HEADER_SIZE = 16,
  NBD_SIMPLE_REPLY_SIZE = 16,
  NBD_STRUCT_REPLY_SIZE = 20,
  NBD_MAX_STRING = 4096,              /* names and queries, as the spec bounds them */
  NBD_MAX_OPTION = 64 * 1024,         /* option payloads we read; larger: ERR_TOO_BIG */
  NBD_MAX_OPTION_DISCARD = 1 << 20,   /* larger than this: drop the client */
  NBD_MAX_QUERIES = 64,
  NBD_MAX_REQUEST = 32 * 1024 * 1024, /* READ/WRITE payload limit we advertise */
  NBD_MAX_DISCARD = 64 * 1024 * 1024, /* oversize WRITE payloads we still read and drop */
  NBD_MIN_BLOCK = 1,
  NBD_PREF_BLOCK = 4096,
};

/* ---- big-endian helpers ---- */
static inline uint16_t nbds_get16(const uint8_t *p)
{
  return (uint16_t)(p[0] << 8 | p[1]);
}
static inline uint32_t nbds_get32(const uint8_t *p)
{
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t nbds_get64(const uint8_t *p)
{
  return (uint64_t)nbds_get32(p) << 32 | nbds_get32(p + 4);
}
static inline void nbds_put16(uint8_t *p, uint16_t v)
{
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
static inline void nbds_put32(uint8_t *p, uint32_t v)
{
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}
static inline void nbds_put64(uint8_t *p, uint64_t v)
{
  nbds_put32(p, (uint32_t)(v >> 32));
  nbds_put32(p + 4, (uint32_t)v);
}

/* ---- transmission phase ---- */
struct nbds_request {
  uint16_t flags;
  uint16_t type;
  uint64_t cookie;
  uint64_t offset;
  uint32_t length;
};

/* What the connection negotiated; the validator checks requests against it. */
struct nbds_limits {
  uint64_t size;          /* export size in bytes */
  uint32_t max_len;       /* largest READ/WRITE payload (NBD_MAX_REQUEST) */
  bool read_only;
  bool structured;        /* NBD_OPT_STRUCTURED_REPLY negotiated */
  bool have_contexts;     /* at least one meta context selected */
};

/* Decode a 28-byte request header. Returns 0, or -EPROTO when the magic is wrong (the stream
 * is out of sync: the only thing to do is to drop the client). */
int nbds_decode_request(const uint8_t *buf, size_t len, struct nbds_request *r);

/* Validate a decoded request. Returns NBD_OK or the NBD error to reply with; *payload is set to
 * the number of payload bytes that follow the header on the wire (for WRITE: its length), which
 * the caller must read (and drop, when the request failed). Returns -EPROTO when the client must
 * be dropped (a WRITE whose payload is too large even to discard). */
int nbds_check_request(const struct nbds_request *r, const struct nbds_limits *lim,
                      uint32_t *payload);

/* Printable name of a command ("READ", ... "CMD#9"), for log lines. */
const char *nbds_cmd_name(uint16_t type, char *tmp, size_t tmplen);

/* Host errno (positive) -> NBD wire error. */
uint32_t nbds_errno_to_wire(int err);

/* ---- handshake phase ---- */

/* Decode a 16-byte option header. Returns 0 or -EPROTO (bad magic). */
int nbds_decode_option(const uint8_t *buf, size_t len, uint32_t *opt, uint32_t *optlen);

/* NBD_OPT_GO / NBD_OPT_INFO payload. Pointers point into the parsed buffer. */
struct nbds_go {
  const char *name;       /* not NUL-terminated */
  uint32_t namelen;
  uint16_t ninfo;
  const uint8_t *info;    /* ninfo big-endian 16-bit info types */
};
/* Returns 0 or NBD_REP_ERR_INVALID (malformed) / NBD_REP_ERR_TOO_BIG (name too long). */
uint32_t nbds_parse_go(const uint8_t *d, uint32_t len, struct nbds_go *out);

/* NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT payload. */
struct nbds_meta {
  const char *name;       /* export name, not NUL-terminated */
  uint32_t namelen;
  uint32_t nqueries;
  uint32_t first;         /* offset of the first query in the payload */
};
/* Validates the whole payload (every query length in bounds, exact total), so that iterating
 * afterwards cannot fail. Returns 0 or NBD_REP_ERR_INVALID / NBD_REP_ERR_TOO_BIG. */
uint32_t nbds_parse_meta(const uint8_t *d, uint32_t len, struct nbds_meta *out);
/* Next query of an already validated payload: *pos starts at meta.first. */
void nbds_meta_next(const uint8_t *d, uint32_t *pos, const char **q, uint32_t *qlen);

/* Does an export name requested by a client (not NUL-terminated) select an export called
 * `name`? The empty name selects the default (the only) export. */
bool nbds_name_matches(const char *want, uint32_t wantlen, const char *name);

#endif
