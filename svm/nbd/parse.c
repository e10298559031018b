/* Pure NBD parsing and validation: bytes in, structs and NBD error codes out. No I/O, no state,
 * no allocation, so the fuzzer and the unit tests exercise exactly what the server runs. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "svm/nbd/proto.h"

int nbds_decode_request(const uint8_t *buf, size_t len, struct nbds_request *r)
{
  if (len < NBD_REQUEST_SIZE || nbds_get32(buf) != NBD_REQUEST_MAGIC)
    return -EPROTO;
  r->flags = nbds_get16(buf + 4);
  r->type = nbds_get16(buf + 6);
  r->cookie = nbds_get64(buf + 8);
  r->offset = nbds_get64(buf + 16);
  r->length = nbds_get32(buf + 24);
  return 0;
}

/* Flags each command accepts; any other bit set is NBD_EINVAL. */
static uint16_t allowed_flags(uint16_t type, const struct nbds_limits *lim)
{
  switch (type) {
  case NBD_CMD_READ:
    return lim->structured ? NBD_CMD_FLAG_DF : 0;
  case NBD_CMD_WRITE:
  case NBD_CMD_TRIM:
    return NBD_CMD_FLAG_FUA;
  case NBD_CMD_WRITE_ZEROES:
    return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
  case NBD_CMD_BLOCK_STATUS:
    return NBD_CMD_FLAG_REQ_ONE;
  default:
    return 0;
  }
}

int nbds_check_request(const struct nbds_request *r, const struct nbds_limits *lim,
                      uint32_t *payload)
{
  bool writes = false;

  *payload = 0;
  if (r->type == NBD_CMD_WRITE) {
    /* The payload follows whatever we think of the request: it must be consumed to stay in
     * sync. Beyond what we are willing to read and drop, the client goes. */
    if (r->length > NBD_MAX_DISCARD)
      return -EPROTO;
    *payload = r->length;
  }

  switch (r->type) {
  case NBD_CMD_READ:
  case NBD_CMD_BLOCK_STATUS:
    break;
  case NBD_CMD_WRITE:
  case NBD_CMD_TRIM:
  case NBD_CMD_WRITE_ZEROES:
    writes = true;
    break;
  case NBD_CMD_DISC:
  case NBD_CMD_FLUSH:
    return r->flags ? NBD_EINVAL : NBD_OK;
  default:                         /* CACHE (not advertised), RESIZE, unknown */
    return NBD_EINVAL;
  }

  if (r->flags & ~allowed_flags(r->type, lim))
    return NBD_EINVAL;
  if (writes && lim->read_only)
    return NBD_EPERM;
  if (r->type == NBD_CMD_BLOCK_STATUS && !(lim->structured && lim->have_contexts))
    return NBD_EINVAL;
  if (r->length == 0)
    return NBD_EINVAL;
  if ((r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE) && r->length > lim->max_len)
    return NBD_EOVERFLOW;
  if (r->offset > lim->size || r->length > lim->size - r->offset)
    return (r->type == NBD_CMD_WRITE || r->type == NBD_CMD_WRITE_ZEROES) ? NBD_ENOSPC
                                                                         : NBD_EINVAL;
  return NBD_OK;
}

const char *nbds_cmd_name(uint16_t type, char *tmp, size_t tmplen)
{
  static const char *const names[] = {
    "READ", "WRITE", "DISC", "FLUSH", "TRIM", "CACHE", "WRITE_ZEROES", "BLOCK_STATUS",
  };
  if (type < sizeof names / sizeof names[0])
    return names[type];
  snprintf(tmp, tmplen, "CMD#%u", (unsigned)type);
  return tmp;
}

uint32_t nbds_errno_to_wire(int err)
{
  switch (err) {
  case 0:
    return NBD_OK;
  case EPERM:
  case EROFS:
    return NBD_EPERM;
  case ENOMEM:
    return NBD_ENOMEM;
  case EINVAL:
    return NBD_EINVAL;
  case ENOSPC:
  case EDQUOT:
  case EFBIG:
    return NBD_ENOSPC;
  case EOVERFLOW:
    return NBD_EOVERFLOW;
  case ENOTSUP:
    return NBD_ENOTSUP;
  case ESHUTDOWN:
    return NBD_ESHUTDOWN;
  default:
    return NBD_EIO;
  }
}

int nbds_decode_option(const uint8_t *buf, size_t len, uint32_t *opt, uint32_t *optlen)
{
  if (len < NBD_OPT_HEADER_SIZE || nbds_get64(buf) != NBD_IHAVEOPT)
    return -EPROTO;
  *opt = nbds_get32(buf + 8);
  *optlen = nbds_get32(buf + 12);
  return 0;
}

uint32_t nbds_parse_go(const uint8_t *d, uint32_t len, struct nbds_go *out)
{
  uint32_t namelen;

  memset(out, 0, sizeof *out);
  if (len < 4 + 2)
    return NBD_REP_ERR_INVALID;
  namelen = nbds_get32(d);
  if (namelen > len - 6)
    return NBD_REP_ERR_INVALID;
  if (namelen > NBD_MAX_STRING)
    return NBD_REP_ERR_TOO_BIG;
  out->name = (const char *)d + 4;
  out->namelen = namelen;
  out->ninfo = nbds_get16(d + 4 + namelen);
  /* Exactly ninfo 16-bit requests follow, nothing else. */
  if ((uint64_t)len != 4 + (uint64_t)namelen + 2 + 2 * (uint64_t)out->ninfo)
    return NBD_REP_ERR_INVALID;
  out->info = d + 4 + namelen + 2;
  return 0;
}

uint32_t nbds_parse_meta(const uint8_t *d, uint32_t len, struct nbds_meta *out)
{
  uint32_t namelen, pos;

  memset(out, 0, sizeof *out);
  if (len < 4 + 4)
    return NBD_REP_ERR_INVALID;
  namelen = nbds_get32(d);
  if (namelen > len - 8)
    return NBD_REP_ERR_INVALID;
  if (namelen > NBD_MAX_STRING)
    return NBD_REP_ERR_TOO_BIG;
  out->name = (const char *)d + 4;
  out->namelen = namelen;
  out->nqueries = nbds_get32(d + 4 + namelen);
  if (out->nqueries > NBD_MAX_QUERIES)
    return NBD_REP_ERR_TOO_BIG;
  pos = 4 + namelen + 4;
  out->first = pos;
  for (uint32_t i = 0; i < out->nqueries; i++) {
    uint32_t qlen;
    if (len - pos < 4)
      return NBD_REP_ERR_INVALID;
    qlen = nbds_get32(d + pos);
    pos += 4;
    if (qlen > len - pos)
      return NBD_REP_ERR_INVALID;
    if (qlen > NBD_MAX_STRING)
      return NBD_REP_ERR_TOO_BIG;
    pos += qlen;
  }
  if (pos != len)
    return NBD_REP_ERR_INVALID;
  return 0;
}

void nbds_meta_next(const uint8_t *d, uint32_t *pos, const char **q, uint32_t *qlen)
{
  *qlen = nbds_get32(d + *pos);
  *q = (const char *)d + *pos + 4;
  *pos += 4 + *qlen;
}

bool nbds_name_matches(const char *want, uint32_t wantlen, const char *name)
{
  if (wantlen == 0)
    return true;
  return strlen(name) == wantlen && memcmp(want, name, wantlen) == 0;
}
