/* The disk converter: copy a disk from a raw file or NBD export to another, in the provisioning
 * asked for, with many requests in flight.
 *
 * Work follows data. The source's extent map is read first (SEEK_DATA/SEEK_HOLE, or NBD
 * base:allocation), which also gives the data size the free-space check needs. Then a fixed set
 * of slots, each with one request-sized buffer, walks the data extents: a slot reads a chunk
 * (through the I/O engine for files, libnbd's asynchronous API for NBD), checks it for zeros at
 * 4 KiB granularity, and writes only the non-zero runs (a raw destination is a fresh file, so
 * skipped zeros are holes or unwritten extents; an NBD destination gets zero requests instead,
 * unless it already reads as zeros everywhere).
 *
 * Callbacks only record results and queue the slot on a ready list; the loop in run() does all
 * the work, so neither the engine nor libnbd is re-entered from its own callback.
 *
 * Safety: the source is opened read-only. A raw destination is written as DST.svm-part-PID in
 * the same directory and renamed over DST only after everything is written and fsynced; any
 * failure unlinks it. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <svmotion/convert.h>

#include "common/error.h"
#include "svm/convert/internal.h"
#include "svm/disk/extents.h"
#include "svm/io/io.h"
#include "svm/disk/provision.h"
#include "svm/disk/zero.h"

enum {
  ZERO_BLOCK = 4096,                    /* zero detection granularity, as qemu-img -S 4k */
  DEFAULT_REQUEST = 2 << 20,
  DEFAULT_REQUESTS = 32,
  MAX_ZERO_REQUEST = 1 << 30,
  SECTOR = 512,
  HUGE = 2 << 20,                       /* transparent huge page size on x86-64 and arm64 */
};

struct svm_convert_options {
  enum svm_provisioning prov;
  bool force;
  svm_convert_progress_fn progress;
  void *progress_opaque;
  uint64_t request;
  unsigned requests;
  volatile int *cancel;
};

struct svm_convert_options *svm_convert_options_new(void)
{
  struct svm_convert_options *o = calloc(1, sizeof *o);

  if (o != NULL) {
    o->prov = SVM_PROVISIONING_THIN;
    o->request = DEFAULT_REQUEST;
    o->requests = DEFAULT_REQUESTS;
  }
  return o;
}

void svm_convert_options_free(struct svm_convert_options *o)
{
  free(o);
}

void svm_convert_options_set_provisioning(struct svm_convert_options *o, enum svm_provisioning p)
{
  o->prov = p;
}

void svm_convert_options_set_force(struct svm_convert_options *o, bool force)
{
  o->force = force;
}

void svm_convert_options_set_progress(struct svm_convert_options *o, svm_convert_progress_fn fn,
                                      void *opaque)
{
  o->progress = fn;
  o->progress_opaque = opaque;
}

int svm_convert_options_set_request_size(struct svm_convert_options *o, uint64_t bytes)
{
  if (bytes < 65536 || bytes > (32 << 20) || bytes % 4096 != 0)
    return svm_error(EINVAL, "request size %" PRIu64 ": must be a multiple of 4096 within "
                     "64K-32M", bytes);
  o->request = bytes;
  return 0;
}

int svm_convert_options_set_requests(struct svm_convert_options *o, unsigned n)
{
  if (n < 1 || n > 256)
    return svm_error(EINVAL, "requests in flight %u: must be within 1-256", n);
  o->requests = n;
  return 0;
}

void svm_convert_options_set_cancel_flag(struct svm_convert_options *o, volatile int *cancel)
{
  o->cancel = cancel;
}

bool svm_convert_is_nbd_uri(const char *s)
{
  return strncmp(s, "nbd://", 6) == 0 || strncmp(s, "nbds://", 7) == 0 ||
         strncmp(s, "nbd+unix://", 11) == 0 || strncmp(s, "nbds+unix://", 12) == 0 ||
         strncmp(s, "nbd+vsock://", 12) == 0 || strncmp(s, "nbds+vsock://", 13) == 0;
}

/* ---- the copy ---------------------------------------------------------------------------- */

enum slot_state { SLOT_FREE, SLOT_READING, SLOT_READ_DONE, SLOT_WRITING, SLOT_DONE };

struct conv;

struct slot {
  struct conv *c;
  enum slot_state state;
  char *buf;
  uint64_t off, len;          /* the chunk of the disk this slot handles */
  bool zero_only;             /* a zero request for an NBD destination, no read */
  uint64_t wpos;              /* how much of the chunk has been dealt with (written/skipped) */
  unsigned pending;           /* writes or zero requests in flight */
  bool blocked;               /* on the blocked list: the engine was full */
  uint64_t seq;               /* order in which slots were started (= disk order) */
  int64_t read_res;
  struct slot *next;          /* free, ready or blocked list */
};

