/* The pure NBD parser (svm/nbd/parse.c): request headers, validation against what was
 * negotiated, option payloads. Mostly negative cases: every way a client can be wrong. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "svm/nbd/proto.h"

static const struct nbds_limits lim_rw = {
  .size = 1 << 20, .max_len = NBD_MAX_REQUEST, .structured = true, .have_contexts = true,
};

static void mkreq(uint8_t *b, uint32_t magic, uint16_t flags, uint16_t type, uint64_t cookie,
                  uint64_t off, uint32_t len)
{
  nbds_put32(b, magic);
  nbds_put16(b + 4, flags);
  nbds_put16(b + 6, type);
  nbds_put64(b + 8, cookie);
  nbds_put64(b + 16, off);
  nbds_put32(b + 24, len);
}

/* decode + check in one go; returns the check result, payload in *pl */
static int run(uint16_t flags, uint16_t type, uint64_t off, uint32_t len,
               const struct nbds_limits *lim, uint32_t *pl)
{
  uint8_t b[NBD_REQUEST_SIZE];
  struct nbds_request r;
  uint32_t dummy;

  mkreq(b, NBD_REQUEST_MAGIC, flags, type, 0x1122334455667788u, off, len);
  assert_int_equal(nbds_decode_request(b, sizeof b, &r), 0);
  return nbds_check_request(&r, lim, pl ? pl : &dummy);
}

static void test_endian(void **st)
{
  uint8_t b[8];
  (void)st;
  nbds_put64(b, 0x0102030405060708u);
  assert_int_equal(b[0], 1);
  assert_int_equal(b[7], 8);
  assert_true(nbds_get64(b) == 0x0102030405060708u);
  nbds_put32(b, 0xdeadbeef);
  assert_int_equal(nbds_get32(b), 0xdeadbeef);
  nbds_put16(b, 0xabcd);
  assert_int_equal(nbds_get16(b), 0xabcd);
}

static void test_decode(void **st)
{
  uint8_t b[NBD_REQUEST_SIZE];
  struct nbds_request r;
  (void)st;

  mkreq(b, NBD_REQUEST_MAGIC, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 42, 4096, 512);
  assert_int_equal(nbds_decode_request(b, sizeof b, &r), 0);
  assert_int_equal(r.flags, NBD_CMD_FLAG_FUA);
  assert_int_equal(r.type, NBD_CMD_WRITE);
  assert_true(r.cookie == 42);
  assert_true(r.offset == 4096);
  assert_int_equal(r.length, 512);
}

static void test_decode_bad(void **st)
{
  uint8_t b[NBD_REQUEST_SIZE];
  struct nbds_request r;
  (void)st;

  mkreq(b, NBD_SIMPLE_MAGIC, 0, NBD_CMD_READ, 1, 0, 512);   /* a reply's magic */
  assert_int_equal(nbds_decode_request(b, sizeof b, &r), -EPROTO);
  mkreq(b, 0, 0, NBD_CMD_READ, 1, 0, 512);
  assert_int_equal(nbds_decode_request(b, sizeof b, &r), -EPROTO);
  mkreq(b, NBD_REQUEST_MAGIC, 0, NBD_CMD_READ, 1, 0, 512);
  assert_int_equal(nbds_decode_request(b, NBD_REQUEST_SIZE - 1, &r), -EPROTO); /* truncated */
  assert_int_equal(nbds_decode_request(b, 0, &r), -EPROTO);
}

static void test_valid(void **st)
{
  uint32_t pl;
  (void)st;
  assert_int_equal(run(0, NBD_CMD_READ, 0, 4096, &lim_rw, &pl), NBD_OK);
  assert_int_equal(pl, 0);
  assert_int_equal(run(NBD_CMD_FLAG_DF, NBD_CMD_READ, 0, 4096, &lim_rw, &pl), NBD_OK);
  assert_int_equal(run(NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 0, 4096, &lim_rw, &pl), NBD_OK);
  assert_int_equal(pl, 4096);
  assert_int_equal(run(0, NBD_CMD_FLUSH, 0, 0, &lim_rw, &pl), NBD_OK);
  assert_int_equal(run(NBD_CMD_FLAG_FUA, NBD_CMD_TRIM, 0, 1 << 20, &lim_rw, &pl), NBD_OK);
  assert_int_equal(run(NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO,
                       NBD_CMD_WRITE_ZEROES, 512, 512, &lim_rw, &pl), NBD_OK);
  assert_int_equal(pl, 0);   /* WRITE_ZEROES carries no payload */
  assert_int_equal(run(NBD_CMD_FLAG_REQ_ONE, NBD_CMD_BLOCK_STATUS, 0, 1 << 20, &lim_rw, &pl),
                   NBD_OK);
  assert_int_equal(run(0, NBD_CMD_DISC, 0, 0, &lim_rw, &pl), NBD_OK);
  /* the last byte exactly */
  assert_int_equal(run(0, NBD_CMD_READ, (1 << 20) - 1, 1, &lim_rw, &pl), NBD_OK);
}

