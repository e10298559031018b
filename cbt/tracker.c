/* The tracker: marks, group commit, change IDs, resize, reset.
 *
 * Concurrency. t->ep[b] is the local epoch of block b and t->cur the open epoch; both are
 * read without a lock by the fast path of cbt_mark(): a block whose epoch equals cur is
 * already marked AND durable, because a slow-path mark publishes ep[b] = cur (release store)
 * only after the .ctk page holding it has been written and fdatasync'd. The slow path queues
 * the blocks under t->mu; one caller at a time becomes the leader, takes the whole queued
 * batch, writes its pages and runs one fdatasync outside the lock while later callers queue
 * the next batch (leader/follower group commit), then publishes and wakes the batch's
 * waiters. A failed .ctk write makes the tracker "broken": every later slow-path mark fails,
 * because it could no longer promise durability.
 *
 * cbt_changeid() and cbt_resize() take t->shape for writing (queries scan under it for
 * reading, so a query sees one consistent epoch numbering) and wait until no batch is being
 * committed; while they renumber the array cur holds CTK_EPOCH_BUSY, which no block carries,
 * so every concurrent mark goes to the slow path and waits on t->mu.
 */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <libgen.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cbt/internal.h"
#include "common/uuid.h"
#include "common/error.h"

static uint16_t *ep_alloc(uint64_t nblocks)
{
  void *p = mmap(NULL, (size_t)nblocks * 2, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

static void ep_free(uint16_t *ep, uint64_t nblocks)
{
  if (ep)
    munmap(ep, (size_t)nblocks * 2);
}

static unsigned log2u(uint32_t g)
{
  return (unsigned)__builtin_ctz(g);
}

static int check_granularity(uint32_t g)
{
  if (g < CBT_GRANULARITY_MIN || g > CBT_GRANULARITY_MAX || (g & (g - 1)))
    return svm_error(EINVAL, "granularity %" PRIu32 ": must be a power of two from %u to %u",
                     g, CBT_GRANULARITY_MIN, CBT_GRANULARITY_MAX);
  return 0;
}

static void set_disk_id(struct ctk_header *h, const char *disk_id)
{
  ctk_disk_hash(disk_id, h->disk_hash);
  snprintf(h->disk_id, sizeof h->disk_id, "%s", disk_id);
}

static uint16_t map_all_changed(uint16_t e, const void *arg)
{
  (void)e;
  (void)arg;
  return 1;
}

/* Begin tracking in a new .ctk described by h (uuid, disk id and granularity filled in by the
 * caller): allocate the epochs, write the file, take it over. all_changed: every block counts
 * as written in the open epoch (local 1), as after a reset. */
static int start_tracking(struct cbt *t, struct ctk_header *h, bool all_changed)
{
  h->disk_size = t->disk_size;
  h->nblocks = (t->disk_size + h->granularity - 1) / h->granularity;

  uint16_t *ep = ep_alloc(h->nblocks);
  if (!ep)
    return svm_error(ENOMEM, "%s: no memory for %" PRIu64 " blocks", t->path, h->nblocks);
  int fd = ctk_write_new(t->path, h, NULL, all_changed ? map_all_changed : NULL, NULL);
  if (fd < 0) {
    ep_free(ep, h->nblocks);
    return fd;
  }
  if (all_changed)
    for (uint64_t b = 0; b < h->nblocks; b++)
      ep[b] = 1;
  t->fd = fd;
  t->ep = ep;
  t->nblocks = h->nblocks;
  t->gshift = log2u(h->granularity);
  t->h = *h;
  t->cur = 1;
  return 0;
}

/* Start over under a new uuid with every block changed in the open epoch (local 1). */
static int reset_tracking(struct cbt *t, const struct ctk_image *old, bool keep_prev,
                          uint32_t granularity, const char *why)
{
  struct ctk_header h = { .version = CTK_VERSION, .gen = 1, .cur = 1 };
  char *msg = NULL;
  int r;

  if (asprintf(&msg, "%s: %s; tracking restarted under a new uuid with every block marked "
               "changed (earlier change IDs are refused: do a full copy)", t->path, why) < 0)
    return svm_error(ENOMEM, "no memory");
  svm_uuid_new(h.uuid);
  if (keep_prev && old->hdr_ok)
    memcpy(h.prev_uuid, old->h.uuid, 16);
  if (old->hdr_ok && check_granularity(old->h.granularity) == 0)
    granularity = old->h.granularity;
  set_disk_id(&h, t->disk_id);
  memcpy(h.reason, why, strnlen(why, sizeof h.reason - 1));
  h.granularity = granularity;
  r = start_tracking(t, &h, true);
  if (r < 0) {
    free(msg);
    return r;
  }
  t->reset_reason = msg;
  return 0;
}

static int create_new(struct cbt *t, uint32_t granularity)
{
  struct ctk_header h = { .version = CTK_VERSION, .gen = 1, .cur = 1 };

  svm_uuid_new(h.uuid);
  set_disk_id(&h, t->disk_id);
  h.granularity = granularity;
  return start_tracking(t, &h, false);
}

/* A crash during a compaction, resize or reset leaves its unfinished "NAME.tmp.XXXXXX"
 * behind; the rename never happened, so it is garbage. Called with the .ctk locked. (A
 * directory scan, not glob(3): a path may contain glob metacharacters.) */
static void remove_stale_tmp(const char *path)
{
  char *copy = strdup(path), *copy2 = strdup(path);
  DIR *d = copy && copy2 ? opendir(dirname(copy)) : NULL;
  if (d) {
    const char *base = basename(copy2);
    size_t bl = strlen(base);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
      const char *n = de->d_name;
      if (strncmp(n, base, bl) == 0 && strncmp(n + bl, ".tmp.", 5) == 0 &&
          strlen(n + bl + 5) == 6)
        unlinkat(dirfd(d), n, 0);
    }
    closedir(d);
  }
  free(copy);
  free(copy2);
}

static int open_existing(struct cbt *t, int fd, uint32_t granularity)
{
  struct stat st;
  struct ctk_image img;
  char why[512];
  bool keep_prev = true;

  if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
    int e = errno;
    close(fd);
    if (e == EWOULDBLOCK)
      return svm_error(EBUSY, "%s: in use by another tracker (is another svmd running on "
                       "this datastore?)", t->path);
    return svm_error(e, "%s: lock: %s", t->path, strerror(e));
  }
  if (fstat(fd, &st) < 0) {
    int e = errno;
    close(fd);
    return svm_error(e, "%s: %s", t->path, strerror(e));
  }
  remove_stale_tmp(t->path);
  struct ctk_src src = { .fd = fd, .size = (uint64_t)st.st_size };
  int r = ctk_load(&src, &img);
  if (r == 0) {
    uint8_t hash[32];
    ctk_disk_hash(t->disk_id, hash);
    if (memcmp(hash, img.h.disk_hash, 32) != 0) {
      snprintf(why, sizeof why, "belongs to another disk ('%s', not '%s')", img.h.disk_id,
               t->disk_id);
      keep_prev = false;
      r = -EINVAL;
    } else if (img.h.disk_size != t->disk_size) {
      snprintf(why, sizeof why, "made for a disk of %" PRIu64 " bytes, this disk has %" PRIu64
               " (resized without its tracker)", img.h.disk_size, t->disk_size);
      r = -EINVAL;
    }
  } else {
    snprintf(why, sizeof why, "%s", svm_last_error());
  }
  if (r == 0) {
    t->fd = fd;
    t->ep = img.ep;
    t->nblocks = img.h.nblocks;
    t->gshift = log2u(img.h.granularity);
    t->h = img.h;
    t->cur = (uint16_t)img.h.cur;
    return 0;
  }
  ep_free(img.ep, img.h.nblocks);
  r = reset_tracking(t, &img, keep_prev, granularity, why);
  close(fd);                                  /* the old inode, replaced by rename */
  return r;
}

