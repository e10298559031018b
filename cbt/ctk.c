/* The .ctk file: on-disk format of a changed-block tracker.
 *
 * FORMAT (version 3, all integers little-endian, the file is a whole number of 4 KiB pages)
 *
 *   offset 0      header slot 0  (4 KiB)
 *   offset 4096   header slot 1  (4 KiB)
 *   offset 8192   activity-log ring: 4 slots of 8 KiB
 *   offset 40960  data page 0 copy A, data page 0 copy B, data page 1 copy A, ...
 *   size          40960 + 2 * npages * 4096, npages = ceil(nblocks / 2032)
 * Every byte is written when the file is made (fallocate, then every copy of every page and
 * an empty log entry), so that no later write needs new space: a full datastore cannot stop
 * tracking, and a copy that reads as zeros is damage, not "never written".
 *
 * Header slot (bytes 0..511 used, the rest zero):
 *     0  magic "SVM-CTK\n"         8  u32 version (3)        12 u32 header length (512)
 *    16  u64 generation           24  uuid[16]              40  previous uuid[16] (0: none)
 *    56  SHA-256 of disk id[32]   88  disk id text[96] (truncated, NUL padded, for messages)
 *   184  u32 granularity         188  u32 epochs per page (2032)
 *   192  u64 disk size           200  u64 blocks = ceil(disk size / granularity)
 *   208  u64 base                216  u64 floor (oldest answerable sequence)
 *   224  u32 current local epoch 228  u32 log2 of the log extent (22 = 4 MiB; 0 in v1)
 *   232  reason text[192]: why the previous uuid was abandoned
 *   508  u32 CRC-32C of bytes 0..507
 * A header update writes the slot (generation & 1) with generation + 1 and fdatasyncs; the
 * valid slot with the higher generation wins, so a torn header write leaves the previous one.
 *
 * Data page copy (4 KiB): u32 CRC-32C of bytes 4..4095, u32 magic "CTKP", u64 page index,
 * u64 sequence, u64 first 8 bytes of the uuid, then 2032 u16 local epochs of consecutive
 * blocks (0 = never written). A page is rewritten into the copy that is not its newest valid
 * one, with sequence + 1. Pages are written LAZILY (tracker.c): the epochs in memory are
 * exact, the file catches up in the background, and the activity log covers the difference.
 *
 * Activity-log entry (8 KiB, slot = sequence % 4): 16 sectors of 512 bytes, each checked on
 * its own: u32 CRC-32C of the sector's bytes 4..511, u32 magic "CTKL", u64 sequence, u64
 * first 8 bytes of the uuid, u8 sector index, u16 count (<= 1920, the entry's), u8 zero, u32
 * the open epoch when written (informative), then 120 u32 extent numbers (extent = 4 MiB of
 * disk): entry extent i is in sector i / 120. Why 1920: a guest writing all over a disk
 * larger than the log's reach evicts an extent on about every (1 - reach/size)-th first
 * write, each eviction a log write and an fdatasync that the guest's write waits for; with
 * 960 extents a 4 GiB disk under 4 KiB random writes synced on 6% of them, which set the
 * guest's p99 (0.59 ms against 0.2 ms with the disk inside the log, bench/migrate.sh).
 * 7.5 GiB of reach keeps a hot set of that size in the log; the price is the bound below.
 * The newest valid entry lists every extent in which a block may be marked in memory but not
 * yet in its data page. An extent enters the log (entry written and fdatasync'd) before a
 * write into it is acknowledged, and leaves it only after its data pages are durable. A torn
 * entry (every sector whole or zero, but of two entries: a write that never completed, so no
 * write waited on it was acknowledged) is skipped and the previous one in the ring holds. A
 * damaged slot (a sector neither whole nor zero) that may have held the newest entry means the
 * hot set is unknown, so every block of the disk counts as changed (never a miss); a damaged
 * slot of an older entry is only logged.
 *
 * RECOVERY (every open): the newest copy of each page is loaded; then every block of every
 * logged extent is put in the open epoch, so every acknowledged write since any change ID is
 * reported; the over-report is what the log holds, at most 1920 extents of 4 MiB. Untrusted
 * pages: a copy that is invalid or all zero while its twin is valid may be a torn lazy write
 * or damage at rest, and the file cannot tell which copy was the newest, so every block the
 * page covers counts as changed in the open epoch (and the open says so); the same when both
 * copies are bad. At most CTK_PAGES_INFLIGHT (8) pages are written between two fdatasyncs, so a
 * crash tears at most 8 pages: the whole bound after a crash is
 *     1920 x 4 MiB  +  8 x 2032 x granularity     (7.5 GiB + 0.99 GiB at 64 KiB).
 * A clean close writes every dirty page and an empty log entry: nothing is over-reported.
 *
 * VERSION 2 (log entries of 4 KiB: 8 sectors, at most 960 extents; data at offset 24576) and
 * VERSION 1 (before the activity log: marks were written synchronously, no log ring, data at
 * offset 8192, pages never written left as holes; read with the same page rules, except
 * that an all-zero pair is a page never written) are loaded as they are, their log applied,
 * and upgraded in place at the first open: a complete version-3 file is written beside it
 * from the loaded epochs and renamed over it; uuid and change IDs stay.
 *
 * EPOCHS AND CHANGE IDS. A block's local epoch e means "last written in the epoch whose
 * change ID sequence is base + e". The open epoch is cur; cbt_changeid() returns base + cur
 * and increments cur. query(since s) reports blocks with e > s - base. When cur would pass
 * the 16-bit limit (65534), the epochs are compacted: the oldest half collapse into epoch 1
 * ("at or before"), base moves up, and floor, the oldest sequence that can still be answered
 * exactly, moves with it; older change IDs are then refused (-ESTALE), never answered wrongly.
 * Compaction, resize and reset write a complete new file and rename it over the old one.
 *
 * COST MODEL (1 TiB disk, 64 KiB granularity = 16 Mi blocks):
 *   memory: 2 bytes per block = 32 MiB per TiB, nothing per epoch (anonymous mapping:
 *           regions never written, when loaded from a file, cost no RSS); the log's index
 *           2 bytes per 4 MiB extent (0.5 MiB per TiB), 1 dirty byte per page (8 KiB per TiB).
 *   mark, block already in the open epoch: one atomic load and compare per block, no lock.
 *   mark, first in the epoch, extent in the log (the usual case): a mutex, a store, a
 *           dirty bit; no I/O. Extent not in the log: one 8 KiB log write + fdatasync,
 *           shared by concurrent callers (group commit), beside the data write (track.c);
 *           when the log is full, the least recently used extents (up to 4 per entry) leave
 *           it first: their dirty pages written + one fdatasync before the entry.
 *   page writer: nothing while the hot set has room; once it is 3/4 full, the dirty pages of
 *           the least recently used extents, in batches of 8 + one fdatasync.
 *   changeid: one 4 KiB header write + fdatasync (a full rewrite every 32767 change IDs).
 *   query: a SIMD scan of the epoch array, 8 blocks per compare (32 MiB per TiB, a few ms).
 *   file: 64 MiB per TiB (two copies of every page), allocated and written at creation.
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cbt/internal.h"
#include "common/error.h"
#include "common/hex.h"

static const char ctk_magic[8] = { 'S', 'V', 'M', '-', 'C', 'T', 'K', '\n' };
#define PAGE_MAGIC 0x504b5443u               /* "CTKP" */
#define AL_MAGIC 0x4c4b5443u                 /* "CTKL" */
#define HDR_LEN 512u
#define HDR_CRC_OFF 508u

