/* CRC-32C (Castagnoli): the checksum of every .ctk header and page and of every NFC frame
 * (common/, because cbt/ and nfc/ are siblings that may not include each other). The SSE4.2
 * instruction is used when the CPU has it (a 4 KiB page in well under a microsecond, which
 * keeps the commit path and loading a 1 TiB tracker cheap); otherwise a slicing-by-8 table. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "common/crc32c.h"

static uint32_t tab[8][256];
static pthread_once_t tab_once = PTHREAD_ONCE_INIT;

static void tab_init(void)
{
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    tab[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++)
    for (int s = 1; s < 8; s++)
      tab[s][i] = (tab[s - 1][i] >> 8) ^ tab[0][tab[s - 1][i] & 0xff];
}

static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t len)
{
  pthread_once(&tab_once, tab_init);
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    w = __builtin_bswap64(w);
#endif
    w ^= crc;
    crc = tab[7][w & 0xff] ^ tab[6][(w >> 8) & 0xff] ^ tab[5][(w >> 16) & 0xff] ^
          tab[4][(w >> 24) & 0xff] ^ tab[3][(w >> 32) & 0xff] ^ tab[2][(w >> 40) & 0xff] ^
          tab[1][(w >> 48) & 0xff] ^ tab[0][w >> 56];
    p += 8;
    len -= 8;
  }
  while (len--)
    crc = (crc >> 8) ^ tab[0][(crc ^ *p++) & 0xff];
  return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const uint8_t *p,
                                                          size_t len)
{
  uint64_t c = crc;
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    c = __builtin_ia32_crc32di(c, w);
    p += 8;
    len -= 8;
  }
  crc = (uint32_t)c;
  while (len--)
    crc = __builtin_ia32_crc32qi(crc, *p++);
  return crc;
}
#endif

uint32_t svm_crc32c(uint32_t crc, const void *buf, size_t len)
{
  crc = ~crc;
#if defined(__x86_64__)
  static int have_hw = -1;
  int hw = __atomic_load_n(&have_hw, __ATOMIC_RELAXED);
  if (hw < 0) {
    hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    __atomic_store_n(&have_hw, hw, __ATOMIC_RELAXED);
  }
  if (hw)
    return ~crc_hw(crc, buf, len);
#endif
  return ~crc_sw(crc, buf, len);
}
