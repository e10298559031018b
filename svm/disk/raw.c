/* Raw-file layers: a base image served with buffered I/O through the caller's engine (the
 * stack itself is layer.c).
 *
 * Page-cache fast path: a read or write of at most INLINE_MAX bytes is first tried inline with
 * RWF_NOWAIT, which succeeds exactly when it can complete without blocking (the data is in the
 * page cache); otherwise it goes to the engine, where many run in flight. The reason is
 * io_uring itself: on a file system without non-blocking buffered writes (ext4 here:
 * pwritev2(RWF_NOWAIT) says EOPNOTSUPP) it hands every buffered write to an io-wq kernel thread,
 * a context switch plus inode-lock contention per 4 KiB write, measured at about 0.6x the
 * IOPS of writing inline. There, small writes are done with pwrite() on the I/O thread, as
 * nbdkit's and qemu-nbd's worker threads do. Flushes, FUA syncs, fallocate and large or
 * uncached I/O always run on the engine. SVM_NBD_INLINE=0 sends everything to the engine.
 *
 * Multi-step operations (write + fdatasync for FUA; punch -> zero-range -> write zeros for
 * WRITE_ZEROES) run as a small chain: each step's completion queues the next from inside the
 * engine callback, and the caller's callback runs once with the final result. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/filekind.h"
#include "svm/disk/layer.h"
#include "svm/disk/lock.h"

enum step { STEP_DATA, STEP_ZERO_RANGE, STEP_WRITE_ZEROES, STEP_SYNC };

/* A raw layer's priv. */
struct raw {
  int fd;
  bool inline_io;           /* page-cache fast path (see the top); SVM_NBD_INLINE=0 disables */
  int nowait_writes;        /* RWF_NOWAIT buffered writes: -1 not known yet, 0 no, 1 yes */
};

static inline struct raw *raw_of(struct svm_layer *l)
{
  return l->priv;
}

struct chain {
  int fd;
  struct svm_io *io;
  svm_io_cb cb;
  void *opaque;
  unsigned flags;
  uint64_t off, len;
  int64_t result;           /* what the caller gets when the chain ends well */
  enum step step;
  void *zbuf;               /* zeros written when the file system cannot zero a range */
  size_t zlen;
  uint64_t zpos;            /* next offset to write zeros at */
};

enum { ZBUF_MAX = 1024 * 1024, LAYER_ADVISORY = 1 << 8, INLINE_MAX = 256 * 1024 };

static void chain_end(struct chain *c, int64_t res)
{
  svm_io_cb cb = c->cb;
  void *opaque = c->opaque;

  free(c->zbuf);
  free(c);
  cb(opaque, res);
}

static void chain_done(void *opaque, int64_t res);

/* Next piece of zeros, ZBUF_MAX at a time, so that a huge WRITE_ZEROES needs little memory. */
static int chain_write_zeroes(struct chain *c)
{
  uint64_t left = c->off + c->len - c->zpos;
  size_t n = left < c->zlen ? (size_t)left : c->zlen;
  uint64_t at = c->zpos;

  c->zpos += n;
  return svm_io_pwrite(c->io, c->fd, c->zbuf, n, at, chain_done, c);
}

static int chain_sync(struct chain *c)
{
  c->step = STEP_SYNC;
  return svm_io_fsync(c->io, c->fd, true, chain_done, c);
}

/* The file system cannot zero this way: the next, slower way, unless the client asked for a
 * fast zero only. */
static int chain_zero_fallback(struct chain *c, int64_t res)
{
  if (res != -EOPNOTSUPP && res != -ENOTSUP && res != -EINVAL)
    return (int)res;
  if (c->flags & LAYER_ADVISORY)
    return 1;
  if (c->flags & SVM_LAYER_FAST)
    return -ENOTSUP;
  if (c->step == STEP_DATA && !(c->flags & SVM_LAYER_NO_HOLE)) {
    c->step = STEP_ZERO_RANGE;
    return svm_io_fallocate(c->io, c->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                            c->off, c->len, chain_done, c);
  }
  c->step = STEP_WRITE_ZEROES;
  c->zlen = c->len < ZBUF_MAX ? (size_t)c->len : ZBUF_MAX;
  c->zbuf = calloc(1, c->zlen);
  if (c->zbuf == NULL)
    return -ENOMEM;
  c->zpos = c->off;
  return chain_write_zeroes(c);
}

