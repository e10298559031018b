/* libFuzzer target for the .ctk decoder: the input is a whole .ctk file (version 1 or 2),
 * parsed from memory by the same ctk_load() that cbt_open() and cbt_info_read() use: header
 * slots, the activity-log ring and every data page copy. A parse must either fail with a
 * message or yield a consistent image: every epoch within the header's range, the logged
 * extents inside the disk and in the open epoch, every untrusted page counted as changed.
 *
 * Built a second time with FUZZ_CTK_SEEDS_MAIN, it writes a seed corpus of valid .ctk files
 * (made by the library: fresh, marked, several change IDs, compacted, resized, multi-page,
 * copied while open so that the log is not empty, one with a damaged page copy) into the
 * directory given as its argument; ctest adds the version-1 fixture (tests/unit/data). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <svmotion/cbt.h>
#include <svmotion/error.h>

#include "cbt/internal.h"

#ifndef FUZZ_CTK_SEEDS_MAIN

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct ctk_src src = { .fd = -1, .buf = data, .size = size };
  struct ctk_image img;
  if (ctk_load(&src, &img) < 0) {
    if (svm_last_error()[0] == '\0')
      abort();                                /* every refusal says why */
    return 0;
  }
  if (!img.hdr_ok || img.h.cur < 1 || img.h.cur > CTK_EPOCH_LIMIT ||
      ctk_file_size_v(img.h.version, img.h.nblocks) != size ||
      (img.h.version == 1 && img.al_n) || img.al_n > CTK_AL_MAX)
    abort();
  /* Every block of a logged extent is in the open epoch. */
  unsigned per = img.h.al_shift - (unsigned)__builtin_ctz(img.h.granularity);
  for (size_t i = 0; i < img.al_n; i++) {
    uint64_t b0 = (uint64_t)img.al[i] << per;
    if (b0 >= img.h.nblocks || img.ep[b0] != img.h.cur)
      abort();
  }
  /* An untrusted page is wholly in the open epoch. */
  uint64_t bad = 0;
  for (uint64_t p = 0; p < ctk_npages(img.h.nblocks); p++)
    if (img.dirty[p]) {
      bool all = true;
      for (uint64_t b = p * CTK_BPP; b < (p + 1) * CTK_BPP && b < img.h.nblocks; b++)
        all &= img.ep[b] == img.h.cur;
      bad += all;
    }
  if (bad < img.bad_pages)
    abort();
  uint64_t marked = 0;
  for (uint64_t b = 0; b < img.h.nblocks; b++) {
    if (img.ep[b] > img.h.cur)
      abort();
    marked += img.ep[b] != 0;
  }
  /* The SIMD scans that queries use agree with the plain count, at every threshold tried. */
  for (uint16_t thr = 0; thr <= img.h.cur && thr < 4; thr++) {
    uint64_t cnt = 0, b = 0, n = img.h.nblocks, want = 0;
    while ((b = cbt_scan_above(img.ep, b, n, thr)) < n) {
      uint64_t e = cbt_scan_not_above(img.ep, b, n, thr);
      if (e <= b || img.ep[b] <= thr || (e < n && img.ep[e] > thr))
        abort();
      cnt += e - b;
      b = e;
    }
    for (uint64_t i = 0; i < n; i++)
      want += img.ep[i] > thr;
    if (cnt != want || (thr == 0 && cnt != marked))
      abort();
  }
  ctk_image_free(&img);
  return 0;
}

#else

static int copy_file(const char *from, const char *to)
{
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
  return system(cmd) == 0 ? 0 : -1;
}

static int make(const char *dir, const char *name, uint64_t size, uint32_t g, int epochs,
                uint16_t limit, uint64_t resize)
{
  char path[512], id[CBT_CHANGEID_MAX];
  struct cbt *t;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (cbt_open(path, name, size, g, &t) < 0)
    return -1;
  if (limit)
    cbt_internal_set_epoch_limit(t, limit);
  for (int i = 0; i < epochs; i++) {
    if (cbt_mark(t, ((uint64_t)i * 7919 * g) % size, g + (uint64_t)i) < 0 ||
        cbt_changeid(t, id, sizeof id) < 0)
      return -1;
  }
  if (resize && cbt_resize(t, resize) < 0)
    return -1;
  if (strstr(name, "open")) {                 /* as a crash leaves it: the log in use */
    char copy[600];
    snprintf(copy, sizeof copy, "%s/crashed-%s", dir, name);
    if (cbt_mark(t, size / 2, g) < 0 || copy_file(path, copy) < 0)
      return -1;
  }
  cbt_close(t);
  if (strstr(name, "damaged")) {              /* one copy of page 0 flipped */
    FILE *f = fopen(path, "r+b");
    if (!f || fseek(f, CTK_DATA_OFF + 100, SEEK_SET) != 0 || fputc(0x5a, f) == EOF)
      return -1;
    fclose(f);
  }
  return 0;
}

int main(int argc, char **argv)
{
  if (argc != 2) {
    fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  if (mkdir(argv[1], 0755) < 0 && errno != EEXIST) {
    perror(argv[1]);
    return 1;
  }
  if (make(argv[1], "fresh.ctk", 100000, 4096, 0, 0, 0) < 0 ||
      make(argv[1], "marked.ctk", 1 << 20, 4096, 5, 0, 0) < 0 ||
      make(argv[1], "compacted.ctk", 1 << 20, 8192, 30, 6, 0) < 0 ||
      make(argv[1], "resized.ctk", 200000, 4096, 3, 0, 300000) < 0 ||
      make(argv[1], "twopages.ctk", 2100ull * 4096, 4096, 4, 0, 0) < 0 ||
      make(argv[1], "open.ctk", 64ull << 20, 4096, 3, 0, 0) < 0 ||
      make(argv[1], "damaged.ctk", 1 << 20, 4096, 2, 0, 0) < 0) {
    fprintf(stderr, "fuzz-ctk-seeds: %s\n", svm_last_error());
    return 1;
  }
  return 0;
}
#endif
