/* libFuzzer: the peer link's message parser (svmd reads these from the network, after TLS but
 * before it knows who sent them). The input is a stream of messages as the server reads them:
 * header, then payload; every message that parses must survive build + parse unchanged. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "svm/peer/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct svm_peer_msg m, m2;
static char payload[SVM_PEER_MAX_PAYLOAD];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  while (size >= SVM_PEER_HDR_SIZE) {
    uint8_t type;
    uint32_t len;

    if (svm_peer_hdr_parse(data, &type, &len) < 0)
      return 0;
    data += SVM_PEER_HDR_SIZE;
    size -= SVM_PEER_HDR_SIZE;
    if (len > size)
      return 0;
    if (svm_peer_payload_parse(&m, (const char *)data, len) == 0) {
      /* What the server asks of a request: the lookups must be safe on anything parsed. */
      uint64_t v;
      m.type = type;
      (void)svm_peer_get(&m, "channel");
      (void)svm_peer_get_u64(&m, "bytes", &v);
      /* Rebuild it and parse the result: the same fields, in order. */
      svm_peer_msg_init(&m2, type);
      for (size_t i = 0; i < m.nfields; i++)
        if (svm_peer_msg_add(&m2, m.f[i].key, "%s", m.f[i].value) < 0)
          abort();
      size_t n = svm_peer_msg_payload(&m2, payload);
      if (n != len || memcmp(payload, data, n) != 0)
        abort();
      if (svm_peer_payload_parse(&m2, payload, n) < 0 || m2.nfields != m.nfields)
        abort();
    }
    data += len;
    size -= len;
  }
  return 0;
}
