/* Queries: "which extents changed after change ID X". The per-block epoch array is scanned
 * eight blocks per SSE2 compare, 32 per loop, so a 1 TiB disk at 64 KiB (32 MiB of epochs)
 * takes a few milliseconds whatever the number of epochs; runs of blocks above the threshold
 * become extents, merged by construction. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "cbt/internal.h"
#include "common/uuid.h"
#include "common/error.h"

/* The scans read blocks that cbt_mark() may be publishing concurrently (an atomic store of
 * one epoch); a block that changes during a query was written during it, and whether it is
 * reported is then undefined anyway. So each epoch must only be read whole, old or new: the
 * scalar loops use relaxed atomic loads (a plain load on x86). C11 has no atomic vector
 * load; an SSE2 load reads every aligned 16-bit lane whole, so load8 is the one read left
 * outside the memory model, on purpose, and TSan is told not to watch it. */
#if defined(__SSE2__)
__attribute__((no_sanitize("thread"))) static inline __m128i load8(const uint16_t *p)
{
  return _mm_loadu_si128((const void *)p);
}

/* Lanes of p[0..8) above thr: unsigned compare through the sign-flip of both sides. */
static inline __m128i above8(const uint16_t *p, __m128i bias, __m128i t)
{
  return _mm_cmpgt_epi16(_mm_xor_si128(load8(p), bias), t);
}
#endif

static inline uint16_t load1(const uint16_t *p)
{
  return __atomic_load_n(p, __ATOMIC_RELAXED);
}

uint64_t cbt_scan_above(const uint16_t *ep, uint64_t i, uint64_t end, uint16_t thr)
{
#if defined(__SSE2__)
  const __m128i bias = _mm_set1_epi16((short)0x8000);
  const __m128i t = _mm_set1_epi16((short)(thr ^ 0x8000));
  while (i + 32 <= end) {
    __m128i a = above8(ep + i, bias, t), b = above8(ep + i + 8, bias, t);
    __m128i c = above8(ep + i + 16, bias, t), d = above8(ep + i + 24, bias, t);
    if (_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d))))
      break;
    i += 32;
  }
  while (i + 8 <= end) {
    int m = _mm_movemask_epi8(above8(ep + i, bias, t));
    if (m)
      return i + (unsigned)__builtin_ctz((unsigned)m) / 2;
    i += 8;
  }
#endif
  for (; i < end; i++)
    if (load1(&ep[i]) > thr)
      return i;
  return end;
}

uint64_t cbt_scan_not_above(const uint16_t *ep, uint64_t i, uint64_t end, uint16_t thr)
{
#if defined(__SSE2__)
  const __m128i bias = _mm_set1_epi16((short)0x8000);
  const __m128i t = _mm_set1_epi16((short)(thr ^ 0x8000));
  while (i + 8 <= end) {
    unsigned m = (unsigned)_mm_movemask_epi8(above8(ep + i, bias, t)) ^ 0xffffu;
    if (m)
      return i + (unsigned)__builtin_ctz(m) / 2;
    i += 8;
  }
#endif
  for (; i < end; i++)
    if (load1(&ep[i]) <= thr)
      return i;
  return end;
}

static int parse_seq(const char *s, uint64_t *out)
{
  uint64_t v = 0;
  if (!*s)
    return -1;
  for (; *s; s++) {
    if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
      return -1;
    v = v * 10 + (uint64_t)(*s - '0');
  }
  *out = v;
  return 0;
}

/* Turn `since` into a local-epoch threshold: blocks with epoch > *thr changed after it. */
static int since_threshold(struct cbt *t, const char *since, uint16_t *thr)
{
  const struct ctk_header *h = &t->h;
  char mine[37];
  uint8_t u[16];
  uint64_t seq;

  svm_uuid_format(h->uuid, mine);
  if (strcmp(since, "*") == 0) {
    *thr = 0;
    return 0;
  }
  if (strlen(since) < 38 || since[36] != '/' || svm_uuid_parse(since, u) < 0 ||
      parse_seq(since + 37, &seq) < 0 || seq == 0)
    return svm_error(EINVAL, "change ID '%.80s' is malformed: expected <uuid>/<sequence> (as "
                     "returned by a change ID request) or *; without a valid one, take a new "
                     "change ID and do a full copy", since);
  uint64_t next = h->base + t->cur;
  static const uint8_t zero[16];
  if (memcmp(u, h->uuid, 16) != 0) {
    if (memcmp(u, h->prev_uuid, 16) == 0 && memcmp(h->prev_uuid, zero, 16) != 0)
      return svm_error(ESTALE, "change ID %s belongs to an earlier incarnation of this disk's "
                       "tracking, restarted because %s: take a new change ID and do a full "
                       "copy", since, h->reason);
    return svm_error(EINVAL, "change ID %s is not one of this disk's (its tracking is %s%s%s): "
                     "take a new change ID and do a full copy", since, mine,
                     h->reason[0] ? ", restarted because " : "", h->reason);
  }
  if (seq >= next) {
    if (next - 1 == h->base)
      return svm_error(EINVAL, "change ID %s is in the future: none has been issued yet; "
                       "take a new change ID and do a full copy", since);
    return svm_error(EINVAL, "change ID %s is in the future: the last one issued is %s/%"
                     PRIu64 "; take a new change ID and do a full copy", since, mine, next - 1);
  }
  if (seq < h->floor)
    return svm_error(ESTALE, "change ID %s is too old: the oldest this tracker still answers "
                     "is %s/%" PRIu64 "; take a new change ID and do a full copy", since, mine,
                     h->floor);
  *thr = (uint16_t)(seq - h->base);
  return 0;
}

int cbt_query(struct cbt *t, const char *since, uint64_t offset, uint64_t length,
              struct cbt_extent **out, size_t *n)
{
  *out = NULL;
  *n = 0;
  if (!since)
    return svm_error(EINVAL, "%s: query without a change ID (use * for all)", t->path);

  pthread_rwlock_rdlock(&t->shape);
  pthread_mutex_lock(&t->mu);
  uint16_t thr = 0;
  int rc = since_threshold(t, since, &thr);
  pthread_mutex_unlock(&t->mu);
  if (rc < 0)
    goto out;
  uint64_t size = t->disk_size;
  if (offset > size || (length && length > size - offset)) {
    rc = svm_error(EINVAL, "%s: query of %" PRIu64 "+%" PRIu64 " past the end of the disk (%"
                   PRIu64 " bytes)", t->path, offset, length, size);
    goto out;
  }
  uint64_t end = length ? offset + length : size;
  if (offset == end)
    goto out;

  unsigned g = t->gshift;
  uint64_t b = offset >> g, bend = ((end - 1) >> g) + 1;
  struct cbt_extent *v = NULL;
  size_t cnt = 0, cap = 0;
  while ((b = cbt_scan_above(t->ep, b, bend, thr)) < bend) {
    uint64_t e = cbt_scan_not_above(t->ep, b, bend, thr);
    uint64_t s = b << g > offset ? b << g : offset, x = e << g < end ? e << g : end;
    if (cnt == cap) {
      cap = cap ? 2 * cap : 64;
      struct cbt_extent *nv = realloc(v, cap * sizeof *nv);
      if (!nv) {
        free(v);
        rc = svm_error(ENOMEM, "%s: no memory for the query result", t->path);
        goto out;
      }
      v = nv;
    }
    v[cnt++] = (struct cbt_extent){ s, x - s };
    b = e;
  }
  *out = v;
  *n = cnt;
out:
  pthread_rwlock_unlock(&t->shape);
  return rc;
}
