/* The tracker: marks, the activity log, the lazy page writer, change IDs, resize, reset.
 *
 * The guarantee: once a mark returns, a crash (kill -9, power cut) cannot lose it. The epochs
 * in memory (t->ep) are exact; the .ctk catches up lazily (before eviction); the activity log
 * (ctk.c) bounds what the file may lack: every block marked in memory but not yet in a
 * durable data page lies in an extent of the newest durable log entry. Invariants:
 *   - the hot set (al_idx/al_ext) is a subset of the newest durable log entry;
 *   - ep[b] is set to the open epoch only while b's extent is in the hot set (under mu), or
 *     after b's data page has been made durable with it (a direct mark);
 *   - an extent leaves the hot set first (under mu, so no new mark can land in it), then its
 *     dirty pages are written and fdatasync'd, and only then a log entry without it.
 * So the fast path stays what it was: a block whose epoch equals cur is marked and durable
 * (one load and compare, no lock). A first mark in an epoch into a hot extent costs a mutex
 * and a store: a change ID leaves the hot set alone, so the cold epoch after it is as cheap as
 * a warm one. A mark into a cold extent queues it for the next log entry; one caller at a time
 * becomes the leader, evicts the least recently used extents if the set is full (writing their
 * dirty pages first), writes the entry and runs one fdatasync outside the lock while later
 * callers queue the next batch (leader/follower group commit). A mark range wider than
 * DIRECT_EXTENTS extents skips the log: its pages are written and fdatasync'd directly.
 *
 * Errors: a failed fdatasync makes the tracker "broken" (every later slow mark fails: after a
 * failed fdatasync nothing about the file can be promised). A failed pwrite (ENOSPC on a file
 * system that ignores the preallocation, EIO) fails only the marks waiting for it; the state
 * in the file is the previous one, and the next mark tries again: tracking recovers by itself
 * when space returns.
 *
 * Lock order: shape, wmu, mu. cbt_changeid() and cbt_resize() take shape for writing
 * (queries and the lazy writer hold it for reading) and wait until no batch is being
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
#include <time.h>
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

enum {
  FLUSH_ROUND_BATCHES = 4,    /* batches of CTK_PAGES_INFLIGHT pages per background round */
  AHEAD_EXTENTS = 32,         /* least recently used extents cleaned ahead per batch */
  DIRECT_EXTENTS = 8,         /* a mark wider than this many extents writes its pages */
  AL_EVICT_MAX = 4,           /* extents evicted per log entry: <= 8 pages written (2 each) */
};

static inline unsigned ext_per(const struct cbt *t)
{
  return t->al_shift - t->gshift;             /* log2(blocks per extent) */
}
static inline uint64_t ext_of(const struct cbt *t, uint64_t b)
{
  return b >> ext_per(t);
}
static inline uint64_t ext_end(const struct cbt *t, uint64_t x)
{
  uint64_t e = (x + 1) << ext_per(t);
  return e < t->nblocks ? e : t->nblocks;
}

/* (Re)build the hot-set index for the current geometry, keeping the entries still inside the
 * disk (all of them, unless the extent size changed). */