static void chain_done(void *opaque, int64_t res)
{
  struct chain *c = opaque;
  int r;

  if (c->step == STEP_SYNC) {
    chain_end(c, res < 0 ? res : c->result);
    return;
  }
  if (res < 0 && c->step != STEP_WRITE_ZEROES && c->result == 0) {
    /* zero/trim step failed: maybe fall back */
    r = chain_zero_fallback(c, res);
    if (r < 0)
      chain_end(c, r);
    else if (r > 0)               /* advisory trim the file system cannot do: fine */
      chain_end(c, 0);
    return;
  }
  if (res < 0) {
    chain_end(c, res);
    return;
  }
  if (c->step == STEP_WRITE_ZEROES) {
    if (c->zpos < c->off + c->len) {
      r = chain_write_zeroes(c);
      if (r < 0)
        chain_end(c, r);
      return;
    }
    res = 0;
  }
  if (c->flags & SVM_LAYER_FUA) {
    c->result = c->result ? c->result : res;
    r = chain_sync(c);
    if (r < 0)
      chain_end(c, r);
    return;
  }
  chain_end(c, c->result ? c->result : res);
}

static struct chain *chain_new(struct svm_layer *l, struct svm_io *io, uint64_t off,
                               uint64_t len, unsigned flags, svm_io_cb cb, void *opaque)
{
  struct chain *c = calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  c->fd = raw_of(l)->fd;
  c->io = io;
  c->cb = cb;
  c->opaque = opaque;
  c->flags = flags;
  c->off = off;
  c->len = len;
  c->step = STEP_DATA;
  return c;
}

/* Inline attempt: returns the byte count when the whole transfer was done, else -1 (the
 * caller uses the engine). */
static ssize_t try_inline(struct raw *l, bool write, void *buf, size_t len, uint64_t off)
{
  struct iovec iov = { buf, len };
  ssize_t n;

  if (!l->inline_io || len > INLINE_MAX)
    return -1;
  if (!write) {
    n = preadv2(l->fd, &iov, 1, (off_t)off, RWF_NOWAIT);
    return n == (ssize_t)len ? n : -1;   /* short (partly cached, end of file): the engine */
  }
  if (__atomic_load_n(&l->nowait_writes, __ATOMIC_RELAXED) != 0) {
    n = pwritev2(l->fd, &iov, 1, (off_t)off, RWF_NOWAIT);
    if (n == (ssize_t)len) {
      __atomic_store_n(&l->nowait_writes, 1, __ATOMIC_RELAXED);
      return n;
    }
    if (n >= 0 || errno != EOPNOTSUPP)
      return -1;                          /* would block (or short): the engine */
    __atomic_store_n(&l->nowait_writes, 0, __ATOMIC_RELAXED);
  }
  /* No non-blocking buffered writes here: io_uring would punt this to io-wq anyway. */
  n = pwrite(l->fd, buf, len, (off_t)off);
  return n == (ssize_t)len ? n : -1;      /* errors and short writes: retried on the engine */
}

/* A read the engine returned short: the file ended before the range did (it shrank behind our
 * back: another tool truncated it), or an I/O error cut it. Every byte of buf is defined before
 * the caller sees success: past the end of the file the disk reads as zeros (as a hole does);
 * a short read that the file's size does not explain is -EIO. Never the buffer's old contents,
 * which may hold another client's or another VM's data. */
struct raw_rd {
  int fd;
  void *buf;
  size_t len;
  uint64_t off;
  svm_io_cb cb;
  void *opaque;
};

static int64_t raw_read_short(int fd, void *buf, size_t len, uint64_t off, int64_t res)
{
  struct stat st;

  if (res < 0 || (uint64_t)res >= len)
    return res;
  if (fstat(fd, &st) < 0 || (uint64_t)st.st_size > off + (uint64_t)res)
    return -EIO;
  memset((uint8_t *)buf + res, 0, len - (size_t)res);
  return (int64_t)len;
}

