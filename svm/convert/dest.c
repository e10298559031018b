/* svm_convert()'s destination: an NBD export, or a raw file written as DST.svm-part-PID next to
 * DST and renamed over it only once complete and durable (any failure unlinks it). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "svm/convert/internal.h"
#include "svm/disk/lock.h"
#include "svm/disk/provision.h"

static char *dir_of(const char *path)
{
  CLEANUP_FREE char *copy = strdup(path);

  return copy != NULL ? strdup(dirname(copy)) : NULL;
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

/* A destination on /proc or /sys would be a write into a kernel interface, never a disk. */
static int check_fs(const char *path)
{
  CLEANUP_FREE char *dir = dir_of(path);
  struct statfs fs;

  if (dir == NULL)
    return svm_error(ENOMEM, "out of memory");
  if (statfs(dir, &fs) < 0)
    return 0;                 /* check_space says what is wrong with the directory */
  if (fs.f_type == PROC_SUPER_MAGIC || fs.f_type == SYSFS_MAGIC)
    return svm_error(EINVAL, "%s: is on %s, a kernel interface, not a disk: give a destination "
                     "on a disk file system", path,
                     fs.f_type == PROC_SUPER_MAGIC ? "/proc" : "/sys");
  return 0;
}

/* An existing DST that --force replaces: write-locked while we work, so that a disk some svmd
 * or svm-convert has open is never renamed over behind its back. */
static int lock_existing(struct svm_conv *c, const char *path)
{
  int fd = open(path, O_WRONLY | O_CLOEXEC | O_NONBLOCK);
  int r;

  if (fd < 0)
    return errno == ENOENT ? 0 : svm_error(errno, "%s: %s", path, strerror(errno));
  r = svm_disk_lock(fd, path, true);
  if (r < 0) {
    close(fd);
    return r;
  }
  c->dst_lock_fd = fd;
  return 0;
}

/* DST may be new, or (with --force) a regular file other than the source. */
static int check_path(struct svm_conv *c, const char *path)
{
  struct stat st, sst;
  int r;

  if ((r = check_fs(path)) < 0)
    return r;
  if (stat(path, &st) < 0)
    return errno == ENOENT ? 0 : svm_error(errno, "%s: %s", path, strerror(errno));
  if (S_ISDIR(st.st_mode))
    return svm_error(EISDIR, "%s: the destination is a directory (give a file name for the "
                     "new disk)", path);
  if (!S_ISREG(st.st_mode))
    return svm_error(EINVAL, "%s: the destination exists and is not a regular file", path);
  if (c->src_file.fd >= 0 && fstat(c->src_file.fd, &sst) == 0 && sst.st_dev == st.st_dev &&
      sst.st_ino == st.st_ino)
    return svm_error(EINVAL, "%s: source and destination are the same file", path);
  if (!c->o->force)
    return svm_error(EEXIST, "%s: the destination already exists (use --force to replace it)",
                     path);
  return lock_existing(c, path);
}

static int check_space(const struct svm_conv *c, const char *path, uint64_t data_bytes)
{
  enum svm_provisioning prov = c->o->prov;
  CLEANUP_FREE char *dir = dir_of(path);
  struct statvfs vfs;
  char hn[64], ha[64];

  if (dir == NULL)
    return svm_error(ENOMEM, "out of memory");
  if (statvfs(dir, &vfs) < 0)
    return svm_error(errno, "%s: cannot use the destination directory %s: %s%s", path, dir,
                     strerror(errno), errno == ENOENT ? " (create it first)" : "");
  uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
  uint64_t need = svm_provision_needed(prov, c->st.size, data_bytes);
  if (need <= avail)
    return 0;
  human(need, hn, sizeof hn);
  human(avail, ha, sizeof ha);
  return svm_error(ENOSPC, "%s: not enough space: %s provisioning needs %s, %s has %s free "
                   "(free some space%s)", path, svm_provisioning_to_string(prov), hn, dir, ha,
                   prov == SVM_PROVISIONING_THIN ? "" : " or choose thin provisioning");
}

/* The temporary file, sized and allocated as the provisioning asks. A fresh file reads as
 * zeros wherever it is not written. */
static int create_temp(struct svm_conv *c, const char *path)
{
  struct svm_conv_file *f = &c->dst_file;
  CLEANUP_FREE char *tmp = NULL;
  int r;

  if (asprintf(&tmp, "%s.svm-part-%d", path, (int)getpid()) < 0) {
    tmp = NULL;
    return svm_error(ENOMEM, "out of memory");
  }
  r = svm_io_open_file(tmp, O_RDWR | O_CREAT | O_EXCL, c->src_mode, true, &f->direct);
  if (r < 0)
    return svm_error(-r, "%s: cannot create the destination: %s", tmp, strerror(-r));
  c->tmp = TAKE_PTR(tmp);     /* ours now: unlinked unless renamed */
  f->fd = r;
  /* the source's mode whatever the umask (a private disk stays private) */
  if (fchmod(f->fd, c->src_mode) < 0)
    return svm_error(errno, "%s: chmod: %s", c->tmp, strerror(errno));
  if ((r = svm_disk_lock(f->fd, c->tmp, true)) < 0)
    return r;
  f->lock_fd = f->fd;
  if ((r = svm_io_open_file(c->tmp, O_RDWR, 0, false, NULL)) < 0)
    return svm_error(-r, "%s: %s", c->tmp, strerror(-r));
  f->fd_buffered = r;
  if ((r = svm_provision_prepare(f->fd_buffered, path, c->st.size, c->o->prov)) < 0)
    return r;
  c->dst_reads_zero = true;
  return svm_copy_file_end_new(path, f->fd, f->fd_buffered, f->direct, c->st.size, true,
                               &c->dst);
}