static int al_setup(struct cbt *t)
{
  unsigned shift = t->h.al_shift;
  uint64_t nx = ((t->disk_size - 1) >> shift) + 1;
  uint16_t *idx = mmap(NULL, (size_t)nx * 2, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (idx == MAP_FAILED)
    return svm_error(ENOMEM, "%s: no memory for the activity log index", t->path);
  size_t n = 0;
  for (size_t i = 0; i < t->al_n; i++)
    if (shift == t->al_shift && t->al_ext[i] < nx) {
      t->al_ext[n] = t->al_ext[i];
      t->al_stamp[n] = t->al_stamp[i];
      idx[t->al_ext[n]] = (uint16_t)(n + 1);
      n++;
    }
  if (t->al_idx)
    munmap(t->al_idx, (size_t)t->nextents * 2);
  t->al_idx = idx;
  t->al_n = n;
  t->al_shift = shift;
  t->nextents = nx;
  return 0;
}

static int dirty_setup(struct cbt *t, uint8_t *from_image)
{
  uint64_t np = ctk_npages(t->nblocks);
  uint8_t *d = from_image ? from_image : calloc(np ? np : 1, 1);
  if (!d)
    return svm_error(ENOMEM, "%s: no memory", t->path);
  free(t->dirty);
  t->dirty = d;
  t->npages = np;
  t->ndirty = 0;
  for (uint64_t p = 0; p < np; p++)
    t->ndirty += d[p];
  return 0;
}

static void al_add(struct cbt *t, uint32_t x)
{
  size_t i = t->al_n++;
  t->al_ext[i] = x;
  t->al_stamp[i] = ++t->al_clock;
  t->al_idx[x] = (uint16_t)(i + 1);
}

static void al_remove_at(struct cbt *t, size_t i)
{
  t->al_idx[t->al_ext[i]] = 0;
  size_t last = --t->al_n;
  if (i != last) {
    t->al_ext[i] = t->al_ext[last];
    t->al_stamp[i] = t->al_stamp[last];
    t->al_idx[t->al_ext[i]] = (uint16_t)(i + 1);
  }
}

/* Begin tracking in a new .ctk described by h (uuid, disk id and granularity filled in by the
 * caller): allocate the epochs, write the file, take it over. all_changed: every block counts
 * as written in the open epoch (local 1), as after a reset. */
static int start_tracking(struct cbt *t, struct ctk_header *h, bool all_changed)
{
  h->disk_size = t->disk_size;
  h->nblocks = (t->disk_size + h->granularity - 1) / h->granularity;
  h->al_shift = ctk_al_shift(t->disk_size);

  uint16_t *ep = ep_alloc(h->nblocks);
  if (!ep)
    return svm_error(ENOMEM, "%s: no memory for %" PRIu64 " blocks", t->path, h->nblocks);
  int fd = ctk_write_new(t->path, h, NULL, all_changed ? map_all_changed : NULL, NULL, NULL, 0);
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
  t->al_seq = 1;
  t->al_n = 0;
  int r = al_setup(t);
  return r < 0 ? r : dirty_setup(t, NULL);
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

/* Take over a loaded image: the epochs (log and untrusted pages applied by ctk_load), the
 * dirty pages, the hot set = the newest log entry. A file of an older version is upgraded: a
 * complete file of the current version with the same uuid and epochs replaces it. */
static int adopt_image(struct cbt *t, int fd, struct ctk_image *img)
{
  t->ep = img->ep;
  t->nblocks = img->h.nblocks;
  t->gshift = log2u(img->h.granularity);
  t->h = img->h;
  t->cur = (uint16_t)img->h.cur;
  img->ep = NULL;
  if (img->note[0] || img->al_marked) {
    if (asprintf(&t->note, "%s: %s%s%" PRIu64 " block%s of %zu logged extent%s counted as "
                 "written in the open epoch (after a crash: the activity log's bound)",
                 t->path, img->note, img->note[0] ? "; " : "", img->al_marked,
                 img->al_marked == 1 ? "" : "s", img->al_n, img->al_n == 1 ? "" : "s") < 0)
      t->note = NULL;
  }
  size_t n = img->al_n < CTK_AL_MAX ? img->al_n : CTK_AL_MAX;
  t->al_n = n;
  t->al_shift = img->h.al_shift;
  for (size_t i = 0; i < n; i++) {
    t->al_ext[i] = img->al[i];
    t->al_stamp[i] = ++t->al_clock;
  }
  t->al_seq = img->al_seq;
  int r = al_setup(t);
  if (r == 0)
    r = dirty_setup(t, img->dirty);
  img->dirty = NULL;
  if (r < 0) {
    close(fd);
    return r;
  }
  if (img->h.version == CTK_VERSION) {
    t->fd = fd;
    return 0;
  }
  /* An older version: rewrite it in the current one beside it, rename over it (uuid, change
   * IDs kept). The epochs loaded already hold the old log's extents in the open epoch, and
   * the new file has every page written, so it starts with an empty log: nothing the old
   * log covered is lost, and its over-report stays until the next change ID. */
  struct ctk_header h = t->h;
  uint32_t from = h.version;
  h.version = CTK_VERSION;
  h.gen++;
  h.al_shift = ctk_al_shift(t->disk_size);
  int nfd = ctk_write_new(t->path, &h, t->ep, NULL, NULL, NULL, 0);
  close(fd);
  if (nfd < 0)
    return svm_error_prefix("upgrading the version-%" PRIu32 " .ctk (make room or check the "
                            "folder's permissions and retry)", from);
  t->fd = nfd;
  t->h = h;
  t->al_n = 0;
  t->al_seq = 1;
  memset(t->dirty, 0, t->npages);
  t->ndirty = 0;
  return al_setup(t);
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
    r = adopt_image(t, fd, &img);
    ctk_image_free(&img);
    return r;
  }
  ctk_image_free(&img);
  r = reset_tracking(t, &img, keep_prev, granularity, why);
  close(fd);                                  /* the old inode, replaced by rename */
  return r;
}

static void writer_add(struct cbt *t);
static void writer_remove(struct cbt *t);

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
  t->reloc_fd = -1;
  t->limit = CTK_EPOCH_LIMIT;
  t->al_limit = CTK_AL_MAX;
  t->batch_gen = 1;
  t->disk_size = disk_size;
  pthread_mutex_init(&t->mu, NULL);
  pthread_mutex_init(&t->wmu, NULL);
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
  if (t->note)                                /* the agent logs stderr; so do we, once */
    fprintf(stderr, "%s: change tracking: %s\n", program_invocation_short_name, t->note);
  t->flush_ms = cbt_io.flush_ms;
  if (t->flush_ms)
    writer_add(t);
  *out = t;
  return 0;
}

const char *cbt_reset_reason(const struct cbt *t)
{
  return t ? t->reset_reason : NULL;
}

const char *cbt_open_note(const struct cbt *t)
{
  return t ? t->note : NULL;
}

static int write_al_entry(struct cbt *t, const uint32_t *al, size_t n, uint64_t seq);
static int flush_pages(struct cbt *t, bool ahead, unsigned max_batches);

static void reloc_drop(struct cbt *t, bool remove);

