#include <errno.h>
#include <stdio.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/hex.h"
#include "common/uuid.h"

void svm_uuid_new(uint8_t uuid[16])
{
  size_t got = 0;
  while (got < 16) {
    ssize_t r = getrandom(uuid + got, 16 - got, 0);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      uint64_t x = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)uuid;
      for (; got < 16; got++, x = x * 6364136223846793005ull + 1442695040888963407ull)
        uuid[got] = (uint8_t)(x >> 56);
      break;
    }
    got += (size_t)r;
  }
  uuid[6] = (uint8_t)((uuid[6] & 0x0f) | 0x40);    /* version 4 */
  uuid[8] = (uint8_t)((uuid[8] & 0x3f) | 0x80);    /* RFC 4122 variant */
}

void svm_uuid_format(const uint8_t u[16], char out[SVM_UUID_STRLEN + 1])
{
  snprintf(out, SVM_UUID_STRLEN + 1,
           "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
           u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
           u[15]);
}

int svm_uuid_parse(const char *s, uint8_t uuid[16])
{
  int n = 0;
  for (int i = 0; i < SVM_UUID_STRLEN; i++) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-')
        return -EINVAL;
      continue;
    }
    int hi = svm_hexval(s[i]);
    if (hi < 0)
      return -EINVAL;
    int lo = svm_hexval(s[++i]);
    if (lo < 0)
      return -EINVAL;
    uuid[n++] = (uint8_t)(hi << 4 | lo);
  }
  return 0;
}

void svm_uuid_generate(char out[SVM_UUID_STRLEN + 1])
{
  uint8_t u[16];
  svm_uuid_new(u);
  svm_uuid_format(u, out);
}
