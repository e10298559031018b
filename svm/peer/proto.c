/* The peer link's messages: header check, payload parse and build (see proto.h). Nothing here
 * does I/O, so the fuzzer (tests/fuzz/fuzz-peer.c) reaches all of it. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "svm/peer/proto.h"

static const char *const type_names[] = {
  [SVM_PEER_HELLO] = "HELLO", [SVM_PEER_PREPARE] = "PREPARE", [SVM_PEER_COMMIT] = "COMMIT",
  [SVM_PEER_ABORT] = "ABORT", [SVM_PEER_OK] = "OK",           [SVM_PEER_ERROR] = "ERROR",
  [SVM_PEER_STATUS] = "STATUS",
  [SVM_PEER_INFO] = "INFO",
};

const char *svm_peer_type_name(unsigned type)
{
  return type >= 1 && type <= SVM_PEER_TYPE_MAX ? type_names[type] : "unknown";
}

static uint32_t get_be32(const uint8_t *p)
{
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

int svm_peer_hdr_parse(const uint8_t *hdr, uint8_t *type, uint32_t *len)
{
  uint32_t magic = get_be32(hdr);

  if (magic != SVM_PEER_MAGIC)
    return svm_error(EPROTO, "not a peer link message (magic 0x%08" PRIx32 ")", magic);
  if (hdr[4] != SVM_PEER_VERSION)
    return svm_error(EPROTONOSUPPORT, "peer link version %u, this svmd speaks %u", hdr[4],
                     SVM_PEER_VERSION);
  if (hdr[5] < 1 || hdr[5] > SVM_PEER_TYPE_MAX)
    return svm_error(EPROTO, "unknown peer link message type %u", hdr[5]);
  if (hdr[6] || hdr[7])
    return svm_error(EPROTO, "peer link message with unknown flags 0x%02x%02x", hdr[6], hdr[7]);
  *len = get_be32(hdr + 8);
  if (*len > SVM_PEER_MAX_PAYLOAD)
    return svm_error(EMSGSIZE, "peer link %s of %" PRIu32 " bytes (at most %d)",
                     svm_peer_type_name(hdr[5]), *len, SVM_PEER_MAX_PAYLOAD);
  *type = hdr[5];
  return 0;
}

void svm_peer_hdr_format(uint8_t *hdr, uint8_t type, uint32_t len)
{
  put_be32(hdr, SVM_PEER_MAGIC);
  hdr[4] = SVM_PEER_VERSION;
  hdr[5] = type;
  hdr[6] = hdr[7] = 0;
  put_be32(hdr + 8, len);
}

static bool key_char(char c)
{
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

int svm_peer_payload_parse(struct svm_peer_msg *m, const char *p, size_t len)
{
  size_t pos = 0;

  m->nfields = 0;
  m->used = 0;
  if (len > SVM_PEER_MAX_PAYLOAD)
    return svm_error(EPROTO, "peer link payload of %zu bytes (at most %d)", len,
                     SVM_PEER_MAX_PAYLOAD);
  memcpy(m->buf, p, len);
  m->used = len;
  while (pos < len) {
    char *line = m->buf + pos;
    char *nl = memchr(line, '\n', len - pos);
    char *eq;
    size_t klen, vlen;

    if (!nl)
      return svm_error(EPROTO, "peer link field without its newline");
    *nl = '\0';
    if (memchr(line, '\0', (size_t)(nl - line)))
      return svm_error(EPROTO, "peer link field with a NUL byte");
    eq = strchr(line, '=');
    if (!eq)
      return svm_error(EPROTO, "peer link field without '='");
    klen = (size_t)(eq - line);
    vlen = (size_t)(nl - eq - 1);
    if (klen == 0 || klen > SVM_PEER_MAX_KEY)
      return svm_error(EPROTO, "peer link key of %zu bytes (1 to %d)", klen, SVM_PEER_MAX_KEY);
    for (size_t i = 0; i < klen; i++)
      if (!key_char(line[i]))
        return svm_error(EPROTO, "peer link key with a character outside [a-z0-9-]");
    if (vlen > SVM_PEER_MAX_VALUE)
      return svm_error(EPROTO, "peer link value of %zu bytes (at most %d)", vlen,
                       SVM_PEER_MAX_VALUE);
    if (m->nfields == SVM_PEER_MAX_FIELDS)
      return svm_error(EPROTO, "peer link message with more than %d fields",
                       SVM_PEER_MAX_FIELDS);
    *eq = '\0';
    m->f[m->nfields].key = line;
    m->f[m->nfields].value = eq + 1;
    m->nfields++;
    pos = (size_t)(nl - m->buf) + 1;
  }
  return 0;
}

void svm_peer_msg_init(struct svm_peer_msg *m, uint8_t type)
{
  m->type = type;
  m->nfields = 0;
  m->used = 0;
}

int svm_peer_msg_add(struct svm_peer_msg *m, const char *key, const char *fmt, ...)
{
  char value[SVM_PEER_MAX_VALUE + 1];
  size_t klen = strlen(key), vlen;
  va_list ap;
  char *k, *v;

  va_start(ap, fmt);
  vsnprintf(value, sizeof value, fmt, ap);
  va_end(ap);
  vlen = strlen(value);
  for (size_t i = 0; i < vlen; i++)
    if (value[i] == '\n')
      value[i] = ' ';
  /* key=value\n as the payload will hold it: klen + 1 + vlen + 1 */
  if (klen == 0 || klen > SVM_PEER_MAX_KEY || m->nfields == SVM_PEER_MAX_FIELDS ||
      m->used + klen + vlen + 2 > SVM_PEER_MAX_PAYLOAD)
    return svm_error(EMSGSIZE, "peer link %s: too much to say (%s)",
                     svm_peer_type_name(m->type), key);
  k = m->buf + m->used;
  memcpy(k, key, klen + 1);
  v = k + klen + 1;
  memcpy(v, value, vlen + 1);
  m->used += klen + vlen + 2;
  m->f[m->nfields].key = k;
  m->f[m->nfields].value = v;
  m->nfields++;
  return 0;
}

size_t svm_peer_msg_payload(const struct svm_peer_msg *m, char *out)
{
  size_t n = 0;

  for (size_t i = 0; i < m->nfields; i++)
    n += (size_t)sprintf(out + n, "%s=%s\n", m->f[i].key, m->f[i].value);
  return n;
}

const char *svm_peer_get(const struct svm_peer_msg *m, const char *key)
{
  for (size_t i = 0; i < m->nfields; i++)
    if (strcmp(m->f[i].key, key) == 0)
      return m->f[i].value;
  return NULL;
}

int svm_peer_get_u64(const struct svm_peer_msg *m, const char *key, uint64_t *out)
{
  const char *v = svm_peer_get(m, key);
  char *end;

  if (!v)
    return svm_error(ENOENT, "peer link %s without %s", svm_peer_type_name(m->type), key);
  if (*v < '0' || *v > '9')
    return svm_error(EINVAL, "peer link %s: %s is not a number", svm_peer_type_name(m->type),
                     key);
  errno = 0;
  *out = strtoull(v, &end, 10);
  if (errno || *end)
    return svm_error(EINVAL, "peer link %s: %s is not a number", svm_peer_type_name(m->type),
                     key);
  return 0;
}