void cbt_close(struct cbt *t)
{
  if (!t)
    return;
  if (t->flusher_on)
    writer_remove(t);
  /* Clean close: every page written, then an empty log entry, so that the next open trusts
   * the pages alone and reports nothing extra. On failure the log stays: still safe. */
  if (t->fd >= 0 && t->ep && !t->broken && flush_pages(t, false, 0) == 0 && t->ndirty == 0 &&
      t->al_n) {
    pthread_mutex_lock(&t->wmu);
    if (write_al_entry(t, NULL, 0, t->al_seq + 1) == 0)
      t->al_seq++;
    pthread_mutex_unlock(&t->wmu);
  }
  reloc_drop(t, true);               /* prepared for a relocation that never came */
  if (t->fd >= 0)
    close(t->fd);
  ep_free(t->ep, t->nblocks);
  if (t->al_idx)
    munmap(t->al_idx, (size_t)t->nextents * 2);
  free(t->dirty);
  free(t->pend);
  free(t->path);
  free(t->disk_id);
  free(t->reset_reason);
  free(t->note);
  pthread_mutex_destroy(&t->mu);
  pthread_mutex_destroy(&t->wmu);
  pthread_cond_destroy(&t->cv);
  pthread_rwlock_destroy(&t->shape);
  free(t);
}

size_t cbt_memory_bytes(const struct cbt *t)
{
  return sizeof *t + t->ep_bytes + t->cappend * sizeof *t->pend + strlen(t->path) + 1 +
         strlen(t->disk_id) + 1 + (t->reset_reason ? strlen(t->reset_reason) + 1 : 0) +
         (size_t)t->nextents * 2 + (size_t)t->npages;
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

void cbt_internal_set_al_limit(struct cbt *t, size_t n)
{
  pthread_mutex_lock(&t->mu);
  t->al_limit = n < 1 ? 1 : n > CTK_AL_MAX ? CTK_AL_MAX : n;
  pthread_mutex_unlock(&t->mu);
}

uint64_t cbt_internal_overreport_bound(const struct cbt *t)
{
  return ((uint64_t)t->al_limit << t->al_shift) +
         ((uint64_t)CTK_PAGES_INFLIGHT * CTK_BPP << t->gshift);
}

/* ---- writing in place -------------------------------------------------------------------- */

static int broken_error(struct cbt *t);
static int broken_error_unlocked(struct cbt *t);

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

struct cbt_io_hooks cbt_io = { pwrite, fdatasync, 1000 };

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

/* A failed fdatasync: nothing written since the last good one can be trusted to be there,
 * and the kernel may have dropped the dirty pages: the tracker is broken (sticky). */
static int sync_failed(struct cbt *t, int e, const char *what)
{
  int rc = svm_error(e, "%s: fdatasync after writing %s: %s", t->path, what, strerror(e));
  pthread_mutex_lock(&t->mu);
  if (!t->broken) {
    t->broken = rc;
    snprintf(t->broken_msg, sizeof t->broken_msg, "%s", svm_last_error());
  }
  pthread_mutex_unlock(&t->mu);
  return rc;
}

/* Write page pno (the epochs in memory, blocks [r0, r1) at epoch e) into the copy that is not
 * its newest valid one. Called with wmu held. */
static int write_page(struct cbt *t, uint64_t pno, uint64_t r0, uint64_t r1, uint16_t e,
                      uint8_t *cp, uint16_t *vals)
{
  uint64_t off = ctk_page_off(pno, 0), seq[2] = { 0, 0 };
  int rc = pread_all(t->fd, cp, 2 * CTK_PAGE, off);
  if (rc < 0)
    return svm_error(-rc, "%s: reading page %" PRIu64 ": %s", t->path, pno, strerror(-rc));
  int v0 = ctk_check_page(&t->h, pno, cp, &seq[0]);
  int v1 = ctk_check_page(&t->h, pno, cp + CTK_PAGE, &seq[1]);
  /* An invalid copy is the target (so the pair becomes whole again), else the older one. */
  int target = v0 <= 0 ? 0 : v1 <= 0 ? 1 : seq[1] > seq[0] ? 0 : 1;
  uint64_t next = (v0 > 0 ? seq[0] : 0) > (v1 > 0 ? seq[1] : 0) ? seq[0] : (v1 > 0 ? seq[1] : 0);

  uint64_t b0 = pno * CTK_BPP, b1 = b0 + ctk_page_nblocks(t->nblocks, pno);
  for (uint64_t b = b0; b < b1; b++)
    vals[b - b0] = b >= r0 && b < r1 ? e : __atomic_load_n(&t->ep[b], __ATOMIC_ACQUIRE);
  ctk_encode_page(&t->h, pno, next + 1, vals, (size_t)(b1 - b0), cp);
  rc = pwrite_all(t->fd, cp, CTK_PAGE, off + (uint64_t)target * CTK_PAGE);
  if (rc < 0)
    return svm_error(-rc, "%s: writing page %" PRIu64 ": %s%s", t->path, pno, strerror(-rc),
                     rc == -ENOSPC || rc == -EDQUOT ? " (the datastore is full: free space; "
                     "tracking resumes by itself)" : "");
  return 0;
}

/* Write up to CTK_PAGES_INFLIGHT pages, then fdatasync. wmu held. */
static int write_pages(struct cbt *t, const uint64_t *pages, size_t n, uint64_t r0,
                       uint64_t r1, uint16_t e)
{
  uint8_t *cp = malloc(2 * CTK_PAGE);
  uint16_t *vals = malloc(CTK_BPP * 2);
  int rc = 0;
  if (!cp || !vals)
    rc = svm_error(ENOMEM, "%s: no memory to write pages", t->path);
  for (size_t i = 0; i < n && rc == 0; i++)
    rc = write_page(t, pages[i], r0, r1, e, cp, vals);
  free(cp);
  free(vals);
  if (rc == 0 && n && cbt_io.fdatasync(t->fd) < 0)
    rc = sync_failed(t, errno, "data pages");
  return rc;
}

static int write_al_entry(struct cbt *t, const uint32_t *al, size_t n, uint64_t seq)
{
  uint8_t *entry = malloc(CTK_AL_ENTRY);
  if (!entry)
    return svm_error(ENOMEM, "no memory");
  ctk_encode_al(&t->h, seq, al, n, entry);
  int rc = pwrite_all(t->fd, entry, CTK_AL_ENTRY, ctk_al_off(seq));
  free(entry);
  if (rc < 0)
    return svm_error(-rc, "%s: writing the activity log: %s%s", t->path, strerror(-rc),
                     rc == -ENOSPC || rc == -EDQUOT ? " (the datastore is full: free space; "
                     "tracking resumes by itself)" : "");
  if (cbt_io.fdatasync(t->fd) < 0)
    return sync_failed(t, errno, "the activity log");
  return 0;
}

static void set_dirty(struct cbt *t, uint64_t pno)
{
  if (t->reloc_dirty)
    t->reloc_dirty[pno] = 1;
  if (!t->dirty[pno]) {
    t->dirty[pno] = 1;
    t->ndirty++;
  }
}

/* The dirty pages of the least recently used hot extents, the next to be evicted, once the
 * set is 3/4 full; none before. A dirty page is already covered by the log, and recovery puts
 * every logged extent in the open epoch whatever its page says, so writing it early buys
 * nothing after a crash, and it costs the datastore a write and an fdatasync, which the cold
 * epoch after a change ID (every block dirty again) would pay beside the guest's writes. What
 * it does buy is a cheap eviction: the victims' pages are clean, and the mark that evicts
 * them waits for one fdatasync (the entry's), not two (DRBD writes its bitmap at eviction for
 * the same reason). mu held; the chosen pages are taken out of the dirty set. */
static size_t pick_ahead(struct cbt *t, uint64_t *pages, size_t max)
{
  size_t n = 0;
  uint64_t after = 0;
  if (t->al_n * 4 < t->al_limit * 3)
    return 0;
  /* Stamps are distinct (al_clock), so "the oldest after the last one" walks the LRU order
   * without sorting: AHEAD_EXTENTS x 1920 compares a round at most. */
  for (unsigned k = 0; k < AHEAD_EXTENTS && n < max; k++) {
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < t->al_n; i++)
      if (t->al_stamp[i] > after && (best == SIZE_MAX || t->al_stamp[i] < t->al_stamp[best]))
        best = i;
    if (best == SIZE_MAX)
      break;
    after = t->al_stamp[best];
    uint64_t x = t->al_ext[best], b0 = x << ext_per(t), b1 = ext_end(t, x);
    for (uint64_t p = b0 / CTK_BPP; p <= (b1 - 1) / CTK_BPP && n < max; p++)
      if (t->dirty[p]) {
        t->dirty[p] = 0;
        t->ndirty--;
        pages[n++] = p;
      }
  }
  return n;
}