static void put32(uint8_t *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const uint8_t *p)
{
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}
static uint64_t get64(const uint8_t *p)
{
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

uint64_t ctk_npages(uint64_t nblocks)
{
  return (nblocks + CTK_BPP - 1) / CTK_BPP;
}

unsigned ctk_al_pages(uint32_t version)
{
  return version == 1 ? 0 : version == 2 ? 1 : CTK_AL_PAGES;
}

static uint64_t data_off(uint32_t version)
{
  return (2u + CTK_AL_SLOTS * (uint64_t)ctk_al_pages(version)) * CTK_PAGE;
}

uint64_t ctk_file_size_v(uint32_t version, uint64_t nblocks)
{
  return data_off(version) + 2 * ctk_npages(nblocks) * CTK_PAGE;
}

uint64_t ctk_file_size(uint64_t nblocks)
{
  return ctk_file_size_v(CTK_VERSION, nblocks);
}

unsigned ctk_al_shift(uint64_t disk_size)
{
  unsigned s = CTK_AL_SHIFT_MIN;
  while (((disk_size - 1) >> s) >= UINT32_MAX)
    s++;
  return s;
}

void ctk_image_free(struct ctk_image *img)
{
  if (img->ep)
    munmap(img->ep, (size_t)img->h.nblocks * 2);
  free(img->dirty);
  free(img->al);
  img->ep = NULL;
  img->dirty = NULL;
  img->al = NULL;
}

void ctk_disk_hash(const char *disk_id, uint8_t out[32])
{
  unsigned int len = 32;
  if (!EVP_Digest(disk_id, strlen(disk_id), out, &len, EVP_sha256(), NULL)) {
    /* OpenSSL without SHA-256 is not a real configuration; fall back to a CRC spread. */
    memset(out, 0, 32);
    for (int i = 0; i < 8; i++)
      put32(out + 4 * i, svm_crc32c((uint32_t)i, disk_id, strlen(disk_id)));
  }
}

void ctk_encode_header(const struct ctk_header *h, uint8_t page[CTK_PAGE])
{
  memset(page, 0, CTK_PAGE);
  memcpy(page, ctk_magic, 8);
  put32(page + 8, h->version);
  put32(page + 12, HDR_LEN);
  put64(page + 16, h->gen);
  memcpy(page + 24, h->uuid, 16);
  memcpy(page + 40, h->prev_uuid, 16);
  memcpy(page + 56, h->disk_hash, 32);
  memcpy(page + 88, h->disk_id, strnlen(h->disk_id, 95));
  put32(page + 184, h->granularity);
  put32(page + 188, CTK_BPP);
  put64(page + 192, h->disk_size);
  put64(page + 200, h->nblocks);
  put64(page + 208, h->base);
  put64(page + 216, h->floor);
  put32(page + 224, h->cur);
  put32(page + 228, h->al_shift);
  memcpy(page + 232, h->reason, strnlen(h->reason, CTK_REASON_MAX - 1));
  put32(page + HDR_CRC_OFF, svm_crc32c(0, page, HDR_CRC_OFF));
}

enum hdr_state { HDR_OK, HDR_NOMAGIC, HDR_VERSION, HDR_CRC, HDR_INSANE };

static enum hdr_state decode_header(const uint8_t *p, struct ctk_header *h, char *why,
                                    size_t whylen)
{
  memset(h, 0, sizeof *h);
  if (memcmp(p, ctk_magic, 8) != 0)
    return HDR_NOMAGIC;
  h->version = get32(p + 8);
  if (h->version < 1 || h->version > CTK_VERSION) {
    snprintf(why, whylen, "unknown .ctk version %" PRIu32 " (this svmotion reads versions 1 "
             "to %d: a newer svmotion wrote it)", h->version, CTK_VERSION);
    return HDR_VERSION;
  }
  if (get32(p + 12) != HDR_LEN || get32(p + HDR_CRC_OFF) != svm_crc32c(0, p, HDR_CRC_OFF)) {
    snprintf(why, whylen, "header checksum mismatch");
    return HDR_CRC;
  }
  h->gen = get64(p + 16);
  memcpy(h->uuid, p + 24, 16);
  memcpy(h->prev_uuid, p + 40, 16);
  memcpy(h->disk_hash, p + 56, 32);
  memcpy(h->disk_id, p + 88, 95);
  h->disk_id[95] = '\0';
  h->granularity = get32(p + 184);
  uint32_t bpp = get32(p + 188);
  h->disk_size = get64(p + 192);
  h->nblocks = get64(p + 200);
  h->base = get64(p + 208);
  h->floor = get64(p + 216);
  h->cur = get32(p + 224);
  h->al_shift = get32(p + 228);
  memcpy(h->reason, p + 232, CTK_REASON_MAX - 1);
  h->reason[CTK_REASON_MAX - 1] = '\0';

  uint32_t g = h->granularity;
  if (g < CBT_GRANULARITY_MIN || g > CBT_GRANULARITY_MAX || (g & (g - 1)))
    snprintf(why, whylen, "header has an invalid granularity %" PRIu32, g);
  else if (bpp != CTK_BPP)
    snprintf(why, whylen, "header has %" PRIu32 " epochs per page, expected %u", bpp, CTK_BPP);
  else if (h->disk_size == 0 || h->disk_size > (UINT64_C(1) << 56) ||
           h->nblocks != (h->disk_size + g - 1) / g)
    snprintf(why, whylen, "header has an inconsistent disk size %" PRIu64 " / %" PRIu64
             " blocks", h->disk_size, h->nblocks);
  else if (h->version == 1 ? h->al_shift != 0 : h->al_shift != ctk_al_shift(h->disk_size))
    snprintf(why, whylen, "header has an invalid log extent size 2^%" PRIu32, h->al_shift);
  else if (h->cur < 1 || h->cur > CTK_EPOCH_LIMIT || h->base > UINT64_MAX / 2 ||
           h->floor > h->base + h->cur)
    snprintf(why, whylen, "header has inconsistent epochs (base %" PRIu64 ", current %" PRIu32
             ", floor %" PRIu64 ")", h->base, h->cur, h->floor);
  else {
    if (h->version == 1)
      h->al_shift = ctk_al_shift(h->disk_size);
    return HDR_OK;
  }
  return HDR_INSANE;
}

void ctk_encode_page(const struct ctk_header *h, uint64_t pno, uint64_t seq, const uint16_t *ep,
                     size_t count, uint8_t page[CTK_PAGE])
{
  memset(page, 0, CTK_PAGE_HDR);
  put32(page + 4, PAGE_MAGIC);
  put64(page + 8, pno);
  put64(page + 16, seq);
  memcpy(page + 24, h->uuid, 8);
  uint8_t *d = page + CTK_PAGE_HDR;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  memcpy(d, ep, count * 2);
#else
  for (size_t i = 0; i < count; i++) {
    d[2 * i] = (uint8_t)ep[i];
    d[2 * i + 1] = (uint8_t)(ep[i] >> 8);
  }
#endif
  memset(d + count * 2, 0, (CTK_BPP - count) * 2);
  put32(page, svm_crc32c(0, page + 4, CTK_PAGE - 4));
}

static bool all_zero(const uint8_t *p, size_t n)
{
  uint64_t acc = 0;
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    acc |= w;
  }
  return acc == 0;
}

