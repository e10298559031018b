/* The copy engine: a fixed set of slots, each with one request-sized buffer, walks the source's
 * data extents. A slot reads a chunk from the source end, checks it for zeros at 4 KiB
 * granularity, and writes only the non-zero runs to the destination end (zero runs are skipped
 * when the destination already reads as zeros, else sent as zero requests).
 *
 * Callbacks only record results and queue the slot on a ready list; the loop in
 * svm_copy_run() does all the work, so no end is re-entered from its own callback.
 *
 * Writes are issued in disk order (issue_in_order()). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common/error.h"
#include "svm/copy/copy.h"
#include "svm/disk/zero.h"

enum {
  MAX_ZERO_REQUEST = 1 << 30,
  HUGE = 2 << 20,             /* transparent huge page size on x86-64 and arm64 */
};

enum slot_state { SLOT_FREE, SLOT_READING, SLOT_READ_DONE, SLOT_WRITING, SLOT_DONE };

struct slot {
  struct svm_copy *c;
  enum slot_state state;
  char *buf;
  uint64_t *zmap;             /* the source's read_sparse: blocks that read as zeros, unfilled */
  uint64_t off, len;          /* the chunk of the disk this slot handles */
  bool zero_only;             /* a zero extent for a destination that needs it said: no read */
  uint64_t wpos;              /* how much of the chunk has been dealt with (written/skipped) */
  unsigned pending;           /* writes or zero requests in flight */
  bool blocked;               /* on the blocked list: the destination was full */
  uint64_t seq;               /* order in which slots were started (= disk order) */
  int64_t read_res;
  struct slot *next;          /* free, ready or blocked list */
};

struct svm_copy {
  struct svm_copy_end *src, *dst;
  struct svm_copy_options o;
  const struct svm_extent_list *map;
  struct svm_extent_list own_map;   /* when the caller gave none */
  size_t ext_idx;
  uint64_t ext_pos;
  uint64_t size, request;
  struct slot *slots;
  unsigned nslots;
  char *arena;                /* all slot buffers */
  uint64_t *zmaps;            /* all slot zmaps (read_sparse sources), zmap_words each */
  size_t zmap_words;
  unsigned active;            /* slots not free */
  struct slot *free_list, *ready, *blocked;
  /* Slots whose read finished early wait in parked[seq % nslots] until write_seq reaches
   * them (issue_in_order()). */
  struct slot **parked;
  uint64_t next_seq, write_seq;
  char *zero_buf;             /* for destinations without a zero operation */
  uint64_t done_bytes;
  struct svm_copy_counters n;
  bool ran;
  int err;
  char errmsg[512];
};

static void fail(struct svm_copy *c, int r)
{
  if (c->err == 0) {
    c->err = r < 0 ? r : -EIO;
    snprintf(c->errmsg, sizeof c->errmsg, "%s", svm_last_error());
  }
}

static void push(struct slot **list, struct slot *s)
{
  s->next = *list;
  *list = s;
}

static struct slot *pop(struct slot **list)
{
  struct slot *s = *list;
  if (s != NULL)
    *list = s->next;
  return s;
}

static void done(struct slot *s)
{
  s->state = SLOT_DONE;
  push(&s->c->ready, s);
}

static void progress(struct svm_copy *c, uint64_t n)
{
  c->done_bytes += n;
  if (c->o.progress)
    c->o.progress(c->o.progress_opaque, c->done_bytes, c->size);
}

/* ---- callbacks: record, queue, nothing else ------------------------------------------------ */

static void on_read(void *opaque, int64_t res)
{
  struct slot *s = opaque;
  s->read_res = res;
  s->state = SLOT_READ_DONE;
  push(&s->c->ready, s);
}

/* What an end adds to an I/O error that means its connection is gone: a request in flight
 * when the server died fails with the connection's errno, before the end itself notices. */
static const char *lost_hint(const struct svm_copy_end *e, int64_t res)
{
  bool lost = res == -ENOTCONN || res == -ECONNRESET || res == -EPIPE || res == -ESHUTDOWN;
  return lost && e->lost_hint != NULL ? e->lost_hint : "";
}

static void write_done(struct slot *s, int64_t res, const char *what)
{
  struct svm_copy *c = s->c;

  if (res < 0 && c->err == 0)
    fail(c, svm_error((int)-res, "%s: %s near offset %" PRIu64 " failed: %s%s", c->dst->name,
                      what, s->off, strerror((int)-res),
                      res == -ENOSPC ? " (the destination is full: free some space)"
                                     : lost_hint(c->dst, res)));
  s->pending--;
  /* Done when all is written, or, after a failure, as soon as nothing is in flight. */
  if (s->pending == 0 && !s->blocked && (s->wpos == s->len || c->err != 0))
    done(s);
}