/* One batch of the page writer: any dirty pages (round robin), or with ahead only those that
 * the next evictions need (pick_ahead). shape (read) and wmu held. *more: more to write. */
static int flush_batch(struct cbt *t, bool ahead, bool *more)
{
  uint64_t pages[CTK_PAGES_INFLIGHT];
  size_t n = 0;
  pthread_mutex_lock(&t->mu);
  int rc = t->broken;
  if (rc == 0 && ahead)
    n = pick_ahead(t, pages, CTK_PAGES_INFLIGHT);
  /* Round robin from where the last batch stopped, so that every dirty page gets its turn. */
  for (uint64_t k = 0; rc == 0 && !ahead && k < t->npages && n < CTK_PAGES_INFLIGHT &&
       t->ndirty; k++) {
    uint64_t p = (t->flush_pos + k) % t->npages;
    if (t->dirty[p]) {
      t->dirty[p] = 0;
      t->ndirty--;
      pages[n++] = p;
      t->flush_pos = p + 1;
    }
  }
  pthread_mutex_unlock(&t->mu);
  if (rc)
    return broken_error_unlocked(t);
  rc = write_pages(t, pages, n, 0, 0, 0);
  pthread_mutex_lock(&t->mu);
  if (rc < 0)
    for (size_t i = 0; i < n; i++)
      set_dirty(t, pages[i]);
  *more = t->ndirty > 0 && rc == 0 && (!ahead || n == CTK_PAGES_INFLIGHT);
  pthread_mutex_unlock(&t->mu);
  return rc;
}

static int flush_pages(struct cbt *t, bool ahead, unsigned max_batches)
{
  bool more = true;
  int rc = 0;
  pthread_rwlock_rdlock(&t->shape);
  for (unsigned i = 0; more && rc == 0 && (max_batches == 0 || i < max_batches); i++) {
    pthread_mutex_lock(&t->wmu);
    rc = flush_batch(t, ahead, &more);
    pthread_mutex_unlock(&t->wmu);
  }
  pthread_rwlock_unlock(&t->shape);
  return rc;
}

static void lock_exclusive(struct cbt *t);
static void unlock_exclusive(struct cbt *t);

