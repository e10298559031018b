/* The all-zero check runs on every byte a thin conversion reads, so it must go at memory speed.
 * Trick (as nbdkit's is_zero and QEMU's buffer_is_zero fallback): check the first 16 bytes by
 * hand; if they are zero, the buffer is all zero exactly when it equals itself shifted by 16,
 * which memcmp compares with the C library's vectorised code. It also stops at the first
 * non-zero byte, which is where data buffers usually stop. */
#include <stdint.h>
#include <string.h>

#include "svm/disk/zero.h"

enum { HEAD = 16 };

bool svm_is_zero(const void *buf, size_t len)
{
  const unsigned char *p = buf;
  size_t i, n = len < HEAD ? len : HEAD;

  for (i = 0; i < n; i++)
    if (p[i] != 0)
      return false;
  if (len <= HEAD)
    return true;
  return memcmp(p, p + HEAD, len - HEAD) == 0;
}

size_t svm_zero_span(const void *buf, size_t len, size_t block, bool want_zero)
{
  const unsigned char *p = buf;
  size_t off = 0;

  while (off < len) {
    size_t n = len - off < block ? len - off : block;
    if (svm_is_zero(p + off, n) != want_zero)
      break;
    off += n;
  }
  return off;
}