static void on_write(void *opaque, int64_t res)
{
  write_done(opaque, res, "write");
}

static void on_zero(void *opaque, int64_t res)
{
  write_done(opaque, res, "zero");
}

/* ---- reads and writes ------------------------------------------------------------------------ */

/* Issue one write (or zero request) for [pos, pos+len) of the slot. -EAGAIN: the end is full. */
static int issue(struct svm_copy *c, struct slot *s, uint64_t pos, uint64_t len, bool zero)
{
  struct svm_copy_end *d = c->dst;
  uint64_t off = s->off + pos;
  int r;

  if (zero && d->ops->zero != NULL)
    r = d->ops->zero(d, off, len, c->o.zero_allocates, on_zero, s);
  else
    r = d->ops->write(d, zero ? c->zero_buf : s->buf + pos, len, off, zero ? on_zero : on_write,
                      s);
  if (r < 0)
    return r;
  s->pending++;
  return 0;
}

/* The next run of a zero-only slot: as large as a zero request may be, or one buffer of zeros
 * at a time when the destination has no zero operation. */
static uint64_t zero_run(const struct svm_copy *c, uint64_t left)
{
  uint64_t z = left > MAX_ZERO_REQUEST ? MAX_ZERO_REQUEST : left;

  return c->dst->ops->zero == NULL && z > c->request ? c->request : z;
}

/* From the slot's wpos, at most left bytes: how many whole blocks the source said read as
 * zeros (want_zero), or how far it is to the next such block (!want_zero; left when none). */
static uint64_t zmap_span(const struct slot *s, uint64_t left, bool want_zero)
{
  uint64_t n = 0;

  if (s->zmap == NULL || s->wpos % SVM_COPY_ZERO_BLOCK != 0)
    return want_zero ? 0 : left;
  for (uint64_t b = s->wpos / SVM_COPY_ZERO_BLOCK; n < left; b++) {
    bool zero = (s->zmap[b / 64] >> (b % 64)) & 1;
    if (zero != want_zero)
      break;
    n += SVM_COPY_ZERO_BLOCK;
  }
  return n < left ? n : left;
}

/* Issue the next run of the slot; sets *n to the bytes it covers. */
static int next_run(struct svm_copy *c, struct slot *s, uint64_t *n)
{
  uint64_t left = s->len - s->wpos;
  const char *p = s->buf + s->wpos;

  uint64_t *count;
  bool zero = true;
  int r = 0;

  if (s->zero_only) {
    *n = zero_run(c, left);
    count = &c->n.bytes_zeroed;
  } else {
    /* blocks the source said read as zeros need no scan (nor hold them); the rest is
     * scanned, up to the next such block */
    uint64_t scan = zmap_span(s, left, false);
    count = &c->n.bytes_skipped_zero;   /* not written, even when said with a zero request */
    if (scan == 0)
      *n = zmap_span(s, left, true);
    else if ((*n = svm_zero_span(p, scan, SVM_COPY_ZERO_BLOCK, true)) == 0) {
      *n = svm_zero_span(p, scan, SVM_COPY_ZERO_BLOCK, false);
      count = &c->n.bytes_written;
      zero = false;
    }
  }
  if (!zero || s->zero_only || !c->o.dst_reads_zero)
    r = issue(c, s, s->wpos, *n, zero);
  if (r == 0)
    *count += *n;
  return r;
}

/* Write what the slot still has to write. Stops with the slot on the blocked list when the
 * destination is full. */
static int continue_writes(struct svm_copy *c, struct slot *s)
{
  s->state = SLOT_WRITING;
  while (s->wpos < s->len) {
    uint64_t n;
    int r = next_run(c, s, &n);
    if (r == -EAGAIN) {
      s->blocked = true;
      push(&c->blocked, s);
      return 0;
    }
    if (r < 0)
      return r;
    s->wpos += n;
  }
  if (s->pending == 0)
    done(s);
  return 0;
}

static int read_done(struct svm_copy *c, struct slot *s)
{
  s->wpos = 0;
  if (s->zero_only)
    return continue_writes(c, s);
  if (s->read_res < 0)
    return svm_error((int)-s->read_res, "%s: read at offset %" PRIu64 " failed: %s%s",
                     c->src->name, s->off, strerror((int)-s->read_res),
                     lost_hint(c->src, s->read_res));
  if ((uint64_t)s->read_res < s->len)   /* the source shrank: what is gone reads as zeros */
    memset(s->buf + s->read_res, 0, s->len - (uint64_t)s->read_res);
  c->n.bytes_read += s->len;
  return continue_writes(c, s);
}