/* The tracker goes on in fd, a whole file just written by ctk_write_new() with the hot set
 * logged (entry 1) and every page written: nothing dirty. Exclusive lock held. */
static void use_new_file(struct cbt *t, int fd)
{
  close(t->fd);
  t->fd = fd;
  t->al_seq = 1;
  memset(t->dirty, 0, t->npages);
  t->ndirty = 0;
}

/* Forget a prepared relocation; its file removed too when `remove` (mu or the exclusive lock
 * held). */
static void reloc_drop(struct cbt *t, bool remove)
{
  if (!t->reloc_path)
    return;
  if (t->reloc_fd >= 0)
    close(t->reloc_fd);
  if (remove)
    unlink(t->reloc_path);
  free(t->reloc_path);
  free(t->reloc_dirty);
  t->reloc_path = NULL;
  t->reloc_dirty = NULL;
  t->reloc_fd = -1;
}

int cbt_relocate_prepare(struct cbt *t, const char *path)
{
  char *np = strdup(path);
  uint8_t *rd = calloc(t->npages ? t->npages : 1, 1);
  struct ctk_header h;
  int fd;

  if (np == NULL || rd == NULL) {
    free(np);
    free(rd);
    return svm_error(ENOMEM, "%s: no memory", path);
  }
  /* shape (read): no compaction or resize swaps the epochs while they are read; marks go on */
  pthread_rwlock_rdlock(&t->shape);
  pthread_mutex_lock(&t->mu);
  reloc_drop(t, true);
  if (t->broken) {
    int rc = broken_error(t);
    pthread_mutex_unlock(&t->mu);
    pthread_rwlock_unlock(&t->shape);
    free(np);
    free(rd);
    return rc;
  }
  /* From here every mark also lands in rd: what the file below misses, the relocation
   * rewrites. The log is left empty: the relocation writes the hot set of its moment. */
  t->reloc_dirty = rd;
  h = t->h;
  h.gen++;
  pthread_mutex_unlock(&t->mu);
  fd = ctk_write_new(np, &h, t->ep, NULL, NULL, NULL, 0);
  pthread_mutex_lock(&t->mu);
  if (fd < 0) {
    t->reloc_dirty = NULL;
    free(rd);
    free(np);
  } else {
    t->reloc_path = np;
    t->reloc_fd = fd;
    t->reloc_gen = h.gen;
  }
  pthread_mutex_unlock(&t->mu);
  pthread_rwlock_unlock(&t->shape);
  return fd < 0 ? fd : 0;
}

void cbt_relocate_cancel(struct cbt *t)
{
  pthread_mutex_lock(&t->mu);
  reloc_drop(t, true);
  pthread_mutex_unlock(&t->mu);
}

/* The prepared file made current: the pages marked since it was written (copy A, which it
 * wrote with sequence 1 beside copy B's 2), the header and a log entry of the hot set, one
 * fdatasync; every page of it then matches memory. Exclusive lock held. */
static int reloc_commit(struct cbt *t, struct ctk_header *h)
{
  uint8_t *buf = malloc(CTK_AL_ENTRY);
  int rc = 0;

  if (buf == NULL)
    return svm_error(ENOMEM, "%s: no memory", t->reloc_path);
  *h = t->h;
  h->gen = t->reloc_gen + 1;
  for (uint64_t p = 0; p < t->npages && rc == 0; p++) {
    if (!t->reloc_dirty[p])
      continue;
    ctk_encode_page(h, p, 3, t->ep + p * CTK_BPP, ctk_page_nblocks(t->nblocks, p), buf);
    rc = pwrite_all(t->reloc_fd, buf, CTK_PAGE, ctk_page_off(p, 0));
  }
  if (rc == 0) {
    ctk_encode_header(h, buf);
    rc = pwrite_all(t->reloc_fd, buf, CTK_PAGE, ctk_header_off(h->gen));
  }
  if (rc == 0) {
    ctk_encode_al(h, 2, t->al_ext, t->al_n, buf);
    rc = pwrite_all(t->reloc_fd, buf, CTK_AL_ENTRY, ctk_al_off(2));
  }
  free(buf);
  if (rc == 0 && cbt_io.fdatasync(t->reloc_fd) < 0)
    rc = -errno;
  if (rc < 0)
    return svm_error(-rc, "%s: writing the prepared file: %s", t->reloc_path, strerror(-rc));
  return 0;
}

int cbt_relocate(struct cbt *t, const char *path)
{
  char *np = strdup(path);
  int rc = 0;

  if (np == NULL)
    return svm_error(ENOMEM, "%s: no memory", path);
  lock_exclusive(t);
  if (t->broken) {
    rc = broken_error(t);
  } else {
    struct ctk_header h;
    int fd = -1;
    bool prepared = false, mine = t->reloc_path && strcmp(t->reloc_path, path) == 0;
    if (mine) {
      if (reloc_commit(t, &h) == 0) {
        fd = t->reloc_fd;
        t->reloc_fd = -1;
        prepared = true;
      } else {                      /* the whole file instead, renamed over the prepared one */
        fprintf(stderr, "svmd: change tracking: %s; writing the whole file\n",
                svm_last_error());
        svm_error_clear();
      }
    }
    reloc_drop(t, !mine);           /* the whole file below is renamed over a prepared one */
    if (fd < 0) {
      /* As a compaction does, into another file: the epochs from memory (exact, whatever the
       * old file still lacks), the hot set logged, every page written and synced. */
      h = t->h;
      h.gen++;
      fd = ctk_write_new(np, &h, t->ep, NULL, NULL, t->al_ext, t->al_n);
    }
    if (fd < 0) {
      rc = fd;
    } else {
      use_new_file(t, fd);
      if (prepared)
        t->al_seq = 2;              /* the prepared file: entry 1 empty, 2 the hot set */
      free(t->path);
      t->path = np;
      np = NULL;
      t->h = h;
    }
  }
  unlock_exclusive(t);
  free(np);
  return rc;
}