static void test_unknown_commands(void **st)
{
  uint32_t pl = 99;
  (void)st;
  assert_int_equal(run(0, NBD_CMD_CACHE, 0, 512, &lim_rw, &pl), NBD_EINVAL);  /* not offered */
  assert_int_equal(run(0, 8, 0, 512, &lim_rw, &pl), NBD_EINVAL);              /* RESIZE */
  assert_int_equal(run(0, 0xffff, 0, 512, &lim_rw, &pl), NBD_EINVAL);
  assert_int_equal(pl, 0);
}

static void test_bad_flags(void **st)
{
  struct nbds_limits simple = lim_rw;
  (void)st;
  simple.structured = false;
  assert_int_equal(run(NBD_CMD_FLAG_FUA, NBD_CMD_READ, 0, 512, &lim_rw, NULL), NBD_EINVAL);
  assert_int_equal(run(NBD_CMD_FLAG_DF, NBD_CMD_READ, 0, 512, &simple, NULL), NBD_EINVAL);
  assert_int_equal(run(NBD_CMD_FLAG_NO_HOLE, NBD_CMD_WRITE, 0, 512, &lim_rw, NULL),
                   NBD_EINVAL);
  assert_int_equal(run(NBD_CMD_FLAG_FAST_ZERO, NBD_CMD_TRIM, 0, 512, &lim_rw, NULL),
                   NBD_EINVAL);
  assert_int_equal(run(NBD_CMD_FLAG_REQ_ONE, NBD_CMD_READ, 0, 512, &lim_rw, NULL), NBD_EINVAL);
  assert_int_equal(run(NBD_CMD_FLAG_FUA, NBD_CMD_FLUSH, 0, 0, &lim_rw, NULL), NBD_EINVAL);
  assert_int_equal(run(NBD_CMD_FLAG_FUA, NBD_CMD_DISC, 0, 0, &lim_rw, NULL), NBD_EINVAL);
  assert_int_equal(run(0x8000, NBD_CMD_WRITE_ZEROES, 0, 512, &lim_rw, NULL), NBD_EINVAL);
  assert_int_equal(run(1 << 5, NBD_CMD_BLOCK_STATUS, 0, 512, &lim_rw, NULL), NBD_EINVAL);
}

static void test_write_payload_always_consumed(void **st)
{
  uint32_t pl = 0;
  (void)st;
  /* even a WRITE that fails validation announces its payload, so the stream stays in sync */
  assert_int_equal(run(NBD_CMD_FLAG_NO_HOLE, NBD_CMD_WRITE, 0, 4096, &lim_rw, &pl), NBD_EINVAL);
  assert_int_equal(pl, 4096);
  assert_int_equal(run(0, NBD_CMD_WRITE, 1 << 20, 4096, &lim_rw, &pl), NBD_ENOSPC);
  assert_int_equal(pl, 4096);
  assert_int_equal(run(0, NBD_CMD_WRITE, 0, NBD_MAX_REQUEST + 1, &lim_rw, &pl), NBD_EOVERFLOW);
  assert_int_equal(pl, NBD_MAX_REQUEST + 1);
  /* beyond what we drain: drop the client */
  assert_int_equal(run(0, NBD_CMD_WRITE, 0, NBD_MAX_DISCARD + 1, &lim_rw, &pl), -EPROTO);
  assert_int_equal(run(0, NBD_CMD_WRITE, 0, UINT32_MAX, &lim_rw, &pl), -EPROTO);
}