int cbt_open(const char *ctk_path, const char *disk_id, uint64_t disk_size,
             uint32_t granularity, struct cbt **out)
{
  *out = NULL;
  if (!ctk_path || !*ctk_path || !disk_id || !*disk_id)
    return svm_error(EINVAL, "cbt_open: a .ctk path and a disk id are required");
  if (disk_size == 0 || disk_size > (UINT64_C(1) << 56))
    return svm_error(EINVAL, "%s: disk size %" PRIu64 " is out of range (1 byte to 64 PiB)",
                     ctk_path, disk_size);
  if (granularity == 0)
    granularity = CBT_GRANULARITY_DEFAULT;
  int r = check_granularity(granularity);
  if (r < 0)
    return svm_error_prefix("%s", ctk_path);

  struct cbt *t = calloc(1, sizeof *t);
  if (!t)
    return svm_error(ENOMEM, "no memory");
  t->fd = -1;
  t->limit = CTK_EPOCH_LIMIT;
  t->batch_gen = 1;
  t->disk_size = disk_size;
  pthread_mutex_init(&t->mu, NULL);
  pthread_cond_init(&t->cv, NULL);
  pthread_rwlock_init(&t->shape, NULL);
  t->path = strdup(ctk_path);
  t->disk_id = strdup(disk_id);
  if (!t->path || !t->disk_id) {
    cbt_close(t);
    return svm_error(ENOMEM, "no memory");
  }

  int fd = open(ctk_path, O_RDWR | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT)
    r = create_new(t, granularity);
  else if (fd < 0)
    r = svm_error(errno, "%s: %s", ctk_path, strerror(errno));
  else
    r = open_existing(t, fd, granularity);
  if (r < 0) {
    cbt_close(t);
    return r;
  }
  t->ep_bytes = (size_t)t->nblocks * 2;
  *out = t;
  return 0;
}