int cbt_internal_flush(struct cbt *t, bool ahead, unsigned max_batches)
{
  return flush_pages(t, ahead, max_batches);
}

/* The page writer: one thread for every tracker of the process (32 disks must not cost 32
 * threads), started with the first tracker and stopped with the last. The log already makes
 * the marks safe; the write-back only keeps evictions cheap, so each round writes only the
 * pages the next evictions need (pick_ahead), a bounded share per tracker (32 pages, 4
 * fdatasyncs): it must not load the datastore even when a guest dirties every page of a large
 * disk each second, and it writes nothing while the hot set has room. A failure waits a round.
 * The list and the rounds are under writer_mu, so a tracker unlinked under it is never touched
 * again. */
static pthread_mutex_t writer_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t writer_cv;
static pthread_once_t writer_once = PTHREAD_ONCE_INIT;
static struct cbt *writer_list;
static pthread_t writer_thread;
static bool writer_running;
static unsigned writer_gen;       /* a thread runs while the generation it started with lasts */

static void writer_init(void)
{
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&writer_cv, &ca);
  pthread_condattr_destroy(&ca);
}

static void *writer_main(void *arg)
{
  unsigned gen = (unsigned)(uintptr_t)arg;

  pthread_mutex_lock(&writer_mu);
  while (writer_gen == gen) {
    unsigned period = 1000;
    for (struct cbt *t = writer_list; t; t = t->writer_next)
      period = t->flush_ms < period ? t->flush_ms : period;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += period / 1000;
    ts.tv_nsec += (long)(period % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&writer_cv, &writer_mu, &ts);
    for (struct cbt *t = writer_list; t && writer_gen == gen; t = t->writer_next) {
      pthread_mutex_lock(&t->mu);
      bool work = t->ndirty && !t->broken;
      pthread_mutex_unlock(&t->mu);
      if (work)
        flush_pages(t, true, FLUSH_ROUND_BATCHES);
    }
  }
  pthread_mutex_unlock(&writer_mu);
  return NULL;
}

static void writer_add(struct cbt *t)
{
  pthread_once(&writer_once, writer_init);
  pthread_mutex_lock(&writer_mu);
  if (!writer_running &&
      pthread_create(&writer_thread, NULL, writer_main, (void *)(uintptr_t)writer_gen) == 0)
    writer_running = true;
  if (writer_running) {
    t->writer_next = writer_list;
    writer_list = t;
    t->flusher_on = true;
  }
  pthread_mutex_unlock(&writer_mu);
}

static void writer_remove(struct cbt *t)
{
  pthread_t tid;
  bool stop;

  pthread_mutex_lock(&writer_mu);
  for (struct cbt **pp = &writer_list; *pp; pp = &(*pp)->writer_next)
    if (*pp == t) {
      *pp = t->writer_next;
      break;
    }
  t->flusher_on = false;
  stop = writer_list == NULL && writer_running;
  if (stop) {
    writer_gen++;                 /* the running thread ends; a new one may start meanwhile */
    writer_running = false;
    tid = writer_thread;
  }
  pthread_cond_broadcast(&writer_cv);
  pthread_mutex_unlock(&writer_mu);
  if (stop)
    pthread_join(tid, NULL);
}

/* ---- marks ----------------------------------------------------------------------------- */

static int broken_error(struct cbt *t)
{
  return svm_error(-t->broken, "%s (the tracker can no longer make marks durable: stop "
                   "writes, reopen it; it restarts if the file is damaged)", t->broken_msg);
}

static int broken_error_unlocked(struct cbt *t)
{
  pthread_mutex_lock(&t->mu);
  int rc = broken_error(t);
  pthread_mutex_unlock(&t->mu);
  return rc;
}

/* Mark blocks [b0, b1) of a hot extent in the open epoch. mu held. */
static void store_marks(struct cbt *t, uint64_t b0, uint64_t b1, uint16_t cur)
{
  for (uint64_t b = b0; b < b1; b++)
    if (__atomic_load_n(&t->ep[b], __ATOMIC_RELAXED) != cur) {
      __atomic_store_n(&t->ep[b], cur, __ATOMIC_RELEASE);
      set_dirty(t, b / CTK_BPP);
    }
}

static int push_ext(struct cbt *t, uint32_t x)
{
  if (t->npend == t->cappend) {
    size_t cap = t->cappend ? 2 * t->cappend : 16;
    uint32_t *p = realloc(t->pend, cap * sizeof *p);
    if (!p)
      return svm_error(ENOMEM, "%s: no memory to queue a mark", t->path);
    t->pend = p;
    t->cappend = cap;
  }
  t->pend[t->npend++] = x;
  return 0;
}