static void test_ranges(void **st)
{
  uint64_t size = lim_rw.size;
  (void)st;
  assert_int_equal(run(0, NBD_CMD_READ, size, 1, &lim_rw, NULL), NBD_EINVAL);
  assert_int_equal(run(0, NBD_CMD_READ, size - 1, 2, &lim_rw, NULL), NBD_EINVAL);
  assert_int_equal(run(0, NBD_CMD_READ, UINT64_MAX, 1, &lim_rw, NULL), NBD_EINVAL);
  /* offset + length wraps around 2^64: still past the end */
  assert_int_equal(run(0, NBD_CMD_READ, UINT64_MAX - 10, 4096, &lim_rw, NULL), NBD_EINVAL);
  assert_int_equal(run(0, NBD_CMD_TRIM, size - 512, 1024, &lim_rw, NULL), NBD_EINVAL);
  assert_int_equal(run(0, NBD_CMD_BLOCK_STATUS, size, 1, &lim_rw, NULL), NBD_EINVAL);
  assert_int_equal(run(0, NBD_CMD_WRITE_ZEROES, size - 1, 2, &lim_rw, NULL), NBD_ENOSPC);
  assert_int_equal(run(0, NBD_CMD_WRITE, UINT64_MAX - 10, 4096, &lim_rw, NULL), NBD_ENOSPC);
  /* zero lengths */
  assert_int_equal(run(0, NBD_CMD_READ, 0, 0, &lim_rw, NULL), NBD_EINVAL);
  assert_int_equal(run(0, NBD_CMD_WRITE, 0, 0, &lim_rw, NULL), NBD_EINVAL);
  assert_int_equal(run(0, NBD_CMD_WRITE_ZEROES, 0, 0, &lim_rw, NULL), NBD_EINVAL);
  assert_int_equal(run(0, NBD_CMD_BLOCK_STATUS, 0, 0, &lim_rw, NULL), NBD_EINVAL);
}

static void test_lengths(void **st)
{
  struct nbds_limits big = lim_rw;
  (void)st;
  big.size = UINT64_C(1) << 40;
  assert_int_equal(run(0, NBD_CMD_READ, 0, NBD_MAX_REQUEST, &big, NULL), NBD_OK);
  assert_int_equal(run(0, NBD_CMD_READ, 0, NBD_MAX_REQUEST + 1, &big, NULL), NBD_EOVERFLOW);
  assert_int_equal(run(0, NBD_CMD_READ, 0, UINT32_MAX, &big, NULL), NBD_EOVERFLOW);
  /* TRIM, WRITE_ZEROES and BLOCK_STATUS carry no data: any length in range is fine */
  assert_int_equal(run(0, NBD_CMD_TRIM, 0, UINT32_MAX, &big, NULL), NBD_OK);
  assert_int_equal(run(0, NBD_CMD_WRITE_ZEROES, 0, UINT32_MAX, &big, NULL), NBD_OK);
  assert_int_equal(run(0, NBD_CMD_BLOCK_STATUS, 0, UINT32_MAX, &big, NULL), NBD_OK);
}

static void test_read_only(void **st)
{
  struct nbds_limits ro = lim_rw;
  uint32_t pl;
  (void)st;
  ro.read_only = true;
  assert_int_equal(run(0, NBD_CMD_WRITE, 0, 512, &ro, &pl), NBD_EPERM);
  assert_int_equal(pl, 512);
  assert_int_equal(run(0, NBD_CMD_TRIM, 0, 512, &ro, NULL), NBD_EPERM);
  assert_int_equal(run(0, NBD_CMD_WRITE_ZEROES, 0, 512, &ro, NULL), NBD_EPERM);
  assert_int_equal(run(0, NBD_CMD_READ, 0, 512, &ro, NULL), NBD_OK);
  assert_int_equal(run(0, NBD_CMD_FLUSH, 0, 0, &ro, NULL), NBD_OK);
}

static void test_block_status_needs_negotiation(void **st)
{
  struct nbds_limits l = lim_rw;
  (void)st;
  l.have_contexts = false;
  assert_int_equal(run(0, NBD_CMD_BLOCK_STATUS, 0, 512, &l, NULL), NBD_EINVAL);
  l.have_contexts = true;
  l.structured = false;
  assert_int_equal(run(0, NBD_CMD_BLOCK_STATUS, 0, 512, &l, NULL), NBD_EINVAL);
}