/* Issue the writes of parked slots in disk order. Reads complete in any order; if their writes
 * went out in that order too, a file system that allocates at submission (ext4 and xfs do for
 * O_DIRECT) would build the file's extent tree out of order: leaves split half full, and the
 * thin result carries more metadata blocks than the same data written in order. Only the slot
 * at write_seq may issue; if the destination is full it stays blocked and the order waits
 * with it. */
static int issue_in_order(struct svm_copy *c)
{
  while (c->err == 0) {
    struct slot *s = c->parked[c->write_seq % c->nslots];
    int r;

    if (s == NULL || s->seq != c->write_seq)
      return 0;
    c->parked[c->write_seq % c->nslots] = NULL;
    r = read_done(c, s);
    if (r < 0) {
      if (s->pending == 0)
        done(s);
      return r;
    }
    if (s->blocked)
      return 0;                 /* continued from the blocked list, then write_seq moves on */
    c->write_seq++;
  }
  return 0;
}

/* ---- handing out work ---------------------------------------------------------------------- */

/* A zero extent: nothing to read. A destination that reads as zeros needs nothing written
 * either (and eager-zeroed files are filled by their owner afterwards). */
static int start_zero(struct svm_copy *c, uint64_t off, uint64_t left)
{
  if (c->o.dst_reads_zero) {
    c->ext_pos += left;
    progress(c, left);
    return 0;
  }
  struct slot *s = pop(&c->free_list);
  if (s == NULL)
    return -EAGAIN;
  uint64_t n = left > MAX_ZERO_REQUEST ? MAX_ZERO_REQUEST : left;
  *s = (struct slot){ .c = c, .buf = s->buf, .zmap = s->zmap, .off = off, .len = n,
                      .zero_only = true, .seq = c->next_seq++, .state = SLOT_READ_DONE };
  c->ext_pos += n;
  c->active++;
  push(&c->ready, s);           /* straight to writing, in its turn */
  return 1;
}

/* The caller's pace (svm_copy_options): -EAGAIN when the window is full, else the chunk size
 * for the next read in *chunk. */
static int paced(struct svm_copy *c, uint64_t *chunk)
{
  unsigned slots = c->nslots;
  uint64_t bytes = c->request;

  *chunk = c->request;
  if (c->o.pace == NULL)
    return 0;
  c->o.pace(c->o.pace_opaque, &slots, &bytes);
  slots = slots < 1 ? 1 : slots > c->nslots ? c->nslots : slots;
  bytes = bytes / SVM_COPY_ZERO_BLOCK * SVM_COPY_ZERO_BLOCK;
  *chunk = bytes < SVM_COPY_ZERO_BLOCK ? SVM_COPY_ZERO_BLOCK : bytes > c->request ? c->request
                                                                                  : bytes;
  return c->active >= slots ? -EAGAIN : 0;
}

static int start_read(struct svm_copy *c, uint64_t off, uint64_t left)
{
  uint64_t chunk;
  struct slot *s;

  if (paced(c, &chunk) < 0 || (s = pop(&c->free_list)) == NULL)
    return -EAGAIN;
  uint64_t n = left > chunk ? chunk : left;
  /* End chunks on chunk-size boundaries so that later chunks stay aligned. */
  if (n == chunk && off % chunk != 0)
    n = chunk - off % chunk;
  *s = (struct slot){ .c = c, .buf = s->buf, .zmap = s->zmap, .off = off, .len = n,
                      .seq = c->next_seq++, .state = SLOT_READING };
  c->ext_pos += n;
  c->active++;
  int r;
  if (s->zmap != NULL) {
    memset(s->zmap, 0, c->zmap_words * sizeof *s->zmap);
    r = c->src->ops->read_sparse(c->src, s->buf, n, off, s->zmap, on_read, s);
  } else {
    r = c->src->ops->read(c->src, s->buf, n, off, on_read, s);
  }
  if (r < 0)                    /* never reached the kernel or the server */
    done(s);
  return r < 0 ? r : 1;
}