struct conv {
  const struct svm_convert_options *o;
  struct svm_conv_end src, dst;
  struct svm_io *io;          /* reads (and everything else) */
  struct svm_io *wio;         /* writes to a file destination: io, or a libaio engine */
  struct svm_extent_list map;
  size_t ext_idx;
  uint64_t ext_pos;
  uint64_t request;
  struct slot *slots;
  unsigned nslots;
  char *arena;                /* all slot buffers */
  size_t arena_len;
  unsigned active;            /* slots not free */
  struct slot *free_list, *ready, *blocked;
  /* Writes are issued in disk order (see issue_in_order()): slots whose read finished early
   * wait in parked[seq % nslots] until write_seq reaches them. */
  struct slot **parked;
  uint64_t next_seq, write_seq;
  char *zero_buf;             /* for NBD destinations that cannot zero */
  uint64_t done_bytes;
  struct svm_convert_stats st;
  int err;
  char errmsg[512];
};

static void fail(struct conv *c, int r)
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

static void progress(struct conv *c, uint64_t n)
{
  c->done_bytes += n;
  if (c->o->progress)
    c->o->progress(c->o->progress_opaque, c->done_bytes, c->st.size);
}

/* callbacks: record, queue, nothing else */

static void on_file_read(void *opaque, int64_t res)
{
  struct slot *s = opaque;
  s->read_res = res;
  s->state = SLOT_READ_DONE;
  push(&s->c->ready, s);
}

static int on_nbd_read(void *opaque, int *error)
{
  struct slot *s = opaque;
  s->read_res = *error ? -*error : (int64_t)s->len;
  s->state = SLOT_READ_DONE;
  push(&s->c->ready, s);
  return 1;
}

static void write_done(struct slot *s, int64_t res, const char *what)
{
  struct conv *c = s->c;

  if (res < 0 && c->err == 0)
    fail(c, svm_error((int)-res, "%s: %s near offset %" PRIu64 " failed: %s%s", c->dst.name, what,
                      s->off, strerror((int)-res),
                      res == -ENOSPC ? " (the destination is full: free some space)" : ""));
  s->pending--;
  /* Done when all is written, or, after a failure, as soon as nothing is in flight. */
  if (s->pending == 0 && !s->blocked && (s->wpos == s->len || c->err != 0)) {
    s->state = SLOT_DONE;
    push(&c->ready, s);
  }
}

static void on_file_write(void *opaque, int64_t res)
{
  write_done(opaque, res, "write");
}

static int on_nbd_write(void *opaque, int *error)
{
  write_done(opaque, *error ? -*error : 0, "write");
  return 1;
}

static int on_nbd_zero(void *opaque, int *error)
{
  write_done(opaque, *error ? -*error : 0, "zero");
  return 1;
}

static bool aligned(uint64_t off, uint64_t len)
{
  return off % SVM_IO_ALIGN == 0 && len % SVM_IO_ALIGN == 0;
}

static int start_read(struct conv *c, struct slot *s)
{
  s->state = SLOT_READING;
  if (c->src.is_nbd) {
    nbd_completion_callback cb = { .callback = on_nbd_read, .user_data = s };
    if (nbd_aio_pread(c->src.nbd, s->buf, s->len, s->off, cb, 0) < 0)
      return svm_error(nbd_get_errno() ? nbd_get_errno() : EIO, "%s: read at offset %" PRIu64
                       ": %s", c->src.name, s->off, nbd_get_error());
    return 0;
  }
  /* O_DIRECT needs aligned offset and length: round the length up (the buffer is a whole
   * number of 4 KiB blocks); a read past the end of the file just comes back short. */
  uint64_t rlen = (s->len + SVM_IO_ALIGN - 1) / SVM_IO_ALIGN * SVM_IO_ALIGN;
  bool direct = c->src.direct && aligned(s->off, rlen);
  int r = svm_io_pread(c->io, direct ? c->src.fd : c->src.fd_buffered, s->buf,
                       direct ? rlen : s->len, s->off, on_file_read, s);
  if (r < 0)
    return svm_error(-r, "%s: read at offset %" PRIu64 ": %s", c->src.name, s->off, strerror(-r));
  return 0;
}