static void test_errno_map(void **st)
{
  (void)st;
  assert_int_equal(nbds_errno_to_wire(0), NBD_OK);
  assert_int_equal(nbds_errno_to_wire(EROFS), NBD_EPERM);
  assert_int_equal(nbds_errno_to_wire(EDQUOT), NBD_ENOSPC);
  assert_int_equal(nbds_errno_to_wire(ENOTSUP), NBD_ENOTSUP);
  assert_int_equal(nbds_errno_to_wire(EBADF), NBD_EIO);
  assert_int_equal(nbds_errno_to_wire(12345), NBD_EIO);
}

static void test_cmd_name(void **st)
{
  char tmp[16];
  (void)st;
  assert_string_equal(nbds_cmd_name(NBD_CMD_BLOCK_STATUS, tmp, sizeof tmp), "BLOCK_STATUS");
  assert_string_equal(nbds_cmd_name(999, tmp, sizeof tmp), "CMD#999");
}

static void test_option_header(void **st)
{
  uint8_t b[16];
  uint32_t opt, len;
  (void)st;
  nbds_put64(b, NBD_IHAVEOPT);
  nbds_put32(b + 8, NBD_OPT_GO);
  nbds_put32(b + 12, 77);
  assert_int_equal(nbds_decode_option(b, sizeof b, &opt, &len), 0);
  assert_int_equal(opt, NBD_OPT_GO);
  assert_int_equal(len, 77);
  assert_int_equal(nbds_decode_option(b, 15, &opt, &len), -EPROTO);
  nbds_put64(b, NBD_MAGIC);
  assert_int_equal(nbds_decode_option(b, sizeof b, &opt, &len), -EPROTO);
}

/* Build a GO payload: name, ninfo, info types */
static uint32_t mkgo(uint8_t *b, const char *name, uint16_t ninfo, const uint16_t *info)
{
  uint32_t nl = (uint32_t)strlen(name), p = 0;
  nbds_put32(b, nl);
  memcpy(b + 4, name, nl);
  p = 4 + nl;
  nbds_put16(b + p, ninfo);
  p += 2;
  for (uint16_t i = 0; i < ninfo; i++, p += 2)
    nbds_put16(b + p, info[i]);
  return p;
}

static void test_go(void **st)
{
  uint8_t b[256];
  struct nbds_go go;
  uint16_t info[] = { NBD_INFO_BLOCK_SIZE, NBD_INFO_NAME };
  uint32_t len;
  (void)st;

  len = mkgo(b, "vm1/disk0", 2, info);
  assert_int_equal(nbds_parse_go(b, len, &go), 0);
  assert_int_equal(go.namelen, 9);
  assert_memory_equal(go.name, "vm1/disk0", 9);
  assert_int_equal(go.ninfo, 2);
  assert_int_equal(nbds_get16(go.info + 2), NBD_INFO_NAME);
  assert_true(nbds_name_matches(go.name, go.namelen, "vm1/disk0"));
  assert_false(nbds_name_matches(go.name, go.namelen, "vm1/disk"));
  assert_false(nbds_name_matches(go.name, go.namelen, "vm1/disk00"));

  len = mkgo(b, "", 0, NULL);
  assert_int_equal(nbds_parse_go(b, len, &go), 0);
  assert_true(nbds_name_matches(go.name, go.namelen, "anything"));   /* default export */

  /* truncated everywhere */
  len = mkgo(b, "disk", 2, info);
  for (uint32_t l = 0; l < len; l++)
    assert_int_equal(nbds_parse_go(b, l, &go), NBD_REP_ERR_INVALID);
  /* trailing garbage */
  assert_int_equal(nbds_parse_go(b, len + 1, &go), NBD_REP_ERR_INVALID);
  /* name length larger than the payload */
  nbds_put32(b, 0xffffffff);
  assert_int_equal(nbds_parse_go(b, len, &go), NBD_REP_ERR_INVALID);
  /* ninfo larger than the payload */
  len = mkgo(b, "disk", 0, NULL);
  nbds_put16(b + 8, 3);
  assert_int_equal(nbds_parse_go(b, len, &go), NBD_REP_ERR_INVALID);
}