int ctk_check_page(const struct ctk_header *h, uint64_t pno, const uint8_t page[CTK_PAGE],
                   uint64_t *seq)
{
  if (get32(page + 4) == PAGE_MAGIC && get64(page + 8) == pno &&
      memcmp(page + 24, h->uuid, 8) == 0 &&
      get32(page) == svm_crc32c(0, page + 4, CTK_PAGE - 4)) {
    *seq = get64(page + 16);
    return *seq > 0 ? 1 : -1;
  }
  if (all_zero(page, CTK_PAGE)) {
    *seq = 0;
    return 0;
  }
  return -1;
}

void ctk_encode_al(const struct ctk_header *h, uint64_t seq, const uint32_t *al, size_t n,
                   uint8_t *entry)
{
  unsigned nsec = ctk_al_pages(h->version) * (CTK_PAGE / CTK_AL_SECTOR);
  memset(entry, 0, (size_t)nsec * CTK_AL_SECTOR);
  for (unsigned k = 0; k < nsec; k++) {
    uint8_t *sec = entry + k * CTK_AL_SECTOR;
    put32(sec + 4, AL_MAGIC);
    put64(sec + 8, seq);
    memcpy(sec + 16, h->uuid, 8);
    sec[24] = (uint8_t)k;
    sec[25] = (uint8_t)(n & 0xff);
    sec[26] = (uint8_t)(n >> 8);
    put32(sec + 28, h->cur);
    for (size_t i = 0; i < CTK_AL_PER_SECTOR && k * CTK_AL_PER_SECTOR + i < n; i++)
      put32(sec + CTK_AL_SECTOR_HDR + 4 * i, al[k * CTK_AL_PER_SECTOR + i]);
    put32(sec, svm_crc32c(0, sec + 4, CTK_AL_SECTOR - 4));
  }
}