/* Issue one write (or zero request) for [pos, pos+len) of the slot. -EAGAIN: engine full. */
static int issue(struct conv *c, struct slot *s, uint64_t pos, uint64_t len, bool zero)
{
  uint64_t off = s->off + pos;

  if (c->dst.is_nbd) {
    nbd_completion_callback cb = { .callback = zero ? on_nbd_zero : on_nbd_write,
                                   .user_data = s };
    int64_t cookie;
    if (zero && c->dst.can_zero) {
      uint32_t flags = c->o->prov == SVM_PROVISIONING_THIN ? 0 : LIBNBD_CMD_FLAG_NO_HOLE;
      cookie = nbd_aio_zero(c->dst.nbd, len, off, cb, flags);
    } else {
      cookie = nbd_aio_pwrite(c->dst.nbd, zero ? c->zero_buf : s->buf + pos, len, off, cb, 0);
    }
    if (cookie < 0)
      return svm_error(nbd_get_errno() ? nbd_get_errno() : EIO, "%s: write at offset %" PRIu64
                       ": %s", c->dst.name, off, nbd_get_error());
    s->pending++;
    if (!zero)
      c->st.bytes_written += len;
    return 0;
  }
  bool direct = c->dst.direct && aligned(off, len);
  int r = svm_io_pwrite(c->wio, direct ? c->dst.fd : c->dst.fd_buffered, s->buf + pos, len, off,
                        on_file_write, s);
  if (r == -EAGAIN)
    return r;
  if (r < 0)
    return svm_error(-r, "%s: write at offset %" PRIu64 ": %s", c->dst.name, off, strerror(-r));
  s->pending++;
  c->st.bytes_written += len;
  return 0;
}

/* Write what the slot still has to write: non-zero runs, and zero runs where the destination
 * needs them said. Stops with the slot on the blocked list when the engine is full. */
static int continue_writes(struct conv *c, struct slot *s)
{
  bool zeros_needed = c->dst.is_nbd && !c->dst.known_zero;
  int r;

  s->state = SLOT_WRITING;
  while (s->wpos < s->len) {
    uint64_t left = s->len - s->wpos, z, d;
    if (s->zero_only) {
      z = left > MAX_ZERO_REQUEST ? MAX_ZERO_REQUEST : left;
      if (!c->dst.can_zero && z > c->request)
        z = c->request;             /* written from zero_buf, one request at a time */
      r = issue(c, s, s->wpos, z, true);
      if (r < 0)
        return r;
      s->wpos += z;
      continue;
    }
    z = svm_zero_span(s->buf + s->wpos, left, ZERO_BLOCK, true);
    if (z > 0) {
      if (zeros_needed) {
        if ((r = issue(c, s, s->wpos, z, true)) < 0)
          goto blocked;
      }
      c->st.bytes_skipped_zero += z;
      s->wpos += z;
      continue;
    }
    d = svm_zero_span(s->buf + s->wpos, left, ZERO_BLOCK, false);
    if ((r = issue(c, s, s->wpos, d, false)) < 0)
      goto blocked;
    s->wpos += d;
  }
  if (s->pending == 0) {
    s->state = SLOT_DONE;
    push(&c->ready, s);
  }
  return 0;

blocked:
  if (r == -EAGAIN) {
    s->blocked = true;
    push(&c->blocked, s);
    return 0;
  }
  return r;
}

static int read_done(struct conv *c, struct slot *s)
{
  s->wpos = 0;
  if (s->zero_only)
    return continue_writes(c, s);
  if (s->read_res < 0)
    return svm_error((int)-s->read_res, "%s: read at offset %" PRIu64 " failed: %s",
                     c->src.name, s->off, strerror((int)-s->read_res));
  if ((uint64_t)s->read_res < s->len)   /* the source shrank: what is gone reads as zeros */
    memset(s->buf + s->read_res, 0, s->len - (uint64_t)s->read_res);
  c->st.bytes_read += s->len;
  return continue_writes(c, s);
}

/* Issue the writes of parked slots in disk order. Reads complete in any order; if their writes
 * went out in that order too, a file system that allocates at submission (ext4 and xfs do for
 * O_DIRECT) would build the file's extent tree out of order: leaves split half full, and the
 * thin result carries more metadata blocks than the same data written in order. Only the slot
 * at write_seq may issue; if the engine is full it stays blocked and the order waits with it. */
static int issue_in_order(struct conv *c)
{
  while (c->err == 0) {
    struct slot *s = c->parked[c->write_seq % c->nslots];
    int r;

    if (s == NULL || s->seq != c->write_seq)
      return 0;
    c->parked[c->write_seq % c->nslots] = NULL;
    r = read_done(c, s);
    if (r < 0) {
      if (s->pending == 0) {
        s->state = SLOT_DONE;
        push(&c->ready, s);
      }
      return r;
    }
    if (s->blocked)
      return 0;                 /* continued from the blocked list, then write_seq moves on */
    c->write_seq++;
  }
  return 0;
}

