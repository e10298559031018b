/* Disk files are confined to their VM folder (see internal.h): a descriptor names files, not
 * paths (descriptor.c refuses '/', "." and ".."), and here each name is looked up inside the
 * folder without following a symbolic link, and must be a regular file. The lookup opens with
 * O_PATH: a FIFO or a device is never opened (nothing blocks, no driver sees an open), only its
 * type is read. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/filekind.h"
#include "svm/agent/internal.h"

int agent_check_file(const char *dir, const char *name, bool may_be_missing, struct stat *st)
{
  CLEANUP_CLOSE int dfd = open(dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  CLEANUP_CLOSE int fd = -1;
  struct stat sb;

  if (dfd < 0)
    return svm_error(errno, "%s: %s%s", dir, strerror(errno),
                     errno == ENOTDIR || errno == ELOOP ? " (a VM folder is a plain directory "
                     "in its datastore, not a link)" : "");
  fd = openat(dfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT && may_be_missing)
    return 0;
  if (fd < 0)
    return svm_error(errno, "%s/%s: %s", dir, name, strerror(errno));
  if (fstat(fd, &sb) < 0)
    return svm_error(errno, "%s/%s: stat: %s", dir, name, strerror(errno));
  if (S_ISLNK(sb.st_mode))
    return svm_error(ELOOP, "%s/%s: is a symbolic link; svmd follows none (the files of a VM "
                     "are plain files inside its folder: move the file there instead)", dir,
                     name);
  if (!S_ISREG(sb.st_mode))
    return svm_error(EINVAL, "%s/%s: is %s, not a regular file (the files of a VM are plain "
                     "files inside its folder)", dir, name, svm_file_kind(sb.st_mode));
  if (st)
    *st = sb;
  return 0;
}