/* One log slot: 1 a whole entry (seq, count out), 0 unused or torn (every sector zero or
 * whole, of different entries: a write that never completed), -1 damaged (a sector neither
 * whole nor zero: not what a torn write leaves). */
static int check_al(const struct ctk_header *h, const uint8_t *page, uint64_t nextents,
                    uint64_t *seq, size_t *n)
{
  enum { NSEC_MAX = CTK_AL_ENTRY / CTK_AL_SECTOR };
  unsigned nsec = ctk_al_pages(h->version) * (CTK_PAGE / CTK_AL_SECTOR);
  uint64_t sq[NSEC_MAX];
  size_t cnt[NSEC_MAX];
  bool entry = true;
  for (unsigned k = 0; k < nsec; k++) {
    const uint8_t *sec = page + k * CTK_AL_SECTOR;
    cnt[k] = (size_t)sec[25] | (size_t)sec[26] << 8;
    sq[k] = get64(sec + 8);
    if (get32(sec + 4) == AL_MAGIC && memcmp(sec + 16, h->uuid, 8) == 0 && sec[24] == k &&
        cnt[k] <= nsec * CTK_AL_PER_SECTOR && sq[k] > 0 &&
        get32(sec) == svm_crc32c(0, sec + 4, CTK_AL_SECTOR - 4)) {
      entry &= sq[k] == sq[0] && cnt[k] == cnt[0];
      continue;
    }
    if (!all_zero(sec, CTK_AL_SECTOR))
      return -1;
    entry = false;
  }
  if (!entry)
    return 0;
  for (size_t i = 0; i < cnt[0]; i++)
    if (get32(page + (i / CTK_AL_PER_SECTOR) * CTK_AL_SECTOR + CTK_AL_SECTOR_HDR +
              4 * (i % CTK_AL_PER_SECTOR)) >= nextents)
      return -1;
  *seq = sq[0];
  *n = cnt[0];
  return 1;
}

