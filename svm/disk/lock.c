/* Image locking (see lock.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "svm/disk/lock.h"

/* Does /proc/PID/fdinfo/FD list an OFD lock? (fdinfo shows the locks that open file owns.) */
static bool fd_holds_ofd_lock(const char *pid, const char *fd)
{
  char p[600], line[256];
  bool found = false;
  FILE *f;

  snprintf(p, sizeof p, "/proc/%s/fdinfo/%s", pid, fd);
  f = fopen(p, "re");
  if (!f)
    return false;
  while (!found && fgets(line, sizeof line, f))
    found = strncmp(line, "lock:", 5) == 0 && strstr(line, "OFDLCK") != NULL;
  fclose(f);
  return found;
}

/* Is one of pid's descriptors st's file, holding an OFD lock? */
static bool pid_holds(const char *pid, const struct stat *st)
{
  char p[300];
  struct dirent *e;
  bool found = false;
  DIR *d;

  snprintf(p, sizeof p, "/proc/%s/fd", pid);
  d = opendir(p);
  if (!d)
    return false;
  while (!found && (e = readdir(d)) != NULL) {
    struct stat fst;
    char fp[600];
    if (e->d_name[0] == '.')
      continue;
    snprintf(fp, sizeof fp, "%s/%s", p, e->d_name);
    found = stat(fp, &fst) == 0 && fst.st_dev == st->st_dev && fst.st_ino == st->st_ino &&
            fd_holds_ofd_lock(pid, e->d_name);
  }
  closedir(d);
  return found;
}

/* OFD locks carry no pid (F_OFD_GETLK says -1, /proc/locks too), so the holder is found the
 * way lslocks does: the process with a descriptor of this file whose fdinfo lists the lock.
 * Only processes we may look into are seen; "" when none is found. Error path only. */
static void find_holder(int fd, char *out, size_t len)
{
  struct stat st;
  struct dirent *e;
  char self[32];
  DIR *d;

  out[0] = '\0';
  if (fstat(fd, &st) < 0 || !(d = opendir("/proc")))
    return;
  snprintf(self, sizeof self, "%ld", (long)getpid());
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] < '1' || e->d_name[0] > '9' || !pid_holds(e->d_name, &st))
      continue;
    char comm[64] = "?", p[300];
    snprintf(p, sizeof p, "/proc/%s/comm", e->d_name);
    FILE *f = fopen(p, "re");
    if (f) {
      if (fgets(comm, sizeof comm, f))
        comm[strcspn(comm, "\n")] = '\0';
      fclose(f);
    }
    snprintf(out, len, " (%s, pid %s%s)", comm, e->d_name,
             strcmp(e->d_name, self) == 0 ? ": this process" : "");
    break;
  }
  closedir(d);
}

int svm_disk_lock(int fd, const char *path, bool exclusive)
{
  char who[384];

  struct flock fl = { .l_type = exclusive ? F_WRLCK : F_RDLCK, .l_whence = SEEK_SET };

  if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
    return 0;
  if (errno == EINVAL || errno == ENOLCK || errno == EOPNOTSUPP)
    return 0;                         /* no OFD locks here: unlocked, as QEMU does */
  if (errno != EAGAIN && errno != EACCES)
    return svm_error(errno, "%s: lock: %s", path, strerror(errno));
  /* Who is in the way: a reader or a writer (F_OFD_GETLK), and which process (find_holder) */
  fl = (struct flock){ .l_type = F_WRLCK, .l_whence = SEEK_SET };
  find_holder(fd, who, sizeof who);
  if (fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type == F_RDLCK)
    return svm_error(EBUSY, "%s: another process (svmd or svm-convert) is reading it%s (it "
                     "holds a shared lock), so it cannot be written now: wait for that copy "
                     "to finish, then retry", path, who);
  return svm_error(EBUSY, "%s: another process (svmd or svm-convert) holds a write lock on "
                   "it%s: stop the VM's svmd (svmctl vm list shows the VMs it serves) or wait "
                   "for svm-convert to finish, then retry; to read a running VM's disk, use "
                   "its NBD export", path, who);
}
