/* svm_convert()'s first step: the source, opened read-only (a raw file or block device through
 * the I/O engine, or an NBD export), its size checked and its extents mapped. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/filekind.h"
#include "svm/disk/lock.h"
#include "svm/convert/internal.h"

static int file_size(const char *path, int fd, uint64_t *size)
{
  struct stat st;

  if (fstat(fd, &st) < 0)
    return svm_error(errno, "%s: %s", path, strerror(errno));
  if (S_ISBLK(st.st_mode)) {
    off_t end = lseek(fd, 0, SEEK_END);
    if (end < 0)
      return svm_error(errno, "%s: %s", path, strerror(errno));
    *size = (uint64_t)end;
  } else if (S_ISREG(st.st_mode)) {
    *size = (uint64_t)st.st_size;
  } else {
    return svm_error(EINVAL, "%s: the source is not a regular file or block device", path);
  }
  return 0;
}

/* Two descriptors: O_DIRECT for aligned reads where the file system allows it, buffered for
 * an unaligned tail. */
static int open_file(struct svm_conv_file *f, const char *path, uint64_t *size, mode_t *mode)
{
  struct stat st;
  int r;

  if (stat(path, &st) < 0)
    return svm_error(errno, "%s: cannot read the source: %s%s", path, strerror(errno),
                     errno == ENOENT ? " (check the path)" : "");
  if (S_ISDIR(st.st_mode))
    return svm_error(EISDIR, "%s: the source is a directory, not a disk image (give the disk "
                     "file inside it)", path);
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
    return svm_error(EINVAL, "%s: the source is %s, not a disk image (give a raw disk file or "
                     "a block device)", path, svm_file_kind(st.st_mode));
  *mode = st.st_mode & 0777;
  /* O_NONBLOCK: a FIFO swapped in after the stat must fail, not hang */
  r = svm_io_open_file(path, O_RDONLY | O_NONBLOCK, 0, true, &f->direct);
  if (r < 0)
    return svm_error(-r, "%s: cannot open the source: %s%s", path, strerror(-r),
                     r == -EACCES ? " (check its permissions)" : "");
  f->fd = r;
  r = svm_io_open_file(path, O_RDONLY, 0, false, NULL);
  if (r < 0)
    return svm_error(-r, "%s: cannot open the source: %s", path, strerror(-r));
  f->fd_buffered = r;
  if ((r = file_size(path, f->fd, size)) < 0)
    return r;
  /* a shared lock: a writer (a running VM's svmd, --punch-zeroes) would change it under us */
  if ((r = svm_disk_lock(f->fd_buffered, path, false)) < 0)
    return r;
  f->lock_fd = f->fd_buffered;
  return 0;
}

static int open_end(struct svm_conv *c)
{
  const char *path = c->src_name;
  uint64_t size = 0;
  int r;

  if (svm_convert_is_nbd_uri(path))
    return svm_copy_nbd_end_open(path, false, &c->src);
  if ((r = open_file(&c->src_file, path, &size, &c->src_mode)) < 0)
    return r;
  return svm_copy_file_end_new(path, c->src_file.fd, c->src_file.fd_buffered,
                               c->src_file.direct, size, false, &c->src);
}

int svm_conv_open_source(struct svm_conv *c)
{
  int r;

  if ((r = open_end(c)) < 0)
    return r;
  c->st.size = c->src->size;
  if ((r = svm_conv_check_size(c->src_name, c->st.size)) < 0)
    return r;
  return svm_copy_end_extents(c->src, c->st.size, &c->map);
}