const char *cbt_reset_reason(const struct cbt *t)
{
  return t ? t->reset_reason : NULL;
}

void cbt_close(struct cbt *t)
{
  if (!t)
    return;
  if (t->fd >= 0)
    close(t->fd);
  ep_free(t->ep, t->nblocks);
  free(t->pend);
  free(t->path);
  free(t->disk_id);
  free(t->reset_reason);
  pthread_mutex_destroy(&t->mu);
  pthread_cond_destroy(&t->cv);
  pthread_rwlock_destroy(&t->shape);
  free(t);
}

size_t cbt_memory_bytes(const struct cbt *t)
{
  return sizeof *t + t->ep_bytes + t->cappend * sizeof *t->pend + strlen(t->path) + 1 +
         strlen(t->disk_id) + 1 + (t->reset_reason ? strlen(t->reset_reason) + 1 : 0);
}

void cbt_internal_set_epoch_limit(struct cbt *t, uint16_t limit)
{
  if (limit < 4)
    limit = 4;
  if (limit > CTK_EPOCH_LIMIT)
    limit = CTK_EPOCH_LIMIT;
  pthread_mutex_lock(&t->mu);
  t->limit = limit;
  pthread_mutex_unlock(&t->mu);
}

/* ---- group commit ---------------------------------------------------------------------- */

static int cmp_range(const void *a, const void *b)
{
  const struct cbt_range *x = a, *y = b;
  return x->b0 < y->b0 ? -1 : x->b0 > y->b0;
}

static size_t merge_ranges(struct cbt_range *r, size_t n)
{
  if (n == 0)
    return 0;
  qsort(r, n, sizeof *r, cmp_range);
  size_t m = 0;
  for (size_t i = 1; i < n; i++) {
    if (r[i].b0 <= r[m].b1) {
      if (r[i].b1 > r[m].b1)
        r[m].b1 = r[i].b1;
    } else {
      r[++m] = r[i];
    }
  }
  return m + 1;
}

static int pread_all(int fd, void *buf, size_t len, uint64_t off)
{
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return n < 0 ? -errno : -EIO;
    done += (size_t)n;
  }
  return 0;
}

struct cbt_io_hooks cbt_io = { pwrite, fdatasync };