static int src_read(const struct ctk_src *src, uint64_t off, void *buf, size_t len)
{
  if (off > src->size || len > src->size - off)
    return svm_error(EIO, "read past the end");
  if (src->fd < 0) {
    memcpy(buf, src->buf + off, len);
    return 0;
  }
  size_t done = 0;
  while (done < len) {
    ssize_t r = pread(src->fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return svm_error(errno, "read: %s", strerror(errno));
    if (r == 0)
      return svm_error(EIO, "file shrank while being read");
    done += (size_t)r;
  }
  return 0;
}

static int load_header(const struct ctk_src *src, struct ctk_image *img)
{
  uint8_t slot[2][CTK_PAGE];
  struct ctk_header h[2];
  enum hdr_state st[2];
  char why[2][256] = { "", "" };
  int nslots = 0;

  for (int i = 0; i < 2; i++) {
    if (src->size < (uint64_t)(i + 1) * CTK_PAGE)
      break;
    int r = src_read(src, (uint64_t)i * CTK_PAGE, slot[i], CTK_PAGE);
    if (r < 0)
      return r;
    st[i] = decode_header(slot[i], &h[i], why[i], sizeof why[i]);
    nslots++;
  }
  for (int i = 0; i < nslots; i++)
    if (st[i] == HDR_VERSION)
      return svm_error(EPROTO, "%s", why[i]);
  int best = -1;
  for (int i = 0; i < nslots; i++)
    if (st[i] == HDR_OK && (best < 0 || h[i].gen > h[best].gen))
      best = i;
  if (best < 0) {
    if (nslots == 0)
      return svm_error(EINVAL, "truncated: %" PRIu64 " bytes, not even a header", src->size);
    bool magic = false;
    for (int i = 0; i < nslots; i++)
      magic |= st[i] != HDR_NOMAGIC;
    if (!magic)
      return svm_error(EINVAL, "not a .ctk file (no SVM-CTK magic)");
    return svm_error(EINVAL, "%s", why[st[0] != HDR_NOMAGIC ? 0 : 1]);
  }
  img->h = h[best];
  img->hdr_ok = true;
  return 0;
}

static void add_note(struct ctk_image *img, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));
static void add_note(struct ctk_image *img, const char *fmt, ...)
{
  size_t l = strlen(img->note);
  if (l + 4 >= sizeof img->note)
    return;
  if (l)
    img->note[l++] = ';', img->note[l++] = ' ', img->note[l] = '\0';
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(img->note + l, sizeof img->note - l, fmt, ap);
  va_end(ap);
}

