/* Image locking (see lock.h). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "common/error.h"
#include "svm/disk/lock.h"

int svm_disk_lock(int fd, const char *path, bool exclusive)
{
  struct flock fl = { .l_type = exclusive ? F_WRLCK : F_RDLCK, .l_whence = SEEK_SET };

  if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
    return 0;
  if (errno == EINVAL || errno == ENOLCK || errno == EOPNOTSUPP)
    return 0;                         /* no OFD locks here: unlocked, as QEMU does */
  if (errno != EAGAIN && errno != EACCES)
    return svm_error(errno, "%s: lock: %s", path, strerror(errno));
  /* Who is in the way? OFD locks carry no pid (l_pid is -1), so only the kind is known. */
  fl = (struct flock){ .l_type = F_WRLCK, .l_whence = SEEK_SET };
  if (fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type == F_RDLCK)
    return svm_error(EBUSY, "%s: another process (svmd or svm-convert) is reading it (it holds "
                     "a shared lock), so it cannot be written now: wait for that copy to "
                     "finish, then retry", path);
  return svm_error(EBUSY, "%s: another process (svmd or svm-convert) holds a write lock on it: "
                   "stop the VM's svmd (svmctl vm list shows the VMs it serves) or wait for "
                   "svm-convert to finish, then retry; to read a running VM's disk, use its "
                   "NBD export", path);
}