/* Hand the next piece of work to a free slot. Returns 1 when started, 0 when there is none. */
static int start_next(struct conv *c)
{
  while (c->ext_idx < c->map.n) {
    const struct svm_extent *e = &c->map.v[c->ext_idx];
    uint64_t left = e->len - c->ext_pos, off = e->off + c->ext_pos;

    if (left == 0) {
      c->ext_idx++;
      c->ext_pos = 0;
      continue;
    }
    if (e->flags & SVM_EXTENT_ZERO) {
      /* Reads as zeros: nothing to read. A fresh file (or an all-zero export) needs nothing
       * written either; eager-zeroed targets are filled by svm_provision_finish(). */
      if (!c->dst.is_nbd || c->dst.known_zero) {
        c->ext_pos += left;
        progress(c, left);
        continue;
      }
      struct slot *s = pop(&c->free_list);
      if (s == NULL)
        return 0;
      uint64_t n = left > MAX_ZERO_REQUEST ? MAX_ZERO_REQUEST : left;
      *s = (struct slot){ .c = c, .buf = s->buf, .off = off, .len = n, .zero_only = true,
                          .seq = c->next_seq++, .state = SLOT_READ_DONE };
      c->ext_pos += n;
      c->active++;
      push(&c->ready, s);       /* nothing to read: straight to writing, in its turn */
      return 1;
    }
    struct slot *s = pop(&c->free_list);
    if (s == NULL)
      return 0;
    uint64_t n = left > c->request ? c->request : left;
    /* End chunks on request-size boundaries so that later chunks stay aligned. */
    if (n == c->request && off % c->request != 0)
      n = c->request - off % c->request;
    *s = (struct slot){ .c = c, .buf = s->buf, .off = off, .len = n, .seq = c->next_seq++ };
    c->ext_pos += n;
    c->active++;
    int r = start_read(c, s);
    if (r < 0) {                  /* never reached the kernel or the server */
      s->state = SLOT_DONE;
      push(&c->ready, s);
    }
    return r < 0 ? r : 1;
  }
  return 0;
}