/* Is every block of an NBD destination already reading as zeros? Thick and eager ask the
 * server to allocate zeros (zero requests with NO_HOLE), so they are sent whatever is there. */
static bool nbd_reads_zero(struct svm_conv *c)
{
  struct svm_extent_list l;
  bool zero;

  if (c->o->prov != SVM_PROVISIONING_THIN)
    return false;
  svm_extent_list_init(&l);
  zero = svm_copy_end_extents(c->dst, c->st.size, &l) == 0 &&
         svm_extent_list_bytes(&l, SVM_EXTENT_ZERO, SVM_EXTENT_ZERO) == c->st.size;
  svm_extent_list_free(&l);
  svm_error_clear();
  return zero;
}

static int open_nbd(struct svm_conv *c, const char *uri)
{
  int r = svm_copy_nbd_end_open(uri, true, &c->dst);

  if (r < 0)
    return r;
  if (c->dst->size < c->st.size)
    return svm_error(ENOSPC, "%s: the NBD export is %" PRIu64 " bytes, smaller than the "
                     "source's %" PRIu64 " bytes (create it at least as large, e.g. qemu-img "
                     "create -f qcow2 FILE %" PRIu64 ")", uri, c->dst->size, c->st.size,
                     c->st.size);
  c->dst_reads_zero = nbd_reads_zero(c);
  return 0;
}

int svm_conv_open_dest(struct svm_conv *c, uint64_t data_bytes)
{
  const char *path = c->dst_name;
  int r;

  if (svm_convert_is_nbd_uri(path))
    return open_nbd(c, path);
  if ((r = check_path(c, path)) < 0 || (r = check_space(c, path, data_bytes)) < 0)
    return r;
  return create_temp(c, path);
}

static int sync_dir_of(const char *path)
{
  CLEANUP_FREE char *dir = dir_of(path);
  CLEANUP_CLOSE int fd = -1;

  if (dir == NULL)
    return -ENOMEM;
  fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0 && fsync(fd) < 0)
    return -errno;
  return 0;
}

static int finish_file(struct svm_conv *c, const char *path)
{
  uint64_t zw = 0;
  int r = svm_provision_finish(c->dst_file.fd_buffered, path, c->st.size, c->o->prov, &zw);

  if (r < 0)
    return r;
  c->st.bytes_written += zw;
  if ((r = svm_copy_end_finish(c->dst)) < 0)
    return r;
  if (rename(c->tmp, path) < 0)
    return svm_error(errno, "%s: cannot rename %s into place: %s", path, c->tmp,
                     strerror(errno));
  free(c->tmp);               /* renamed: nothing to remove */
  c->tmp = NULL;
  r = sync_dir_of(path);
  if (r < 0)
    return svm_error(-r, "%s: syncing its directory: %s", path, strerror(-r));
  return 0;
}

int svm_conv_finish_dest(struct svm_conv *c)
{
  if (svm_convert_is_nbd_uri(c->dst_name))
    return svm_copy_end_finish(c->dst);
  return finish_file(c, c->dst_name);
}

static void close_file(struct svm_conv_file *f)
{
  if (f->lock_fd >= 0)
    svm_disk_unlock(f->lock_fd);
  f->lock_fd = -1;
  if (f->fd >= 0)
    close(f->fd);
  if (f->fd_buffered >= 0)
    close(f->fd_buffered);
  f->fd = f->fd_buffered = -1;
}

/* The ends go first: freeing a file end waits for its requests still in flight, an NBD end
 * drops them, and only then may the copy engine's buffers and the descriptors go. */
void svm_conv_close(struct svm_conv *c)
{
  svm_copy_end_free(c->src);
  svm_copy_end_free(c->dst);
  c->src = c->dst = NULL;
  svm_copy_free(c->copy);
  c->copy = NULL;
  close_file(&c->src_file);
  close_file(&c->dst_file);
  if (c->dst_lock_fd >= 0) {
    svm_disk_unlock(c->dst_lock_fd);
    close(c->dst_lock_fd);
    c->dst_lock_fd = -1;
  }
  if (c->tmp != NULL) {
    unlink(c->tmp);
    free(c->tmp);
    c->tmp = NULL;
  }
  svm_extent_list_free(&c->map);
}