static int pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
  size_t done = 0;
  while (done < len) {
    ssize_t n =
        cbt_io.pwrite(fd, (const uint8_t *)buf + done, len - done, (off_t)(off + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    done += (size_t)n;
  }
  return 0;
}

/* Write one page of the batch: the page as published so far plus the batch's blocks at
 * epoch e, into the copy that is not the newest valid one. */
static int commit_page(struct cbt *t, uint64_t pno, const struct cbt_range *r, size_t n,
                       size_t ri, uint16_t e, uint8_t *cp, uint16_t *vals)
{
  uint64_t off = CTK_DATA_OFF + 2 * pno * CTK_PAGE, seq[2];
  int rc = pread_all(t->fd, cp, 2 * CTK_PAGE, off);
  if (rc < 0)
    return svm_error(-rc, "%s: reading page %" PRIu64 ": %s", t->path, pno, strerror(-rc));
  int v0 = ctk_check_page(&t->h, pno, cp, &seq[0]);
  int v1 = ctk_check_page(&t->h, pno, cp + CTK_PAGE, &seq[1]);
  if (v0 < 0 && v1 < 0)
    return svm_error(EIO, "%s: page %" PRIu64 " was damaged while in use (both copies)",
                     t->path, pno);
  int newest = v0 < 0 ? 1 : v1 < 0 ? 0 : seq[1] > seq[0] ? 1 : 0;
  int target = 1 - newest;

  uint64_t b0 = pno * CTK_BPP, b1 = b0 + CTK_BPP;
  if (b1 > t->nblocks)
    b1 = t->nblocks;
  for (uint64_t b = b0; b < b1; b++)
    vals[b - b0] = __atomic_load_n(&t->ep[b], __ATOMIC_RELAXED);
  for (size_t i = ri; i < n && r[i].b0 < b1; i++) {
    uint64_t s = r[i].b0 > b0 ? r[i].b0 : b0, x = r[i].b1 < b1 ? r[i].b1 : b1;
    for (uint64_t b = s; b < x; b++)
      vals[b - b0] = e;
  }
  ctk_encode_page(&t->h, pno, seq[newest] + 1, vals, (size_t)(b1 - b0), cp);
  rc = pwrite_all(t->fd, cp, CTK_PAGE, off + (uint64_t)target * CTK_PAGE);
  if (rc < 0)
    return svm_error(-rc, "%s: writing page %" PRIu64 ": %s", t->path, pno, strerror(-rc));
  return 0;
}

static int commit_batch(struct cbt *t, const struct cbt_range *r, size_t n, uint16_t e)
{
  uint8_t *cp = malloc(2 * CTK_PAGE);
  uint16_t *vals = malloc(CTK_BPP * 2);
  int rc = 0;
  if (!cp || !vals) {
    rc = svm_error(ENOMEM, "%s: no memory to commit marks", t->path);
    goto out;
  }
  uint64_t last = UINT64_MAX;
  for (size_t i = 0; i < n && rc == 0; i++) {
    for (uint64_t p = r[i].b0 / CTK_BPP; p <= (r[i].b1 - 1) / CTK_BPP && rc == 0; p++) {
      if (p == last)
        continue;
      rc = commit_page(t, p, r, n, i, e, cp, vals);
      last = p;
    }
  }
  if (rc == 0 && cbt_io.fdatasync(t->fd) < 0)
    rc = svm_error(errno, "%s: fdatasync: %s", t->path, strerror(errno));
out:
  free(cp);
  free(vals);
  return rc;
}

static int broken_error(struct cbt *t)
{
  return svm_error(-t->broken, "%s (the tracker can no longer make marks durable: stop "
                   "writes, reopen it; it restarts if the file is damaged)", t->broken_msg);
}

static int push_range(struct cbt *t, uint64_t b0, uint64_t b1)
{
  if (t->npend == t->cappend) {
    size_t cap = t->cappend ? 2 * t->cappend : 16;
    struct cbt_range *p = realloc(t->pend, cap * sizeof *p);
    if (!p)
      return svm_error(ENOMEM, "%s: no memory to queue a mark", t->path);
    t->pend = p;
    t->cappend = cap;
  }
  t->pend[t->npend++] = (struct cbt_range){ b0, b1 };
  return 0;
}

/* Out of line, so that the fast path of cbt_mark() needs no stack frame. */
__attribute__((noinline)) static int mark_slow(struct cbt *t, uint64_t b0, uint64_t last)
{
  int rc = 0;
  pthread_mutex_lock(&t->mu);
  if (t->broken) {
    rc = broken_error(t);
    goto out;
  }
  uint16_t cur = t->cur;
  while (b0 <= last && __atomic_load_n(&t->ep[b0], __ATOMIC_RELAXED) == cur)
    b0++;
  if (b0 > last)
    goto out;                                 /* published meanwhile */
  if ((rc = push_range(t, b0, last + 1)) < 0)
    goto out;
  uint64_t gen = t->batch_gen;
  while (t->done_gen < gen && !t->broken) {
    if (t->committing) {
      pthread_cond_wait(&t->cv, &t->mu);
      continue;
    }
    /* Lead: take the gathered batch, commit it outside the lock. */
    struct cbt_range *r = t->pend;
    size_t n = t->npend;
    uint64_t g = t->batch_gen++;
    uint16_t e = t->cur;
    t->pend = NULL;
    t->npend = t->cappend = 0;
    t->committing = true;
    pthread_mutex_unlock(&t->mu);

    n = merge_ranges(r, n);
    int crc = commit_batch(t, r, n, e);

    pthread_mutex_lock(&t->mu);
    if (crc == 0) {
      for (size_t i = 0; i < n; i++)
        for (uint64_t b = r[i].b0; b < r[i].b1; b++)
          __atomic_store_n(&t->ep[b], e, __ATOMIC_RELEASE);
    } else {
      t->broken = crc;
      snprintf(t->broken_msg, sizeof t->broken_msg, "%s", svm_last_error());
    }
    free(r);
    t->done_gen = g;
    t->committing = false;
    pthread_cond_broadcast(&t->cv);
  }
  if (t->broken)
    rc = broken_error(t);
out:
  pthread_mutex_unlock(&t->mu);
  return rc;
}

__attribute__((noinline, cold)) static int mark_range_error(struct cbt *t, uint64_t offset,
                                                            uint64_t length)
{
  return svm_error(EINVAL, "%s: mark of %" PRIu64 "+%" PRIu64 " past the end of the disk (%"
                   PRIu64 " bytes)", t->path, offset, length, t->disk_size);
}

/* The hot path of both marks: 1 when every block of the range is already marked in the open
 * epoch (one load and compare per block, no lock), else 0 with the first unmarked block and the
 * range's last block; a negative errno for a range past the end. */
static inline int scan_marked(struct cbt *t, uint64_t offset, uint64_t length, uint64_t *first,
                              uint64_t *last)
{
  if (length == 0)
    return 1;
  if (__builtin_expect(offset >= t->disk_size || length > t->disk_size - offset, 0))
    return mark_range_error(t, offset, length);
  uint64_t b = offset >> t->gshift;
  *last = (offset + length - 1) >> t->gshift;
  uint16_t cur = __atomic_load_n(&t->cur, __ATOMIC_ACQUIRE);
  for (uint64_t i = b; i <= *last; i++)
    if (__builtin_expect(__atomic_load_n(&t->ep[i], __ATOMIC_ACQUIRE) != cur, 0)) {
      *first = i;
      return 0;
    }
  return 1;
}

int cbt_mark(struct cbt *t, uint64_t offset, uint64_t length)
{
  uint64_t first = 0, last = 0;
  int r = scan_marked(t, offset, length, &first, &last);
  if (__builtin_expect(r != 0, 1))
    return r < 0 ? r : 0;
  return mark_slow(t, first, last);
}

int cbt_mark_try(struct cbt *t, uint64_t offset, uint64_t length)
{
  uint64_t first = 0, last = 0;
  return scan_marked(t, offset, length, &first, &last);
}

int cbt_discard(struct cbt *t, uint64_t offset, uint64_t length)
{
  /* A discarded block reads back differently: it changed (see cbt.h). */
  return cbt_mark(t, offset, length);
}

/* ---- change IDs, compaction, resize ---------------------------------------------------- */

/* Hold shape for writing and mu, with no batch being committed. */
static void lock_exclusive(struct cbt *t)
{
  pthread_rwlock_wrlock(&t->shape);
  pthread_mutex_lock(&t->mu);
  while (t->committing)
    pthread_cond_wait(&t->cv, &t->mu);
}

static void unlock_exclusive(struct cbt *t)
{
  pthread_mutex_unlock(&t->mu);
  pthread_rwlock_unlock(&t->shape);
}

static int write_header(struct cbt *t, const struct ctk_header *h)
{
  uint8_t *page = malloc(CTK_PAGE);
  if (!page)
    return svm_error(ENOMEM, "no memory");
  ctk_encode_header(h, page);
  int rc = pwrite_all(t->fd, page, CTK_PAGE, (h->gen & 1) * CTK_PAGE);
  free(page);
  if (rc == 0 && cbt_io.fdatasync(t->fd) < 0)
    rc = -errno;
  if (rc < 0)
    return svm_error(-rc, "%s: writing the header: %s", t->path, strerror(-rc));
  return 0;
}

struct compact_map {
  uint16_t k;
};

static uint16_t map_compact(uint16_t e, const void *arg)
{
  uint16_t k = ((const struct compact_map *)arg)->k;
  return e == 0 ? 0 : e <= k ? 1 : (uint16_t)(e - k + 1);
}

/* Close epoch cur (>= limit) and renumber: epochs 1..k collapse into 1 ("at or before
 * sequence base + k"), later ones shift down by k - 1. */
static int compact_locked(struct cbt *t)
{
  uint16_t cur = t->cur, keep = t->limit / 2;
  struct compact_map m = { .k = (uint16_t)(cur - keep) };
  struct ctk_header h = t->h;
  h.gen++;
  h.base = t->h.base + m.k - 1;
  h.floor = t->h.base + m.k > t->h.floor ? t->h.base + m.k : t->h.floor;
  h.cur = (uint32_t)(cur - m.k + 2);
  int fd = ctk_write_new(t->path, &h, t->ep, map_compact, &m);
  if (fd < 0)
    return fd;
  close(t->fd);
  t->fd = fd;
  __atomic_store_n(&t->cur, CTK_EPOCH_BUSY, __ATOMIC_RELEASE);
  for (uint64_t b = 0; b < t->nblocks; b++) {
    uint16_t e = t->ep[b];
    if (e)
      __atomic_store_n(&t->ep[b], map_compact(e, &m), __ATOMIC_RELAXED);
  }
  t->h = h;
  __atomic_store_n(&t->cur, (uint16_t)h.cur, __ATOMIC_RELEASE);
  return 0;
}

int cbt_changeid(struct cbt *t, char *buf, size_t buflen)
{
  char uuid[37];
  int rc;

  lock_exclusive(t);
  uint64_t seq = t->h.base + t->cur;
  svm_uuid_format(t->h.uuid, uuid);
  if (t->broken) {
    rc = broken_error(t);
  } else if ((size_t)snprintf(NULL, 0, "%s/%" PRIu64, uuid, seq) >= buflen) {
    rc = svm_error(ERANGE, "cbt_changeid: buffer of %zu bytes is too small", buflen);
  } else if (t->cur >= t->limit) {
    rc = compact_locked(t);
  } else {
    struct ctk_header h = t->h;
    h.gen++;
    h.cur++;
    rc = write_header(t, &h);
    if (rc == 0) {
      t->h = h;
      __atomic_store_n(&t->cur, (uint16_t)h.cur, __ATOMIC_RELEASE);
    }
  }
  unlock_exclusive(t);
  if (rc == 0)
    snprintf(buf, buflen, "%s/%" PRIu64, uuid, seq);
  return rc;
}

int cbt_resize(struct cbt *t, uint64_t new_size)
{
  if (new_size == 0 || new_size > (UINT64_C(1) << 56))
    return svm_error(EINVAL, "%s: new disk size %" PRIu64 " is out of range", t->path, new_size);
  int rc = 0;
  lock_exclusive(t);
  if (t->broken) {
    rc = broken_error(t);
    goto out;
  }
  if (new_size == t->disk_size)
    goto out;
  uint64_t g = UINT64_C(1) << t->gshift;
  uint64_t n = (new_size + g - 1) / g, keep = n < t->nblocks ? n : t->nblocks;
  uint16_t *ep = ep_alloc(n);
  if (!ep) {
    rc = svm_error(ENOMEM, "%s: no memory for %" PRIu64 " blocks", t->path, n);
    goto out;
  }
  memcpy(ep, t->ep, keep * 2);
  if (n > t->nblocks || (new_size > t->disk_size && t->disk_size % g)) {
    /* Grown: the new area (and the old last block, when it gains bytes) changed. */
    uint64_t from = t->disk_size % g ? t->nblocks - 1 : t->nblocks;
    for (uint64_t b = from; b < n; b++)
      ep[b] = t->cur;
  }
  struct ctk_header h = t->h;
  h.gen++;
  h.disk_size = new_size;
  h.nblocks = n;
  int fd = ctk_write_new(t->path, &h, ep, NULL, NULL);
  if (fd < 0) {
    ep_free(ep, n);
    rc = fd;
    goto out;
  }
  close(t->fd);
  t->fd = fd;
  ep_free(t->ep, t->nblocks);
  t->ep = ep;
  t->nblocks = n;
  t->ep_bytes = (size_t)n * 2;
  t->disk_size = new_size;
  t->h = h;
out:
  unlock_exclusive(t);
  return rc;
}