static int wait_events(struct conv *c)
{
  struct pollfd p[4];
  struct svm_io *engines[2] = { c->io, c->wio != c->io ? c->wio : NULL };
  struct svm_io *eng[4] = { NULL, NULL, NULL, NULL }, *only = NULL;
  struct svm_conv_end *ends[2] = { &c->src, &c->dst };
  struct nbd_handle *hs[4] = { NULL, NULL, NULL, NULL };
  int n = 0, busy = 0, r;

  for (int i = 0; i < 2; i++) {
    if (engines[i] == NULL)
      continue;
    if ((r = svm_io_submit(engines[i])) < 0)
      return svm_error(-r, "I/O engine: %s", strerror(-r));
    if (svm_io_in_flight(engines[i]) > 0) {
      eng[n] = only = engines[i];
      p[n++] = (struct pollfd){ .fd = svm_io_event_fd(engines[i]), .events = POLLIN };
      busy++;
    }
  }
  if (!c->src.is_nbd && !c->dst.is_nbd) {
    if (busy == 0)
      return svm_error(EIO, "internal error: %u requests wait for nothing", c->active);
    if (busy == 1) {          /* one engine busy: block in it, no poll needed */
      r = svm_io_reap(only, 1);
      return r < 0 ? svm_error(-r, "I/O engine: %s", strerror(-r)) : 0;
    }
  }
  for (int i = 0; i < 2; i++) {
    if (!ends[i]->is_nbd)
      continue;
    unsigned dir = nbd_aio_get_direction(ends[i]->nbd);
    short ev = (short)(((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
                       ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0));
    if (nbd_aio_in_flight(ends[i]->nbd) <= 0 && !(ev & POLLOUT))
      continue;
    hs[n] = ends[i]->nbd;
    p[n++] = (struct pollfd){ .fd = nbd_aio_get_fd(ends[i]->nbd), .events = ev };
  }
  if (n == 0)
    return 0;
  r = poll(p, (nfds_t)n, -1);
  if (r < 0)
    return errno == EINTR ? 0 : svm_error(errno, "poll: %s", strerror(errno));
  for (int i = 0; i < n; i++) {
    if (eng[i] != NULL) {
      uint64_t cnt;
      if (p[i].revents & POLLIN) {
        if (read(p[i].fd, &cnt, sizeof cnt) < 0 && errno != EAGAIN)
          return svm_error(errno, "I/O engine event fd: %s", strerror(errno));
        r = svm_io_reap(eng[i], 0);
        if (r < 0)
          return svm_error(-r, "I/O engine: %s", strerror(-r));
      }
      continue;
    }
    const char *name = hs[i] == c->src.nbd ? c->src.name : c->dst.name;
    if ((p[i].revents & (POLLIN | POLLHUP | POLLERR)) && nbd_aio_notify_read(hs[i]) < 0)
      return svm_error(nbd_get_errno() ? nbd_get_errno() : EIO, "%s: %s (the NBD server went "
                       "away?)", name, nbd_get_error());
    if ((p[i].revents & POLLOUT) && nbd_aio_notify_write(hs[i]) < 0)
      return svm_error(nbd_get_errno() ? nbd_get_errno() : EIO, "%s: %s (the NBD server went "
                       "away?)", name, nbd_get_error());
  }
  return 0;
}

static int run(struct conv *c)
{
  int r;

  for (;;) {
    if (c->err == 0 && c->o->cancel != NULL && *c->o->cancel)
      fail(c, svm_error(ECANCELED, "conversion cancelled"));
    /* Deal with what completed. */
    struct slot *s;
    while ((s = pop(&c->ready)) != NULL) {
      if (s->state == SLOT_READ_DONE) {
        if (c->err == 0) {
          c->parked[s->seq % c->nslots] = s;
          if ((r = issue_in_order(c)) < 0)
            fail(c, r);
        } else if (s->pending == 0) {     /* failing, nothing of it in flight: free it */
          s->state = SLOT_DONE;
          push(&c->ready, s);
        }
      } else if (s->state == SLOT_DONE) {
        if (c->err == 0)
          progress(c, s->len);
        s->state = SLOT_FREE;
        push(&c->free_list, s);
        c->active--;
      }
    }
    if (c->err == 0) {
      struct slot *b = c->blocked;
      c->blocked = NULL;
      while ((s = pop(&b)) != NULL) {
        s->blocked = false;
        if ((r = continue_writes(c, s)) < 0) {
          fail(c, r);
          if (s->pending == 0) {
            s->state = SLOT_DONE;
            push(&c->ready, s);
          }
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
    } else {
      /* Failing: parked slots never write; blocked ones write no more; each is done once
       * nothing of it is in flight. */
      for (unsigned i = 0; i < c->nslots; i++) {
        if ((s = c->parked[i]) != NULL) {
          c->parked[i] = NULL;
          s->state = SLOT_DONE;
          push(&c->ready, s);
        }
      }
      while ((s = pop(&c->blocked)) != NULL) {
        s->blocked = false;
        if (s->pending == 0) {
          s->state = SLOT_DONE;
          push(&c->ready, s);
        }
      }
      if (c->ready != NULL)
        continue;
    }
    if (c->active == 0 && c->ready == NULL)
      break;
    if (c->ready != NULL)
      continue;
    if ((r = wait_events(c)) < 0) {
      fail(c, r);
      break;        /* nothing more will complete; svm_io_free() waits for the engine */
    }
  }
  return c->err;
}

/* ---- set-up, checks and the destination file's life ------------------------------------- */

static int open_src_file(struct svm_conv_end *e, const char *path)
{
  struct stat st;
  int r;

  e->name = path;
  e->fd = e->fd_buffered = -1;
  if (stat(path, &st) < 0)
    return svm_error(errno, "%s: cannot read the source: %s%s", path, strerror(errno),
                     errno == ENOENT ? " (check the path)" : "");
  if (S_ISDIR(st.st_mode))
    return svm_error(EISDIR, "%s: the source is a directory, not a disk image (give the disk "
                     "file inside it)", path);
  r = svm_io_open_file(path, O_RDONLY, 0, true, &e->direct);
  if (r < 0)
    return svm_error(-r, "%s: cannot open the source: %s%s", path, strerror(-r),
                     r == -EACCES ? " (check its permissions)" : "");
  e->fd = r;
  r = svm_io_open_file(path, O_RDONLY, 0, false, NULL);
  if (r < 0)
    return svm_error(-r, "%s: cannot open the source: %s", path, strerror(-r));
  e->fd_buffered = r;
  if (fstat(e->fd, &st) < 0)
    return svm_error(errno, "%s: %s", path, strerror(errno));
  if (S_ISBLK(st.st_mode)) {
    off_t end = lseek(e->fd, 0, SEEK_END);
    if (end < 0)
      return svm_error(errno, "%s: %s", path, strerror(errno));
    e->size = (uint64_t)end;
  } else if (S_ISREG(st.st_mode)) {
    e->size = (uint64_t)st.st_size;
  } else {
    return svm_error(EINVAL, "%s: the source is not a regular file or block device", path);
  }
  return 0;
}

static int check_size(const char *name, uint64_t size)
{
  if (size == 0)
    return svm_error(EINVAL, "%s: the disk is empty (0 bytes): nothing to convert (a disk has "
                     "a size that is a multiple of 512)", name);
  if (size % SECTOR != 0)
    return svm_error(EINVAL, "%s: size %" PRIu64 " bytes is not a multiple of 512 (pad it: "
                     "truncate -s %" PRIu64 " %s)", name, size,
                     (size + SECTOR - 1) / SECTOR * SECTOR, name);
  return 0;
}

static char *dir_of(const char *path)
{
  char *copy = strdup(path), *d;

  if (copy == NULL)
    return NULL;
  d = strdup(dirname(copy));
  free(copy);
  return d;
}

static void human(uint64_t n, char *out, size_t len)
{
  const char *u[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
  double v = (double)n;
  int i = 0;

  while (v >= 1024 && i < 5) {
    v /= 1024;
    i++;
  }
  if (i == 0)
    snprintf(out, len, "%" PRIu64 " B", n);
  else
    snprintf(out, len, "%.1f %s (%" PRIu64 " bytes)", v, u[i], n);
}

/* Check the destination path and the room on its file system; open the temporary file. */
static int open_dst_file(struct conv *c, const char *path, uint64_t data_bytes, char **tmp_out)
{
  struct svm_conv_end *e = &c->dst;
  struct stat st, sst;
  struct statvfs vfs;
  char *dir = NULL, *tmp = NULL;
  int r, fd;

  e->name = path;
  e->fd = e->fd_buffered = -1;
  if (stat(path, &st) == 0) {
    if (S_ISDIR(st.st_mode))
      return svm_error(EISDIR, "%s: the destination is a directory (give a file name for the "
                       "new disk)", path);
    if (!S_ISREG(st.st_mode))
      return svm_error(EINVAL, "%s: the destination exists and is not a regular file", path);
    if (!c->src.is_nbd && fstat(c->src.fd, &sst) == 0 && sst.st_dev == st.st_dev &&
        sst.st_ino == st.st_ino)
      return svm_error(EINVAL, "%s: source and destination are the same file", path);
    if (!c->o->force)
      return svm_error(EEXIST, "%s: the destination already exists (use --force to replace it)",
                       path);
  } else if (errno != ENOENT) {
    return svm_error(errno, "%s: %s", path, strerror(errno));
  }

  dir = dir_of(path);
  if (dir == NULL)
    return svm_error(ENOMEM, "out of memory");
  if (statvfs(dir, &vfs) < 0) {
    r = svm_error(errno, "%s: cannot use the destination directory %s: %s%s", path, dir,
                  strerror(errno), errno == ENOENT ? " (create it first)" : "");
    free(dir);
    return r;
  }
  uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
  uint64_t need = svm_provision_needed(c->o->prov, c->st.size, data_bytes);
  if (need > avail) {
    char hn[64], ha[64];
    human(need, hn, sizeof hn);
    human(avail, ha, sizeof ha);
    r = svm_error(ENOSPC, "%s: not enough space: %s provisioning needs %s, %s has %s free "
                  "(free some space%s)", path, svm_provisioning_to_string(c->o->prov), hn, dir,
                  ha, c->o->prov == SVM_PROVISIONING_THIN ? "" : " or choose thin provisioning");
    free(dir);
    return r;
  }
  free(dir);

  if (asprintf(&tmp, "%s.svm-part-%d", path, (int)getpid()) < 0)
    return svm_error(ENOMEM, "out of memory");
  fd = svm_io_open_file(tmp, O_RDWR | O_CREAT | O_EXCL, 0644, true, &e->direct);
  if (fd < 0) {
    r = svm_error(-fd, "%s: cannot create the destination: %s", tmp, strerror(-fd));
    free(tmp);
    return r;
  }
  *tmp_out = tmp;
  e->fd = fd;
  r = svm_io_open_file(tmp, O_RDWR, 0, false, NULL);
  if (r < 0)
    return r;
  e->fd_buffered = r;
  e->size = c->st.size;
  return svm_provision_prepare(e->fd_buffered, path, c->st.size, c->o->prov);
}

static int sync_dir_of(const char *path)
{
  char *dir = dir_of(path);
  int fd, r = 0;

  if (dir == NULL)
    return -ENOMEM;
  fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    if (fsync(fd) < 0)
      r = -errno;
    close(fd);
  }
  free(dir);
  return r;
}

static int finish_dst_file(struct conv *c, const char *path, const char *tmp)
{
  uint64_t zw = 0;
  int r = svm_provision_finish(c->dst.fd_buffered, path, c->st.size, c->o->prov, &zw);

  if (r < 0)
    return r;
  c->st.bytes_written += zw;
  if (fsync(c->dst.fd_buffered) < 0)
    return svm_error(errno, "%s: fsync: %s", path, strerror(errno));
  if (rename(tmp, path) < 0)
    return svm_error(errno, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
  r = sync_dir_of(path);
  if (r < 0)
    return svm_error(-r, "%s: syncing its directory: %s", path, strerror(-r));
  return 0;
}

static void close_end(struct svm_conv_end *e)
{
  if (e->fd >= 0)
    close(e->fd);
  if (e->fd_buffered >= 0)
    close(e->fd_buffered);
  e->fd = e->fd_buffered = -1;
  if (e->nbd != NULL)
    svm_conv_nbd_close(e, false);
}

/* Is every block of [0, size) of an NBD destination already reading as zeros? */
static bool nbd_all_zero(struct svm_conv_end *e, uint64_t size)
{
  struct svm_extent_list l;
  bool zero;

  if (!e->has_allocation)
    return false;
  svm_extent_list_init(&l);
  zero = svm_conv_nbd_extents(e, size, &l) == 0 &&
         svm_extent_list_bytes(&l, SVM_EXTENT_ZERO, SVM_EXTENT_ZERO) == size;
  svm_extent_list_free(&l);
  svm_error_clear();
  return zero;
}

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int svm_convert(const char *src, const char *dst, const struct svm_convert_options *o,
                struct svm_convert_stats *stats)
{
  struct svm_convert_options defaults;
  struct conv c;
  char *tmp = NULL;
  double t0 = now();
  int r;

  if (o == NULL) {
    memset(&defaults, 0, sizeof defaults);
    defaults.request = DEFAULT_REQUEST;
    defaults.requests = DEFAULT_REQUESTS;
    o = &defaults;
  }
  memset(&c, 0, sizeof c);
  c.o = o;
  c.src.fd = c.src.fd_buffered = c.dst.fd = c.dst.fd_buffered = -1;
  svm_extent_list_init(&c.map);
  if (stats != NULL)
    memset(stats, 0, sizeof *stats);

  /* The source: open read-only, check, map. */
  if (svm_convert_is_nbd_uri(src))
    r = svm_conv_nbd_open(&c.src, src, false);
  else
    r = open_src_file(&c.src, src);
  if (r < 0)
    goto out;
  c.st.size = c.src.size;
  if ((r = check_size(src, c.st.size)) < 0)
    goto out;
  if (c.src.is_nbd)
    r = svm_conv_nbd_extents(&c.src, c.st.size, &c.map);
  else if ((r = svm_extents_scan(c.src.fd, 0, c.st.size, &c.map)) < 0)
    r = svm_error(-r, "%s: cannot map its extents: %s", src, strerror(-r));
  if (r < 0)
    goto out;
  uint64_t data_bytes = svm_extent_list_bytes(&c.map, SVM_EXTENT_ZERO, 0);

  /* The destination. */
  if (svm_convert_is_nbd_uri(dst)) {
    if ((r = svm_conv_nbd_open(&c.dst, dst, true)) < 0)
      goto out;
    if (c.dst.size < c.st.size) {
      r = svm_error(ENOSPC, "%s: the NBD export is %" PRIu64 " bytes, smaller than the source's "
                    "%" PRIu64 " bytes (create it at least as large, e.g. qemu-img create -f "
                    "qcow2 FILE %" PRIu64 ")", dst, c.dst.size, c.st.size, c.st.size);
      goto out;
    }
    /* Thin: zeros already there need not be written again. Thick and eager ask the server to
     * allocate them (zero requests with NO_HOLE), so they are sent whatever is there. */
    c.dst.known_zero = o->prov == SVM_PROVISIONING_THIN && nbd_all_zero(&c.dst, c.st.size);
  } else if ((r = open_dst_file(&c, dst, data_bytes, &tmp)) < 0) {
    goto out;
  }

  /* The slots and the engine. */
  c.request = o->request;
  if (c.src.is_nbd && c.request > c.src.max_request)
    c.request = c.src.max_request / SVM_IO_ALIGN * SVM_IO_ALIGN;
  if (c.dst.is_nbd && c.request > c.dst.max_request)
    c.request = c.dst.max_request / SVM_IO_ALIGN * SVM_IO_ALIGN;
  if (c.request < SVM_IO_ALIGN)
    c.request = SVM_IO_ALIGN;
  c.nslots = o->requests;
  c.slots = calloc(c.nslots, sizeof *c.slots);
  c.parked = calloc(c.nslots, sizeof *c.parked);
  if (c.slots == NULL || c.parked == NULL) {
    r = svm_error(ENOMEM, "out of memory");
    goto out;
  }
  /* One arena for all buffers, in transparent huge pages where the kernel gives them: an
   * O_DIRECT request on physically contiguous memory reaches the device as one large request
   * instead of being split at the device's segment limit (254 x 4 KiB pages on virtio). */
  c.arena_len = (c.nslots * c.request + HUGE - 1) / HUGE * HUGE;
  if (posix_memalign((void **)&c.arena, HUGE, c.arena_len) != 0) {
    c.arena = NULL;
    r = svm_error(ENOMEM, "out of memory for %u buffers of %" PRIu64 " bytes", c.nslots,
                  c.request);
    goto out;
  }
  madvise(c.arena, c.arena_len, MADV_HUGEPAGE);
  for (unsigned i = 0; i < c.nslots; i++) {
    c.slots[i].buf = c.arena + (size_t)i * c.request;
    c.slots[i].c = &c;
    push(&c.free_list, &c.slots[i]);
  }
  if (c.dst.is_nbd && !c.dst.can_zero) {
    c.zero_buf = calloc(1, c.request);
    if (c.zero_buf == NULL) {
      r = svm_error(ENOMEM, "out of memory");
      goto out;
    }
  }
  /* Room for every slot's writes: a slot may split its chunk into many runs. */
  unsigned depth = c.nslots * 8 > 4096 ? 4096 : c.nslots * 8;
  r = svm_io_new(SVM_IO_AUTO, depth, &c.io);
  if (r < 0)
    goto out;
  /* Writes to a file go through libaio even when reads use io_uring: io_submit() allocates the
   * blocks of an O_DIRECT write in the submitting thread, in the order issued, while io_uring
   * hands allocating writes to its worker threads, which allocate in any order (a file with
   * a larger, half-empty extent tree; see issue_in_order()). Reads keep io_uring's speed. */
  c.wio = c.io;
  if (!c.dst.is_nbd && strcmp(svm_io_name(c.io), "io_uring") == 0) {
    if (svm_io_new(SVM_IO_AIO, depth, &c.wio) < 0) {
      c.wio = c.io;             /* no libaio here: io_uring does it all, just less tidily */
      svm_error_clear();
    }
  }

  r = run(&c);
  if (r < 0) {
    svm_error(-r, "%s", c.errmsg);
    goto out;
  }
  if (c.dst.is_nbd)
    r = svm_conv_nbd_close(&c.dst, true);
  else
    r = finish_dst_file(&c, dst, tmp);
  if (r == 0) {
    free(tmp);        /* renamed: nothing to remove */
    tmp = NULL;
  }

out:
  if (c.wio != NULL && c.wio != c.io)
    svm_io_free(c.wio);
  if (c.io != NULL)
    svm_io_free(c.io);
  close_end(&c.src);
  close_end(&c.dst);
  if (tmp != NULL) {
    unlink(tmp);
    free(tmp);
  }
  free(c.arena);
  free(c.slots);
  free(c.parked);
  free(c.zero_buf);
  svm_extent_list_free(&c.map);
  c.st.seconds = now() - t0;
  if (stats != NULL)
    *stats = c.st;
  return r;
}

int svm_convert_punch_zeroes(const char *disk, const struct svm_convert_options *o,
                             struct svm_convert_stats *stats)
{
  struct svm_convert_stats st = { 0 };
  struct stat sb;
  double t0 = now();
  int fd, r;

  (void)o;
  if (stats != NULL)
    memset(stats, 0, sizeof *stats);
  if (svm_convert_is_nbd_uri(disk))
    return svm_error(EINVAL, "%s: --punch-zeroes works on raw disk files (to make an NBD "
                     "export thin, convert it: svm-convert SRC DST)", disk);
  if (stat(disk, &sb) < 0)
    return svm_error(errno, "%s: %s%s", disk, strerror(errno),
                     errno == ENOENT ? " (check the path)" : "");
  if (S_ISDIR(sb.st_mode))
    return svm_error(EISDIR, "%s: is a directory, not a disk image (give the disk file)", disk);
  if (!S_ISREG(sb.st_mode))
    return svm_error(EINVAL, "%s: not a regular file (--punch-zeroes works on raw disk files)",
                     disk);
  if ((r = check_size(disk, (uint64_t)sb.st_size)) < 0)
    return r;
  fd = open(disk, O_RDWR | O_CLOEXEC);
  if (fd < 0)
    return svm_error(errno, "%s: cannot open for writing: %s", disk, strerror(errno));
  st.size = (uint64_t)sb.st_size;
  r = svm_punch_zeroes(fd, disk, ZERO_BLOCK, &st.bytes_read, &st.bytes_punched);
  if (r == 0 && fsync(fd) < 0)
    r = svm_error(errno, "%s: fsync: %s", disk, strerror(errno));
  close(fd);
  st.bytes_skipped_zero = st.bytes_punched;
  st.seconds = now() - t0;
  if (stats != NULL)
    *stats = st;
  return r;
}