/* Hand the next piece of work to a free slot. Returns 1 when started, 0 when there is none. */
static int start_next(struct svm_copy *c)
{
  while (c->ext_idx < c->map->n) {
    const struct svm_extent *e = &c->map->v[c->ext_idx];
    uint64_t left = e->len - c->ext_pos, off = e->off + c->ext_pos;
    int r;

    if (left == 0) {
      c->ext_idx++;
      c->ext_pos = 0;
      continue;
    }
    r = (e->flags & SVM_EXTENT_ZERO) ? start_zero(c, off, left) : start_read(c, off, left);
    if (r != 0)
      return r == -EAGAIN ? 0 : r;
  }
  return 0;
}

/* ---- the loop -------------------------------------------------------------------------------- */

/* Block until one of the ends has completed something and run its callbacks. */
static int wait_events(struct svm_copy *c)
{
  struct svm_copy_end *ends[2] = { c->src, c->dst }, *who[2];
  struct pollfd p[2];
  int n = 0, r;

  for (int i = 0; i < 2; i++) {
    if ((r = ends[i]->ops->poll_prepare(ends[i], &p[n])) < 0)
      return r;
    if (r > 0)
      who[n++] = ends[i];
  }
  if (n == 0)
    return svm_error(EIO, "internal error: %u requests wait for nothing", c->active);
  if (n == 1 && who[0]->ops->wait != NULL)   /* one end busy: block in it, no poll needed */
    return who[0]->ops->wait(who[0]);
  if (poll(p, (nfds_t)n, -1) < 0)
    return errno == EINTR ? 0 : svm_error(errno, "poll: %s", strerror(errno));
  for (int i = 0; i < n; i++)
    if ((r = who[i]->ops->poll_done(who[i], &p[i])) < 0)
      return r;
  return 0;
}

/* Deal with what completed: read chunks go to writing in disk order, finished slots are
 * freed. */
static void drain_ready(struct svm_copy *c)
{
  struct slot *s;
  int r;

  while ((s = pop(&c->ready)) != NULL) {
    if (s->state == SLOT_READ_DONE) {
      if (c->err == 0) {
        c->parked[s->seq % c->nslots] = s;
        if ((r = issue_in_order(c)) < 0)
          fail(c, r);
      } else if (s->pending == 0) {     /* failing, nothing of it in flight: free it */
        done(s);
      }
    } else if (s->state == SLOT_DONE) {
      if (c->o.chunk_done)
        c->o.chunk_done(c->o.chunk_opaque, s->off, s->len, c->err);
      if (c->err == 0)
        progress(c, s->len);
      s->state = SLOT_FREE;
      push(&c->free_list, s);
      c->active--;
    }
  }
}

/* Retry slots the destination had no room for, then start new work. */
static void advance(struct svm_copy *c)
{
  struct slot *b = c->blocked, *s;
  int r = 0;

  c->blocked = NULL;
  while ((s = pop(&b)) != NULL) {
    s->blocked = false;
    if ((r = continue_writes(c, s)) < 0) {
      fail(c, r);
      if (s->pending == 0)
        done(s);
    } else if (!s->blocked && s->seq == c->write_seq) {
      c->write_seq++;
      if ((r = issue_in_order(c)) < 0)
        fail(c, r);
    }
  }
  while (c->err == 0 && (r = start_next(c)) > 0)
    ;
  if (r < 0)
    fail(c, r);
}

/* Failing: parked slots never write; blocked ones write no more; each is done once nothing of
 * it is in flight. */
static void abandon(struct svm_copy *c)
{
  struct slot *s;

  for (unsigned i = 0; i < c->nslots; i++) {
    if ((s = c->parked[i]) != NULL) {
      c->parked[i] = NULL;
      done(s);
    }
  }
  while ((s = pop(&c->blocked)) != NULL) {
    s->blocked = false;
    if (s->pending == 0)
      done(s);
  }
}

static int run_loop(struct svm_copy *c)
{
  int r;

  for (;;) {
    if (c->err == 0 && c->o.cancel != NULL && *c->o.cancel)
      fail(c, svm_error(ECANCELED, "copy cancelled"));
    drain_ready(c);
    if (c->err == 0) {
      advance(c);
    } else {
      abandon(c);
      if (c->ready != NULL)
        continue;
    }
    if (c->active == 0 && c->ready == NULL)
      break;
    if (c->ready != NULL)
      continue;
    if ((r = wait_events(c)) < 0) {
      fail(c, r);
      break;        /* nothing more will complete; freeing the ends waits for or drops them */
    }
  }
  return c->err;
}