/* The newest whole activity-log entry (versions 2 and 3). A damaged slot that may have held
 * the newest entry (the one after the newest whole one, or when none is whole) means the
 * hot set is unknown: every block counts as changed (al_damaged). */
static int load_al(const struct ctk_src *src, struct ctk_image *img, uint8_t *buf)
{
  const struct ctk_header *h = &img->h;
  uint64_t nextents = ((h->disk_size - 1) >> h->al_shift) + 1, seq = 0, best_seq = 0;
  size_t n = 0, best_n = 0, slot = (size_t)ctk_al_pages(h->version) * CTK_PAGE;
  int best = -1, v[CTK_AL_SLOTS], r = src_read(src, CTK_AL_OFF, buf, CTK_AL_SLOTS * slot);
  if (r < 0)
    return r;
  unsigned bad = 0, torn = 0;
  for (unsigned i = 0; i < CTK_AL_SLOTS; i++) {
    v[i] = check_al(h, buf + i * slot, nextents, &seq, &n);
    bad += v[i] < 0;
    if (v[i] > 0 && seq > best_seq) {
      best = (int)i;
      best_seq = seq;
      best_n = n;
    }
  }
  for (unsigned i = 0; i < CTK_AL_SLOTS; i++)
    torn += v[i] == 0 && !all_zero(buf + i * slot, slot);
  if (bad && (best < 0 || v[(best + 1) % CTK_AL_SLOTS] < 0))
    img->al_damaged = true;
  if (bad)
    add_note(img, "%u activity-log slot%s damaged%s", bad, bad > 1 ? "s" : "",
             img->al_damaged ? ", maybe the newest entry: every block counted as changed"
                             : " (older entries only)");
  else if (torn)
    add_note(img, "a torn activity-log entry (its write never completed): entry %" PRIu64
             " used", best_seq);
  img->al = malloc((best_n ? best_n : 1) * sizeof *img->al);
  if (!img->al)
    return svm_error(ENOMEM, "no memory");
  for (size_t i = 0; i < best_n; i++)
    img->al[i] = get32(buf + best * slot + (i / CTK_AL_PER_SECTOR) * CTK_AL_SECTOR +
                       CTK_AL_SECTOR_HDR + 4 * (i % CTK_AL_PER_SECTOR));
  img->al_n = best_n;
  img->al_seq = best_seq;
  return 0;
}

static void mark_page_changed(struct ctk_image *img, uint64_t pno, uint64_t b0, uint64_t cnt)
{
  for (uint64_t i = 0; i < cnt; i++)
    img->ep[b0 + i] = (uint16_t)img->h.cur;
  img->dirty[pno] = 1;
  img->bad_pages++;
}

