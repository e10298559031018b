/* libFuzzer target for the NBD parser (svm/nbd/parse.c): whatever bytes a client sends,
 * decoding and validating requests and option payloads must neither crash nor read out of
 * bounds, and the validator's verdicts must hold together. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "svm/nbd/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct nbds_limits lim = { .max_len = NBD_MAX_REQUEST };
  struct nbds_request r;
  struct nbds_go go;
  struct nbds_meta m;
  uint32_t payload, opt, len;
  uint8_t *copy;

  /* The first bytes choose what was negotiated. */
  if (size >= 9) {
    lim.size = nbds_get64(data) >> (data[8] & 63);
    lim.read_only = data[8] & 64;
    lim.structured = data[8] & 128;
    lim.have_contexts = lim.structured && (data[0] & 1);
  }

  /* Requests: a stream of 28-byte headers. */
  for (size_t at = 0; at + NBD_REQUEST_SIZE <= size; at += NBD_REQUEST_SIZE) {
    if (nbds_decode_request(data + at, size - at, &r) < 0)
      continue;
    int err = nbds_check_request(&r, &lim, &payload);
    if (err == NBD_OK && r.type != NBD_CMD_FLUSH && r.type != NBD_CMD_DISC) {
      /* an accepted request lies inside the export and within the limits */
      if (r.length == 0 || r.offset > lim.size || r.length > lim.size - r.offset)
        abort();
      if ((r.type == NBD_CMD_READ || r.type == NBD_CMD_WRITE) && r.length > lim.max_len)
        abort();
    }
    if (r.type == NBD_CMD_WRITE && err >= 0 && payload != r.length)
      abort();
    if (r.type != NBD_CMD_WRITE && payload != 0)
      abort();
  }

  /* Options: the same bytes as a GO payload and as a META payload (in a buffer of exactly
   * `size` bytes, so that ASan catches any read past it). */
  copy = malloc(size ? size : 1);
  if (copy == NULL)
    return 0;
  memcpy(copy, data, size);
  (void)nbds_decode_option(copy, size, &opt, &len);
  if (nbds_parse_go(copy, (uint32_t)size, &go) == 0) {
    volatile uint32_t sink = 0;
    for (unsigned i = 0; i < go.ninfo; i++)
      sink += nbds_get16(go.info + 2 * i);
    (void)nbds_name_matches(go.name, go.namelen, "disk");
    (void)sink;
  }
  if (nbds_parse_meta(copy, (uint32_t)size, &m) == 0) {
    uint32_t pos = m.first;
    for (uint32_t i = 0; i < m.nqueries; i++) {
      const char *q;
      uint32_t ql;
      nbds_meta_next(copy, &pos, &q, &ql);
      if (ql > NBD_MAX_STRING || pos > size)
        abort();
      volatile char c = ql ? q[ql - 1] : 0;
      (void)c;
    }
    if (pos != size)
      abort();
  }
  free(copy);
  return 0;
}