static int cmp_u32(const void *a, const void *b)
{
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

/* The leader: write one log entry holding the hot set plus the queued extents, evicting the
 * least recently used ones (their dirty pages written first) when the set is full. Called
 * and returns with mu held; drops it for the I/O. */
static void lead_batch(struct cbt *t)
{
  uint32_t *q = t->pend, victims[AL_EVICT_MAX], *entry = NULL;
  size_t nq = t->npend, nadd = 0, nvict = 0, nvp = 0, n = 0;
  uint64_t vpages[2 * AL_EVICT_MAX];
  uint64_t g = t->batch_gen++;
  int rc = 0;

  t->pend = NULL;
  t->npend = t->cappend = 0;
  t->committing = true;
  qsort(q, nq, sizeof *q, cmp_u32);
  for (size_t i = 0; i < nq; i++)
    if ((nadd == 0 || q[nadd - 1] != q[i]) && t->al_idx[q[i]] == 0)
      q[nadd++] = q[i];
  size_t room = t->al_limit > t->al_n ? t->al_limit - t->al_n : 0;
  if (nadd > room) {
    nvict = nadd - room < AL_EVICT_MAX ? nadd - room : AL_EVICT_MAX;
    if (nvict > t->al_n)
      nvict = t->al_n;
    if (t->al_n > t->al_limit && nvict < AL_EVICT_MAX)
      nvict = AL_EVICT_MAX < t->al_n ? AL_EVICT_MAX : t->al_n;
    if (nadd > room + nvict)
      nadd = room + nvict;                    /* the rest waits for the next entry */
    if (t->al_n + nadd - nvict > CTK_AL_MAX)
      nadd = CTK_AL_MAX + nvict - t->al_n;
  }
  /* Evict: out of the hot set now (no new mark can land in it), pages below, then the log. */
  for (size_t v = 0; v < nvict; v++) {
    size_t best = 0;
    for (size_t i = 1; i < t->al_n; i++)
      if (t->al_stamp[i] < t->al_stamp[best])
        best = i;
    victims[v] = t->al_ext[best];
    al_remove_at(t, best);
    uint64_t b0 = (uint64_t)victims[v] << ext_per(t), b1 = ext_end(t, victims[v]);
    for (uint64_t p = b0 / CTK_BPP; p <= (b1 - 1) / CTK_BPP; p++)
      if (t->dirty[p]) {
        t->dirty[p] = 0;
        t->ndirty--;
        vpages[nvp++] = p;
      }
  }
  entry = malloc((t->al_n + nadd + 1) * sizeof *entry);
  if (!entry) {
    rc = svm_error(ENOMEM, "%s: no memory for the activity log", t->path);
  } else {
    memcpy(entry, t->al_ext, t->al_n * sizeof *entry);
    memcpy(entry + t->al_n, q, nadd * sizeof *entry);
    n = t->al_n + nadd;
  }
  uint64_t seq = t->al_seq + 1;
  pthread_mutex_unlock(&t->mu);

  if (rc == 0 && (nadd || nvict)) {           /* else everything queued is hot already */
    pthread_mutex_lock(&t->wmu);
    rc = write_pages(t, vpages, nvp, 0, 0, 0);
    if (rc == 0)
      rc = write_al_entry(t, entry, n, seq);
    pthread_mutex_unlock(&t->wmu);
  }

  pthread_mutex_lock(&t->mu);
  if (rc == 0) {
    if (nadd || nvict)
      t->al_seq = seq;
    for (size_t i = 0; i < nadd; i++)
      al_add(t, q[i]);
  } else {
    /* Still in the durable log (the failed entry, if it landed at all, is the torn one). */
    for (size_t v = 0; v < nvict; v++)
      if (t->al_idx[victims[v]] == 0)
        al_add(t, victims[v]);
    for (size_t i = 0; i < nvp; i++)
      set_dirty(t, vpages[i]);
    t->fail_gen = g;
    t->fail_rc = rc;
    snprintf(t->fail_msg, sizeof t->fail_msg, "%s", svm_last_error());
  }
  free(entry);
  free(q);
  t->done_gen = g;
  t->committing = false;
  pthread_cond_broadcast(&t->cv);
}

/* A wide mark (TRIM of a large range, the whole disk): its pages written and fdatasync'd,
 * CTK_PAGES_INFLIGHT at a time, then published; no log entry. */
static int mark_direct(struct cbt *t, uint64_t b0, uint64_t last)
{
  uint64_t pages[CTK_PAGES_INFLIGHT];
  int rc = 0;
  pthread_rwlock_rdlock(&t->shape);
  /* wmu across the whole mark: no lazy write may put an older epoch back into these pages
   * between our write and our publication. */
  pthread_mutex_lock(&t->wmu);
  pthread_mutex_lock(&t->mu);
  uint16_t cur = t->cur;
  if (t->broken)
    rc = broken_error(t);
  pthread_mutex_unlock(&t->mu);
  for (uint64_t p = b0 / CTK_BPP; rc == 0 && p <= last / CTK_BPP;) {
    size_t n = 0;
    while (n < CTK_PAGES_INFLIGHT && p <= last / CTK_BPP)
      pages[n++] = p++;
    rc = write_pages(t, pages, n, b0, last + 1, cur);
  }
  if (rc == 0) {
    for (uint64_t b = b0; b <= last; b++)
      __atomic_store_n(&t->ep[b], cur, __ATOMIC_RELEASE);
    pthread_mutex_lock(&t->mu);
    for (uint64_t p = b0 / CTK_BPP; t->reloc_dirty && p <= last / CTK_BPP; p++)
      t->reloc_dirty[p] = 1;                /* a prepared relocation lacks them too */
    pthread_mutex_unlock(&t->mu);
  }
  pthread_mutex_unlock(&t->wmu);
  pthread_rwlock_unlock(&t->shape);
  return rc;
}

/* Out of line, so that the fast path of cbt_mark() needs no stack frame. */
__attribute__((noinline)) static int mark_slow(struct cbt *t, uint64_t b, uint64_t last)
{
  if (ext_of(t, last) - ext_of(t, b) >= DIRECT_EXTENTS)
    return mark_direct(t, b, last);
  int rc = 0;
  unsigned rounds = 0;
  pthread_mutex_lock(&t->mu);
  while (b <= last) {
    if (t->broken) {
      rc = broken_error(t);
      break;
    }
    uint16_t cur = t->cur;
    if (__atomic_load_n(&t->ep[b], __ATOMIC_RELAXED) == cur) {
      b++;
      continue;
    }
    uint64_t x = ext_of(t, b), xe = ext_end(t, x);
    if (xe > last + 1)
      xe = last + 1;
    if (t->al_idx[x]) {                       /* hot: no I/O */
      t->al_stamp[t->al_idx[x] - 1] = ++t->al_clock;
      store_marks(t, b, xe, cur);
      b = xe;
      continue;
    }
    /* Cold: this extent and the other cold ones of the range go into the next entry. */
    for (uint64_t y = x; y <= ext_of(t, last) && rc == 0; y++)
      if (t->al_idx[y] == 0)
        rc = push_ext(t, (uint32_t)y);
    if (rc < 0)
      break;
    uint64_t gen = t->batch_gen;
    while (t->done_gen < gen) {
      if (t->committing)
        pthread_cond_wait(&t->cv, &t->mu);
      else
        lead_batch(t);
    }
    if (t->fail_gen >= gen && t->al_idx[x] == 0) {
      rc = svm_error(-t->fail_rc, "%s", t->fail_msg);
      break;
    }
    if (++rounds > 1000) {                    /* evicted again before we could mark: never */
      rc = svm_error(EAGAIN, "%s: the activity log keeps evicting extent %" PRIu64, t->path, x);
      break;
    }
  }
  pthread_mutex_unlock(&t->mu);
  return rc;
}

/* The non-blocking middle path of cbt_mark_try(): every extent of the range hot -> mark them
 * under the mutex (if it is free right now), no I/O. */
__attribute__((noinline)) static int mark_try_hot(struct cbt *t, uint64_t b, uint64_t last)
{
  if (ext_of(t, last) - ext_of(t, b) >= DIRECT_EXTENTS || pthread_mutex_trylock(&t->mu) != 0)
    return 0;
  int r = 1;
  if (t->broken) {
    r = 0;
  } else {
    for (uint64_t x = ext_of(t, b); x <= ext_of(t, last); x++)
      if (t->al_idx[x] == 0) {
        r = 0;
        break;
      }
  }
  if (r) {
    uint16_t cur = t->cur;
    for (uint64_t x = ext_of(t, b); x <= ext_of(t, last); x++)
      t->al_stamp[t->al_idx[x] - 1] = ++t->al_clock;
    store_marks(t, b, last + 1, cur);
  }
  pthread_mutex_unlock(&t->mu);
  return r;
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
  int r = scan_marked(t, offset, length, &first, &last);
  if (__builtin_expect(r != 0, 1))
    return r;
  return mark_try_hot(t, first, last);
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
  int rc = pwrite_all(t->fd, page, CTK_PAGE, ctk_header_off(h->gen));
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
  reloc_drop(t, true);                /* renumbered epochs: a prepared relocation is stale */
  uint16_t cur = t->cur, keep = t->limit / 2;
  struct compact_map m = { .k = (uint16_t)(cur - keep) };
  struct ctk_header h = t->h;
  h.gen++;
  h.base = t->h.base + m.k - 1;
  h.floor = t->h.base + m.k > t->h.floor ? t->h.base + m.k : t->h.floor;
  h.cur = (uint32_t)(cur - m.k + 2);
  int fd = ctk_write_new(t->path, &h, t->ep, map_compact, &m, t->al_ext, t->al_n);
  if (fd < 0)
    return fd;
  use_new_file(t, fd);
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
  /* The hot set stays: the new epoch's first writes cost no I/O. */
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
  reloc_drop(t, true);                /* another size: a prepared relocation is stale */
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
  h.al_shift = ctk_al_shift(new_size);
  /* The hot set goes along, minus the extents past the new end. */
  uint32_t al[CTK_AL_MAX];
  size_t aln = 0;
  uint64_t nx = ((new_size - 1) >> h.al_shift) + 1;
  for (size_t i = 0; i < t->al_n && h.al_shift == t->al_shift; i++)
    if (t->al_ext[i] < nx)
      al[aln++] = t->al_ext[i];
  int fd = ctk_write_new(t->path, &h, ep, NULL, NULL, al, aln);
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
  t->al_seq = 1;
  if ((rc = al_setup(t)) == 0)
    rc = dirty_setup(t, NULL);
out:
  unlock_exclusive(t);
  return rc;
}