int ctk_load(const struct ctk_src *src, struct ctk_image *img)
{
  memset(img, 0, sizeof *img);
  int r = load_header(src, img);
  if (r < 0)
    return r;
  const struct ctk_header *h = &img->h;
  bool v1 = h->version == 1;
  uint64_t want = ctk_file_size_v(h->version, h->nblocks);
  if (src->size < want)
    return svm_error(EINVAL, "truncated: %" PRIu64 " bytes, the header implies %" PRIu64,
                     src->size, want);
  if (src->size > want)
    return svm_error(EINVAL, "wrong file size: %" PRIu64 " bytes, the header implies %" PRIu64,
                     src->size, want);

  size_t bytes = (size_t)h->nblocks * 2;
  uint64_t npages = ctk_npages(h->nblocks);
  enum { CHUNK = 32 };                        /* pages read per pread */
  uint8_t *buf = malloc(CHUNK * 2 * CTK_PAGE);
  uint16_t *ep = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  img->dirty = calloc(npages, 1);
  if (ep == MAP_FAILED || !buf || !img->dirty) {
    if (ep != MAP_FAILED)
      munmap(ep, bytes);
    free(buf);
    free(img->dirty);
    img->dirty = NULL;
    return svm_error(ENOMEM, "no memory for %" PRIu64 " blocks", h->nblocks);
  }
  img->ep = ep;
  if (!v1)
    r = load_al(src, img, buf);
  uint64_t doff = data_off(h->version), first_bad = UINT64_MAX;
  for (uint64_t p0 = 0; p0 < npages && r == 0; p0 += CHUNK) {
    uint64_t n = npages - p0 < CHUNK ? npages - p0 : CHUNK;
    r = src_read(src, doff + p0 * 2 * CTK_PAGE, buf, (size_t)n * 2 * CTK_PAGE);
    for (uint64_t k = 0; k < n && r == 0; k++) {
      uint64_t pno = p0 + k, seq[2];
      const uint8_t *cp[2] = { buf + k * 2 * CTK_PAGE, buf + (k * 2 + 1) * CTK_PAGE };
      int v0 = ctk_check_page(h, pno, cp[0], &seq[0]);
      int v1c = ctk_check_page(h, pno, cp[1], &seq[1]);
      uint64_t b0 = pno * CTK_BPP, cnt = ctk_page_nblocks(h->nblocks, pno);
      if (v1 && v0 == 0 && v1c == 0)
        continue;                             /* version 1: never written */
      if (v1 && v0 >= 0 && v1c >= 0 && v0 + v1c == 1)
        v0 = v1c = 1;                         /* version 1: written once, its twin a hole
                                               * (sequence 0, so the written one is picked) */
      if (v0 <= 0 || v1c <= 0) {
        /* A torn lazy write or damage at rest: the file cannot tell which copy was newer. */
        if (first_bad == UINT64_MAX)
          first_bad = pno;
        mark_page_changed(img, pno, b0, cnt);
        continue;
      }
      int pick = seq[1] > seq[0] ? 1 : 0;
      const uint8_t *d = cp[pick] + CTK_PAGE_HDR;
      for (uint64_t i = 0; i < cnt; i++) {
        uint16_t e = get16(d + 2 * i);
        if (e > h->cur) {
          r = svm_error(EIO, "block %" PRIu64 " has epoch %u, past the current epoch %" PRIu32,
                        b0 + i, e, h->cur);
          break;
        }
        if (e)
          ep[b0 + i] = e;
      }
      /* Padding past the last block must be zero: anything else is damage. */
      for (uint64_t i = cnt; i < CTK_BPP && r == 0; i++)
        if (get16(d + 2 * i))
          r = svm_error(EIO, "page %" PRIu64 ": data past the last block", pno);
    }
  }
  free(buf);
  if (r < 0) {
    ctk_image_free(img);
    return r;
  }
  if (img->bad_pages)
    add_note(img, "%" PRIu64 " data page%s with a damaged or torn copy (first: page %" PRIu64
             ", blocks %" PRIu64 "-%" PRIu64 "): every block %s cover%s counted as changed",
             img->bad_pages, img->bad_pages > 1 ? "s" : "", first_bad, first_bad * CTK_BPP,
             (first_bad + 1) * CTK_BPP - 1 < h->nblocks ? (first_bad + 1) * CTK_BPP - 1
                                                          : h->nblocks - 1,
             img->bad_pages > 1 ? "they" : "it", img->bad_pages > 1 ? "" : "s");
  if (img->al_damaged) {
    for (uint64_t b = 0; b < h->nblocks; b++)
      if (ep[b] != h->cur) {
        ep[b] = (uint16_t)h->cur;
        img->al_marked++;
        img->dirty[b / CTK_BPP] = 1;
      }
  }
  /* The activity log: its extents' blocks may be newer in the last process's memory. */
  unsigned per = h->al_shift - (unsigned)__builtin_ctz(h->granularity);
  for (size_t i = 0; i < img->al_n; i++) {
    uint64_t b0 = (uint64_t)img->al[i] << per, b1 = b0 + (UINT64_C(1) << per);
    if (b1 > h->nblocks)
      b1 = h->nblocks;
    for (uint64_t b = b0; b < b1; b++) {
      if (ep[b] != h->cur) {
        ep[b] = (uint16_t)h->cur;
        img->al_marked++;
        img->dirty[b / CTK_BPP] = 1;
      }
    }
  }
  return 0;
}

static int fsync_dir(const char *path)
{
  char *copy = strdup(path);
  if (!copy)
    return svm_error(ENOMEM, "no memory");
  int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int r = 0;
  if (dfd < 0 || fsync(dfd) < 0)
    r = svm_error(errno, "%s: syncing the directory: %s", path, strerror(errno));
  if (dfd >= 0)
    close(dfd);
  free(copy);
  return r;
}