static void raw_read_done(void *opaque, int64_t res)
{
  struct raw_rd *rd = opaque;
  svm_io_cb cb = rd->cb;
  void *cb_opaque = rd->opaque;

  res = raw_read_short(rd->fd, rd->buf, rd->len, rd->off, res);
  free(rd);
  cb(cb_opaque, res);
}

static int raw_read(struct svm_layer *l, struct svm_io *io, void *buf, size_t len, uint64_t off,
                    svm_io_cb cb, void *opaque)
{
  ssize_t n = try_inline(raw_of(l), false, buf, len, off);
  struct raw_rd *rd;
  int r;

  if (n >= 0) {
    cb(opaque, n);
    return 0;
  }
  rd = malloc(sizeof *rd);
  if (rd == NULL)
    return -ENOMEM;
  *rd = (struct raw_rd){ raw_of(l)->fd, buf, len, off, cb, opaque };
  r = svm_io_pread(io, rd->fd, buf, len, off, raw_read_done, rd);
  if (r < 0)
    free(rd);
  return r;
}

static int raw_write(struct svm_layer *l, struct svm_io *io, const void *buf, size_t len,
                     uint64_t off, unsigned flags, svm_io_cb cb, void *opaque)
{
  struct chain *c;
  ssize_t n;
  int r;

  if (!(flags & SVM_LAYER_FUA)) {
    n = try_inline(raw_of(l), true, (void *)buf, len, off);
    if (n >= 0) {
      cb(opaque, n);
      return 0;
    }
    return svm_io_pwrite(io, raw_of(l)->fd, buf, len, off, cb, opaque);
  }
  c = chain_new(l, io, off, len, flags, cb, opaque);
  if (c == NULL)
    return -ENOMEM;
  c->result = (int64_t)len;    /* a write's result is its byte count, also after the sync */
  n = try_inline(raw_of(l), true, (void *)buf, len, off);
  if (n >= 0) {
    r = chain_sync(c);         /* data in the page cache: on to the fdatasync */
    if (r < 0)
      free(c);
    return r;
  }
  r = svm_io_pwrite(io, c->fd, buf, len, off, chain_done, c);
  if (r < 0)
    free(c);
  return r;
}

static int raw_zero(struct svm_layer *l, struct svm_io *io, uint64_t off, uint64_t len,
                    unsigned flags, svm_io_cb cb, void *opaque)
{
  struct chain *c = chain_new(l, io, off, len, flags, cb, opaque);
  int mode, r;

  if (c == NULL)
    return -ENOMEM;
  mode = (flags & SVM_LAYER_NO_HOLE) ? FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE
                                     : FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  r = svm_io_fallocate(io, c->fd, mode, off, len, chain_done, c);
  if (r < 0)
    free(c);
  return r;
}

static int raw_trim(struct svm_layer *l, struct svm_io *io, uint64_t off, uint64_t len,
                    unsigned flags, svm_io_cb cb, void *opaque)
{
  /* A trim that the file system cannot do is still a success: trim is advisory. */
  return raw_zero(l, io, off, len, (flags & SVM_LAYER_FUA) | LAYER_ADVISORY, cb, opaque);
}

static int raw_flush(struct svm_layer *l, struct svm_io *io, svm_io_cb cb, void *opaque)
{
  return svm_io_fsync(io, raw_of(l)->fd, true, cb, opaque);
}

static int raw_flush_sync(struct svm_layer *l)
{
  if (fdatasync(raw_of(l)->fd) < 0)
    return svm_error(errno, "%s: fdatasync: %s", l->path, strerror(errno));
  return 0;
}

static void raw_writeback(struct svm_layer *l)
{
  (void)sync_file_range(raw_of(l)->fd, 0, 0, SYNC_FILE_RANGE_WRITE);   /* a hint */
}

static int raw_block_status(struct svm_layer *l, uint64_t off, uint64_t len,
                            struct svm_layer_extent *ext, size_t max, size_t *n)
{
  uint64_t end = off + len;
  int fd = raw_of(l)->fd;