int svm_copy_run(struct svm_copy *c, const struct svm_extent_list *map)
{
  int r;

  if (c->ran)
    return svm_error(EINVAL, "internal error: a copy engine runs once");
  c->ran = true;
  if (map == NULL) {
    if ((r = svm_copy_end_extents(c->src, c->size, &c->own_map)) < 0)
      return r;
    map = &c->own_map;
  }
  c->map = map;
  r = run_loop(c);
  if (r < 0)
    svm_error(-r, "%s", c->errmsg);   /* the first failure, not the last one reported */
  return r;
}

/* ---- life ------------------------------------------------------------------------------------ */

static uint64_t clip_request(uint64_t request, const struct svm_copy_end *e)
{
  if (e->max_request > 0 && request > e->max_request)
    request = e->max_request / SVM_IO_ALIGN * SVM_IO_ALIGN;
  return request < SVM_IO_ALIGN ? SVM_IO_ALIGN : request;
}

/* One arena for all buffers, in transparent huge pages where the kernel gives them: an
 * O_DIRECT request on physically contiguous memory reaches the device as one large request
 * instead of being split at the device's segment limit (254 x 4 KiB pages on virtio). */
static int alloc_slots(struct svm_copy *c)
{
  size_t len = (c->nslots * c->request + HUGE - 1) / HUGE * HUGE;

  c->slots = calloc(c->nslots, sizeof *c->slots);
  c->parked = calloc(c->nslots, sizeof *c->parked);
  if (c->slots == NULL || c->parked == NULL)
    return svm_error(ENOMEM, "out of memory");
  if (posix_memalign((void **)&c->arena, HUGE, len) != 0) {
    c->arena = NULL;
    return svm_error(ENOMEM, "out of memory for %u buffers of %" PRIu64 " bytes", c->nslots,
                     c->request);
  }
  madvise(c->arena, len, MADV_HUGEPAGE);
  if (c->src->ops->read_sparse != NULL) {
    c->zmap_words = (c->request / SVM_COPY_ZERO_BLOCK + 63) / 64;
    c->zmaps = calloc(c->nslots * c->zmap_words, sizeof *c->zmaps);
    if (c->zmaps == NULL)
      return svm_error(ENOMEM, "out of memory");
  }
  for (unsigned i = 0; i < c->nslots; i++) {
    c->slots[i].buf = c->arena + (size_t)i * c->request;
    if (c->zmaps != NULL)
      c->slots[i].zmap = c->zmaps + (size_t)i * c->zmap_words;
    c->slots[i].c = c;
    push(&c->free_list, &c->slots[i]);
  }
  if (!c->o.dst_reads_zero && c->dst->ops->zero == NULL) {
    c->zero_buf = svm_io_alloc_buffer(c->request);
    if (c->zero_buf == NULL)
      return svm_error(ENOMEM, "out of memory");
    memset(c->zero_buf, 0, c->request);
  }
  return 0;
}

static int start_end(struct svm_copy_end *e, unsigned requests)
{
  return e->ops->start != NULL ? e->ops->start(e, requests) : 0;
}

int svm_copy_new(struct svm_copy_end *src, struct svm_copy_end *dst,
                 const struct svm_copy_options *o, struct svm_copy **out)
{
  struct svm_copy *c;
  int r;

  if (!dst->writable)
    return svm_error(EINVAL, "%s: internal error: the destination end is not writable",
                     dst->name);
  if ((c = calloc(1, sizeof *c)) == NULL)
    return svm_error(ENOMEM, "out of memory");
  c->src = src;
  c->dst = dst;
  if (o != NULL)
    c->o = *o;
  c->size = src->size;
  c->request = clip_request(clip_request(c->o.request_size ? c->o.request_size
                                                           : SVM_COPY_DEFAULT_REQUEST, src),
                            dst);
  c->nslots = c->o.requests ? c->o.requests : SVM_COPY_DEFAULT_REQUESTS;
  svm_extent_list_init(&c->own_map);
  if ((r = alloc_slots(c)) < 0 || (r = start_end(src, c->nslots)) < 0 ||
      (r = start_end(dst, c->nslots)) < 0) {
    svm_copy_free(c);
    return r;
  }
  *out = c;
  return 0;
}

void svm_copy_get_counters(const struct svm_copy *c, struct svm_copy_counters *out)
{
  *out = c->n;
}

void svm_copy_free(struct svm_copy *c)
{
  if (c == NULL)
    return;
  free(c->arena);
  free(c->zmaps);
  free(c->slots);
  free(c->parked);
  free(c->zero_buf);
  svm_extent_list_free(&c->own_map);
  free(c);
}