static void test_go_long_name(void **st)
{
  static uint8_t b[NBD_MAX_STRING + 64];
  struct nbds_go go;
  (void)st;
  nbds_put32(b, NBD_MAX_STRING + 1);
  memset(b + 4, 'a', NBD_MAX_STRING + 1);
  nbds_put16(b + 4 + NBD_MAX_STRING + 1, 0);
  assert_int_equal(nbds_parse_go(b, 4 + NBD_MAX_STRING + 1 + 2, &go), NBD_REP_ERR_TOO_BIG);
}

static uint32_t mkmeta(uint8_t *b, const char *name, unsigned nq, const char *const *q)
{
  uint32_t nl = (uint32_t)strlen(name), p;
  nbds_put32(b, nl);
  memcpy(b + 4, name, nl);
  p = 4 + nl;
  nbds_put32(b + p, nq);
  p += 4;
  for (unsigned i = 0; i < nq; i++) {
    uint32_t ql = (uint32_t)strlen(q[i]);
    nbds_put32(b + p, ql);
    memcpy(b + p + 4, q[i], ql);
    p += 4 + ql;
  }
  return p;
}

static void test_meta(void **st)
{
  static const char *const q[] = { "base:allocation", "svm-cbt:abc/7", "" };
  uint8_t b[512];
  struct nbds_meta m;
  uint32_t len, pos, ql;
  const char *s;
  (void)st;

  len = mkmeta(b, "disk", 3, q);
  assert_int_equal(nbds_parse_meta(b, len, &m), 0);
  assert_int_equal(m.nqueries, 3);
  assert_int_equal(m.namelen, 4);
  pos = m.first;
  nbds_meta_next(b, &pos, &s, &ql);
  assert_int_equal(ql, 15);
  assert_memory_equal(s, "base:allocation", 15);
  nbds_meta_next(b, &pos, &s, &ql);
  assert_memory_equal(s, "svm-cbt:abc/7", 13);
  nbds_meta_next(b, &pos, &s, &ql);
  assert_int_equal(ql, 0);
  assert_int_equal(pos, len);

  /* every truncation is invalid */
  for (uint32_t l = 0; l < len; l++)
    assert_int_equal(nbds_parse_meta(b, l, &m), NBD_REP_ERR_INVALID);
  assert_int_equal(nbds_parse_meta(b, len + 3, &m), NBD_REP_ERR_INVALID);   /* trailing */
  /* query count claims more than present */
  len = mkmeta(b, "disk", 1, q);
  nbds_put32(b + 8, 2);
  assert_int_equal(nbds_parse_meta(b, len, &m), NBD_REP_ERR_INVALID);
  /* query length past the end */
  len = mkmeta(b, "disk", 1, q);
  nbds_put32(b + 12, 0x7fffffff);
  assert_int_equal(nbds_parse_meta(b, len, &m), NBD_REP_ERR_INVALID);
  /* too many queries */
  len = mkmeta(b, "disk", 0, q);
  nbds_put32(b + 8, NBD_MAX_QUERIES + 1);
  assert_int_equal(nbds_parse_meta(b, len, &m), NBD_REP_ERR_TOO_BIG);
  /* zero queries is fine (LIST: all contexts; SET: none) */
  len = mkmeta(b, "", 0, q);
  assert_int_equal(nbds_parse_meta(b, len, &m), 0);
  assert_int_equal(m.nqueries, 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_endian),
    cmocka_unit_test(test_decode),
    cmocka_unit_test(test_decode_bad),
    cmocka_unit_test(test_valid),
    cmocka_unit_test(test_unknown_commands),
    cmocka_unit_test(test_bad_flags),
    cmocka_unit_test(test_write_payload_always_consumed),
    cmocka_unit_test(test_ranges),
    cmocka_unit_test(test_lengths),
    cmocka_unit_test(test_read_only),
    cmocka_unit_test(test_block_status_needs_negotiation),
    cmocka_unit_test(test_errno_map),
    cmocka_unit_test(test_cmd_name),
    cmocka_unit_test(test_option_header),
    cmocka_unit_test(test_go),
    cmocka_unit_test(test_go_long_name),
    cmocka_unit_test(test_meta),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