  *n = 0;
  while (off < end && *n < max) {
    off_t data = lseek(fd, (off_t)off, SEEK_DATA);
    uint64_t next;
    uint32_t flags;

    if (data < 0 && errno == ENXIO) {
      /* no data from here to the end of the file: one hole */
      next = end;
      flags = SVM_EXTENT_HOLE | SVM_EXTENT_ZERO;
    } else if (data < 0) {
      /* file system without SEEK_DATA: say "data" for everything, which is always true */
      next = end;
      flags = 0;
    } else if ((uint64_t)data > off) {
      next = (uint64_t)data < end ? (uint64_t)data : end;
      flags = SVM_EXTENT_HOLE | SVM_EXTENT_ZERO;
    } else {
      off_t hole = lseek(fd, (off_t)off, SEEK_HOLE);
      next = hole < 0 || (uint64_t)hole > end ? end : (uint64_t)hole;
      if (next <= off)
        next = end;
      flags = 0;
    }
    if (*n > 0 && ext[*n - 1].flags == flags) {
      ext[*n - 1].length += next - off;
    } else {
      ext[*n].length = next - off;
      ext[*n].flags = flags;
      (*n)++;
    }
    off = next;
  }
  return 0;
}

static void raw_close(struct svm_layer *l)
{
  svm_disk_unlock(raw_of(l)->fd);
  close(raw_of(l)->fd);
  free(l->priv);
}

static const struct svm_layer_ops raw_ops = {
  .kind = "raw",
  .read = raw_read,
  .write = raw_write,
  .zero = raw_zero,
  .trim = raw_trim,
  .flush = raw_flush,
  .block_status = raw_block_status,
  .flush_sync = raw_flush_sync,
  .writeback = raw_writeback,
  .close = raw_close,
};

int svm_layer_open_raw(const char *path, bool readonly, struct svm_layer **out)
{
  CLEANUP_CLOSE int fd = -1;
  CLEANUP_FREE struct svm_layer *l = NULL;
  CLEANUP_FREE struct raw *raw = NULL;
  CLEANUP_FREE char *p = NULL;
  const char *env = getenv("SVM_NBD_INLINE");
  struct stat st;

  *out = NULL;
  /* O_NONBLOCK: a FIFO named as a disk must be refused, not wait for a writer forever;
   * O_NOFOLLOW: a disk is the file named, never where a link (swapped in since) points */
  fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
  if (fd < 0 && errno == ELOOP)
    return svm_error(ELOOP, "%s: is a symbolic link; a disk image is opened only as the file "
                     "itself (give the link's target)", path);
  if (fd < 0)
    return svm_error(errno, "%s: cannot open disk image: %s", path, strerror(errno));
  if (fstat(fd, &st) < 0)
    return svm_error(errno, "%s: stat: %s", path, strerror(errno));
  if (!S_ISREG(st.st_mode))
    return svm_error(EINVAL, "%s: is %s, not a regular file (a raw disk image is a plain file)",
                     path, svm_file_kind(st.st_mode));
  if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0)
    return svm_error(errno, "%s: fcntl: %s", path, strerror(errno));
  /* exclusive for a writer, shared for a reader: no second writer behind the export's back */
  int r = svm_disk_lock(fd, path, !readonly);
  if (r < 0)
    return r;
  l = calloc(1, sizeof *l);
  raw = calloc(1, sizeof *raw);
  p = strdup(path);
  if (l == NULL || raw == NULL || p == NULL) {
    svm_disk_unlock(fd);
    return svm_error(ENOMEM, "%s: out of memory", path);
  }
  raw->fd = TAKE_FD(fd);
  raw->nowait_writes = -1;
  raw->inline_io = !(env && strcmp(env, "0") == 0);
  l->ops = &raw_ops;
  l->priv = TAKE_PTR(raw);
  l->path = TAKE_PTR(p);
  l->size = (uint64_t)st.st_size;
  l->readonly = readonly;
  *out = TAKE_PTR(l);
  return 0;
}
