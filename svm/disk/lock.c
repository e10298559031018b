/* Image locking (see lock.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "svm/disk/lock.h"

/* The images this process holds locked: the lock lives on `fd`, a duplicate kept here, so it
 * outlasts whichever of the process's opens closes first. */
struct held {
  struct held *next;
  dev_t dev;
  ino_t ino;
  int fd;
  bool exclusive;
  unsigned refs;
};
static struct held *held_list;
static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;

static struct held *find_held(const struct stat *st)
{
  for (struct held *h = held_list; h; h = h->next)
    if (h->dev == st->st_dev && h->ino == st->st_ino)
      return h;
  return NULL;
}

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

/* Take the OFD lock on fd: 0, 1 when the file system has no OFD locks, or -errno with
 * svm_error set. */
static int set_lock(int fd, const char *path, bool exclusive)
{
  char who[384];

  struct flock fl = { .l_type = exclusive ? F_WRLCK : F_RDLCK, .l_whence = SEEK_SET };

  if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
    return 0;
  if (errno == EINVAL || errno == ENOLCK || errno == EOPNOTSUPP)
    return 1;                         /* no OFD locks here: unlocked, as QEMU does */
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

/* A writer joins this process's shared lock. The held descriptor may be read-only, and a write
 * lock needs one open for writing, so the lock moves to a duplicate of the writer's fd: the
 * shared lock is dropped, the write lock taken, and on a conflict (another process reads the
 * file) the shared lock is taken back. */
static int upgrade(struct held *h, int fd, const char *path)
{
  struct flock un = { .l_type = F_UNLCK, .l_whence = SEEK_SET };
  int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  int r;

  if (dup_fd < 0)
    return svm_error(errno, "%s: lock: %s", path, strerror(errno));
  (void)fcntl(h->fd, F_OFD_SETLK, &un);
  if ((r = set_lock(dup_fd, path, true)) < 0) {
    close(dup_fd);
    (void)set_lock(h->fd, path, false);
    return r;
  }
  close(h->fd);
  h->fd = dup_fd;
  h->exclusive = true;
  return 0;
}

int svm_disk_lock(int fd, const char *path, bool exclusive)
{
  struct stat st;
  struct held *h;
  int r;

  if (fstat(fd, &st) < 0)
    return svm_error(errno, "%s: stat: %s", path, strerror(errno));
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&held_lock);
  h = find_held(&st);
  if (h) {
    /* this process has it open already: share the lock, upgrading it for a writer */
    if (exclusive && !h->exclusive && (r = upgrade(h, fd, path)) < 0)
      return r;
    h->refs++;
    return 0;
  }
  if ((r = set_lock(fd, path, exclusive)) != 0)
    return r < 0 ? r : 0;
  h = calloc(1, sizeof *h);
  int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (!h || dup_fd < 0) {
    r = errno ? errno : ENOMEM;
    free(h);
    if (dup_fd >= 0)
      close(dup_fd);
    struct flock un = { .l_type = F_UNLCK, .l_whence = SEEK_SET };
    (void)fcntl(fd, F_OFD_SETLK, &un);
    return svm_error(r, "%s: lock: %s", path, strerror(r));
  }
  *h = (struct held){ .next = held_list, .dev = st.st_dev, .ino = st.st_ino, .fd = dup_fd,
                      .exclusive = exclusive, .refs = 1 };
  held_list = h;
  return 0;
}

void svm_disk_unlock(int fd)
{
  struct stat st;

  if (fstat(fd, &st) < 0)
    return;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&held_lock);
  for (struct held **pp = &held_list; *pp; pp = &(*pp)->next) {
    struct held *h = *pp;
    if (h->dev != st.st_dev || h->ino != st.st_ino)
      continue;
    if (--h->refs == 0) {
      *pp = h->next;
      close(h->fd);                   /* the lock goes with the last descriptor of its file */
      free(h);
    }
    return;
  }
}
