/* svm_convert_punch_zeroes(): make a raw disk file thin in place (svm/disk/provision.h does the
 * punching); here the checks that the file is a disk, and the result's durability. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/filekind.h"
#include "svm/disk/lock.h"
#include "svm/convert/internal.h"
#include "svm/disk/provision.h"

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int check_disk(const char *disk, uint64_t *size)
{
  struct stat sb;

  if (svm_convert_is_nbd_uri(disk))
    return svm_error(EINVAL, "%s: --punch-zeroes works on raw disk files (to make an NBD "
                     "export thin, convert it: svm-convert SRC DST)", disk);
  if (stat(disk, &sb) < 0)
    return svm_error(errno, "%s: %s%s", disk, strerror(errno),
                     errno == ENOENT ? " (check the path)" : "");
  if (S_ISDIR(sb.st_mode))
    return svm_error(EISDIR, "%s: is a directory, not a disk image (give the disk file)", disk);
  if (!S_ISREG(sb.st_mode))
    return svm_error(EINVAL, "%s: is %s, not a disk image (--punch-zeroes works on raw disk "
                     "files)", disk, svm_file_kind(sb.st_mode));
  *size = (uint64_t)sb.st_size;
  return svm_conv_check_size(disk, *size);
}

static int punch(const char *disk, struct svm_convert_stats *st)
{
  CLEANUP_CLOSE int fd = -1;
  int r;

  if ((r = check_disk(disk, &st->size)) < 0)
    return r;
  fd = open(disk, O_RDWR | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0)
    return svm_error(errno, "%s: cannot open for writing: %s", disk, strerror(errno));
  /* exclusive: punching a disk that a guest writes through svmd would turn its writes into
   * zeros */
  if ((r = svm_disk_lock(fd, disk, true)) < 0)
    return r;
  r = svm_punch_zeroes(fd, disk, SVM_COPY_ZERO_BLOCK, &st->bytes_read, &st->bytes_punched);
  st->bytes_skipped_zero = st->bytes_punched;
  if (r == 0 && fsync(fd) < 0)
    r = svm_error(errno, "%s: fsync: %s", disk, strerror(errno));
  svm_disk_unlock(fd);
  return r;
}

int svm_convert_punch_zeroes(const char *disk, const struct svm_convert_options *o,
                             struct svm_convert_stats *stats)
{
  struct svm_convert_stats st = { 0 };
  double t0 = now();
  int r;

  (void)o;
  r = punch(disk, &st);
  st.seconds = now() - t0;
  if (stats != NULL)
    *stats = st;
  return r;
}