static int write_all(int fd, const void *buf, size_t len, uint64_t off)
{
  size_t done = 0;
  while (done < len) {
    ssize_t w = pwrite(fd, (const uint8_t *)buf + done, len - done, (off_t)(off + done));
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0)
      return -errno;
    done += (size_t)w;
  }
  return 0;
}

int ctk_write_new(const char *path, const struct ctk_header *h, const uint16_t *ep,
                  uint16_t (*map)(uint16_t e, const void *arg), const void *arg,
                  const uint32_t *al, size_t al_n)
{
  enum { CHUNK = 64 };                        /* pages per write */
  size_t plen = strlen(path);
  char *tmp = malloc(plen + 16);
  uint8_t *buf = malloc(CHUNK * 2 * CTK_PAGE);
  uint16_t *vals = malloc(CTK_BPP * 2);
  uint64_t size = ctk_file_size(h->nblocks);
  int fd = -1, r;

  if (!tmp || !buf || !vals) {
    r = svm_error(ENOMEM, "no memory");
    goto out;
  }
  snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
  fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0) {
    r = svm_error(errno, "%s: cannot create %s: %s", path, tmp, strerror(errno));
    tmp[0] = '\0';
    goto out;
  }
  if (fchmod(fd, 0600) < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0) {
    r = svm_error(errno, "%s: %s", tmp, strerror(errno));
    goto out;
  }
  /* Every byte allocated now: a mark never needs new space later. */
  r = posix_fallocate(fd, 0, (off_t)size);
  if (r == EOPNOTSUPP || r == EINVAL)
    r = ftruncate(fd, (off_t)size) < 0 ? errno : 0;
  if (r) {
    r = svm_error(r, "%s: cannot allocate %" PRIu64 " bytes for %s: %s%s", path, size, tmp,
                  strerror(r), r == ENOSPC || r == EDQUOT ? " (free space on the datastore "
                  "and retry)" : "");
    goto out;
  }
  /* Header and log slots: the one in use, and zeros (unused) in the others, so that even a
   * file system without fallocate has every block allocated. */
  memset(buf, 0, CTK_DATA_OFF);
  ctk_encode_header(h, buf + ctk_header_off(h->gen));
  ctk_encode_al(h, 1, al, al_n, buf + ctk_al_off(1));
  if ((r = write_all(fd, buf, CTK_DATA_OFF, 0)) < 0)
    goto io_err;
  uint64_t npages = ctk_npages(h->nblocks);
  for (uint64_t p0 = 0; p0 < npages; p0 += CHUNK) {
    uint64_t n = npages - p0 < CHUNK ? npages - p0 : CHUNK;
    for (uint64_t k = 0; k < n; k++) {
      uint64_t p = p0 + k, b0 = p * CTK_BPP;
      size_t cnt = ctk_page_nblocks(h->nblocks, p);
      for (size_t i = 0; i < cnt; i++) {
        /* relaxed: cbt_relocate_prepare() reads the epochs while marks store them; what it
         * misses, the relocation rewrites */
        uint16_t e = ep ? __atomic_load_n(&ep[b0 + i], __ATOMIC_RELAXED) : 0;
        vals[i] = map ? map(e, arg) : e;
      }
      /* Both copies valid: copy B (sequence 2) is the newest, the next write goes to A. */
      ctk_encode_page(h, p, 1, vals, cnt, buf + 2 * k * CTK_PAGE);
      ctk_encode_page(h, p, 2, vals, cnt, buf + (2 * k + 1) * CTK_PAGE);
    }
    if ((r = write_all(fd, buf, (size_t)n * 2 * CTK_PAGE, ctk_page_off(p0, 0))) < 0)
      goto io_err;
  }
  if (fdatasync(fd) < 0) {
    r = -errno;
    goto io_err;
  }
  if (rename(tmp, path) < 0) {
    r = svm_error(errno, "%s: cannot rename %s over it: %s", path, tmp, strerror(errno));
    goto out;
  }
  tmp[0] = '\0';
  if ((r = fsync_dir(path)) < 0)
    goto out;
  r = fd;
  fd = -1;
  goto out;
io_err:
  r = svm_error(-r, "%s: writing %s: %s", path, tmp, strerror(-r));
out:
  if (fd >= 0)
    close(fd);
  if (tmp && tmp[0])
    unlink(tmp);
  free(tmp);
  free(buf);
  free(vals);
  return r;
}
