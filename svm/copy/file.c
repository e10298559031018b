/* The file end of a copy: a raw file or block device, read and written through the I/O engine
 * (svm/io/io.h), O_DIRECT where the caller could open it so. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "svm/copy/end.h"

struct file_end {
  struct svm_copy_end e;      /* first: the engine sees this */
  int fd, fd_buffered;
  bool direct;
  struct svm_io *io;
};

static struct file_end *F(struct svm_copy_end *e)
{
  return (struct file_end *)e;
}

static bool aligned(uint64_t off, uint64_t len)
{
  return off % SVM_IO_ALIGN == 0 && len % SVM_IO_ALIGN == 0;
}

/* Writes go through libaio even when reads use io_uring: io_submit() allocates the blocks of an
 * O_DIRECT write in the submitting thread, in the order issued, while io_uring hands allocating
 * writes to worker threads that allocate in any order (a larger, half-empty extent tree). Reads
 * keep io_uring's speed. Room for 8 requests per slot: a slot may split its chunk into runs. */
static int file_start(struct svm_copy_end *e, unsigned requests)
{
  struct file_end *f = F(e);
  unsigned depth = requests * 8 > 4096 ? 4096 : requests * 8;
  int r;

  if (f->io != NULL)
    return 0;
  if (e->writable && svm_io_new(SVM_IO_AIO, depth, &f->io) == 0)
    return 0;
  svm_error_clear();          /* no libaio here: io_uring does it all, just less tidily */
  r = svm_io_new(SVM_IO_AUTO, depth, &f->io);
  return r < 0 ? svm_error_prefix("%s", e->name) : 0;
}

static int file_extents(struct svm_copy_end *e, uint64_t size, struct svm_extent_list *l)
{
  int r = svm_extents_scan(F(e)->fd_buffered, 0, size, l);

  return r < 0 ? svm_error(-r, "%s: cannot map its extents: %s", e->name, strerror(-r)) : 0;
}

static int file_read(struct svm_copy_end *e, void *buf, size_t len, uint64_t off, svm_io_cb cb,
                     void *opaque)
{
  struct file_end *f = F(e);
  /* O_DIRECT needs aligned offset and length: round the length up (buffers are whole 4 KiB
   * blocks); a read past the end of the file just comes back short. */
  size_t rlen = (len + SVM_IO_ALIGN - 1) / SVM_IO_ALIGN * SVM_IO_ALIGN;
  bool direct = f->direct && aligned(off, rlen);
  int r = svm_io_pread(f->io, direct ? f->fd : f->fd_buffered, buf, direct ? rlen : len, off,
                       cb, opaque);

  if (r < 0)
    return svm_error(-r, "%s: read at offset %llu: %s", e->name, (unsigned long long)off,
                     strerror(-r));
  return r;
}

static int file_write(struct svm_copy_end *e, const void *buf, size_t len, uint64_t off,
                      svm_io_cb cb, void *opaque)
{
  struct file_end *f = F(e);
  bool direct = f->direct && aligned(off, len);
  int r = svm_io_pwrite(f->io, direct ? f->fd : f->fd_buffered, buf, len, off, cb, opaque);

  if (r < 0 && r != -EAGAIN)
    return svm_error(-r, "%s: write at offset %llu: %s", e->name, (unsigned long long)off,
                     strerror(-r));
  return r;
}

int svm_copy_io_poll_prepare(struct svm_copy_end *e, struct svm_io *io, bool busy,
                             struct pollfd *pfd)
{
  int r = svm_io_submit(io);

  if (r < 0)
    return svm_error(-r, "%s: I/O engine: %s", e->name, strerror(-r));
  if (!busy)
    return 0;
  *pfd = (struct pollfd){ .fd = svm_io_event_fd(io), .events = POLLIN };
  return 1;
}

int svm_copy_io_poll_done(struct svm_copy_end *e, struct svm_io *io, const struct pollfd *pfd)
{
  uint64_t cnt;
  int r;

  if (!(pfd->revents & POLLIN))
    return 0;
  if (read(pfd->fd, &cnt, sizeof cnt) < 0 && errno != EAGAIN)
    return svm_error(errno, "%s: I/O engine event fd: %s", e->name, strerror(errno));
  r = svm_io_reap(io, 0);
  return r < 0 ? svm_error(-r, "%s: I/O engine: %s", e->name, strerror(-r)) : 0;
}

static int file_poll_prepare(struct svm_copy_end *e, struct pollfd *pfd)
{
  return svm_copy_io_poll_prepare(e, F(e)->io, svm_io_in_flight(F(e)->io) > 0, pfd);
}

static int file_poll_done(struct svm_copy_end *e, const struct pollfd *pfd)
{
  return svm_copy_io_poll_done(e, F(e)->io, pfd);
}

static int file_wait(struct svm_copy_end *e)
{
  int r = svm_io_reap(F(e)->io, 1);

  return r < 0 ? svm_error(-r, "%s: I/O engine: %s", e->name, strerror(-r)) : 0;
}

static int file_finish(struct svm_copy_end *e)
{
  if (fsync(F(e)->fd_buffered) < 0)
    return svm_error(errno, "%s: fsync: %s", e->name, strerror(errno));
  return 0;
}

/* svm_io_free() waits for requests still in flight, so no buffer is written after this. */
static void file_free(struct svm_copy_end *e)
{
  struct file_end *f = F(e);

  if (f->io != NULL)
    svm_io_free(f->io);
  free(f);
}

static const struct svm_copy_end_ops file_ops = {
  .kind = "file",
  .start = file_start,
  .extents = file_extents,
  .read = file_read,
  .write = file_write,
  .zero = NULL,               /* a fresh file reads as zeros; the engine writes zeros if asked */
  .poll_prepare = file_poll_prepare,
  .poll_done = file_poll_done,
  .wait = file_wait,
  .finish = file_finish,
  .free = file_free,
};

int svm_copy_file_end_new(const char *name, int fd, int fd_buffered, bool direct, uint64_t size,
                          bool writable, struct svm_copy_end **out)
{
  struct file_end *f = calloc(1, sizeof *f);

  if (f == NULL)
    return svm_error(ENOMEM, "%s: out of memory", name);
  f->e = (struct svm_copy_end){ .ops = &file_ops, .name = name, .size = size,
                                .writable = writable };
  f->fd = fd;
  f->fd_buffered = fd_buffered;
  f->direct = direct;
  *out = &f->e;
  return 0;
}
