/* The files of a VM folder during a move: config files copied to the destination, a folder
 * made by a move removed again, and the source folder retired after the commit. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "svm/migrate/migrate.h"

static int fsync_dir(const char *dir)
{
  CLEANUP_CLOSE int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

  if (fd < 0 || fsync(fd) < 0)
    return svm_error(errno, "%s: fsync: %s", dir, strerror(errno));
  return 0;
}

static int copy_fd(int in, int out, const char *src, const char *dst)
{
  char buf[64 * 1024];

  for (;;) {
    ssize_t n = read(in, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return svm_error(errno, "%s: read: %s", src, strerror(errno));
    if (n == 0)
      return 0;
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(out, buf + off, (size_t)(n - off));
      if (w < 0 && errno == EINTR)
        continue;
      if (w < 0)
        return svm_error(errno, "%s: write: %s", dst, strerror(errno));
      off += w;
    }
  }
}

int svm_move_copy_file(const char *src, const char *dst)
{
  CLEANUP_FREE char *tmp = NULL;
  CLEANUP_FREE char *dir = NULL;
  CLEANUP_CLOSE int in = -1;
  CLEANUP_CLOSE int out = -1;
  struct stat st;
  int r;

  if (asprintf(&tmp, "%s.tmp", dst) < 0) {
    tmp = NULL;
    return svm_error(ENOMEM, "out of memory");
  }
  dir = strdup(dst);
  if (!dir)
    return svm_error(ENOMEM, "out of memory");
  *strrchr(dir, '/') = '\0';
  in = open(src, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (in < 0)
    return svm_error(errno, "%s: %s", src, strerror(errno));
  if (fstat(in, &st) < 0 || !S_ISREG(st.st_mode))
    return svm_error(EINVAL, "%s: not a regular file", src);
  out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, st.st_mode & 0777);
  if (out < 0)
    return svm_error(errno, "%s: %s", tmp, strerror(errno));
  fchmod(out, st.st_mode & 0777);      /* whatever the umask */
  r = copy_fd(in, out, src, tmp);
  if (r == 0 && fsync(out) < 0)
    r = svm_error(errno, "%s: fsync: %s", tmp, strerror(errno));
  if (r == 0 && rename(tmp, dst) < 0)
    r = svm_error(errno, "%s: rename to %s: %s", tmp, dst, strerror(errno));
  if (r < 0) {
    unlink(tmp);
    return r;
  }
  return fsync_dir(dir);
}

static bool skipped(const char *name, const char *const *skip)
{
  for (size_t i = 0; skip && skip[i]; i++)
    if (strcmp(skip[i], name) == 0)
      return true;
  return false;
}

int svm_move_copy_files(const char *src_dir, const char *dst_dir, const char *const *skip)
{
  DIR *d = opendir(src_dir);
  struct dirent *e;
  int r = 0;

  if (!d)
    return svm_error(errno, "%s: %s", src_dir, strerror(errno));
  while (r == 0 && (e = readdir(d)) != NULL) {
    CLEANUP_FREE char *s = NULL;
    CLEANUP_FREE char *t = NULL;
    struct stat st;
    if (e->d_name[0] == '.' || skipped(e->d_name, skip))
      continue;
    if (asprintf(&s, "%s/%s", src_dir, e->d_name) < 0 ||
        asprintf(&t, "%s/%s", dst_dir, e->d_name) < 0) {
      r = svm_error(ENOMEM, "out of memory");
      break;
    }
    /* only regular files travel: a VM folder holds no others, and a link is never followed */
    if (lstat(s, &st) < 0 || !S_ISREG(st.st_mode))
      continue;
    r = svm_move_copy_file(s, t);
  }
  closedir(d);
  return r;
}

int svm_move_remove_folder(const char *dir, char **left)
{
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  DIR *d = opendir(dir);
  struct dirent *e;

  *left = NULL;
  if (!d) {
    if (f)
      fclose(f);
    free(buf);
    return errno == ENOENT ? 0 : svm_error(errno, "%s: %s", dir, strerror(errno));
  }
  while ((e = readdir(d)) != NULL) {
    struct stat st;
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
      if (f)
        fprintf(f, " %s/%s (a folder: left alone)", dir, e->d_name);
      continue;
    }
    if (unlinkat(dirfd(d), e->d_name, 0) < 0 && f)
      fprintf(f, " %s/%s (%s)", dir, e->d_name, strerror(errno));
  }
  closedir(d);
  if (rmdir(dir) < 0 && errno != ENOTEMPTY && f)
    fprintf(f, " %s (%s)", dir, strerror(errno));
  if (f)
    fclose(f);
  if (len) {
    *left = buf;
    return svm_error(EIO, "could not remove:%s", buf);
  }
  free(buf);
  /* the folder's entry is in the datastore's directory */
  CLEANUP_FREE char *parent = strdup(dir);
  if (parent && strrchr(parent, '/')) {
    *strrchr(parent, '/') = '\0';
    fsync_dir(parent);
  }
  return 0;
}

int svm_move_retire_folder(const char *dir, const char *tag, char **retired)
{
  CLEANUP_FREE char *parent = strdup(dir);
  const char *name;
  char *to = NULL;

  *retired = NULL;
  if (!parent)
    return svm_error(ENOMEM, "out of memory");
  if (!strrchr(parent, '/'))
    return svm_error(EINVAL, "%s: not a path to a VM folder", dir);
  *strrchr(parent, '/') = '\0';
  name = dir + strlen(parent) + 1;
  if (asprintf(&to, "%s/" SVM_RETIRED_PREFIX "%s-%s", parent, name, tag) < 0)
    return svm_error(ENOMEM, "out of memory");
  /* RENAME_NOREPLACE: a leftover of that name (a crash's) is never merged into */
  if (renameat2(AT_FDCWD, dir, AT_FDCWD, to, RENAME_NOREPLACE) < 0) {
    int e = svm_error(errno, "%s: rename to %s: %s", dir, to, strerror(errno));
    free(to);
    return e;
  }
  fsync_dir(parent);            /* best effort: a start after a crash removes either name */
  *retired = to;
  return 0;
}

static bool stopped(const atomic_bool *stop)
{
  return stop != NULL && atomic_load(stop);
}

/* Shrink one file to nothing, SVM_RETIRE_STEP at a time, resting after the steps that freed
 * blocks. Best effort: the unlink that follows frees whatever is left. */
static void shrink_file(int dirfd, const char *name, const atomic_bool *stop)
{
  int fd = openat(dirfd, name, O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  struct stat st;

  if (fd < 0)
    return;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
    blkcnt_t blocks = st.st_blocks;
    for (off_t size = st.st_size; size > SVM_RETIRE_STEP && !stopped(stop);) {
      size -= SVM_RETIRE_STEP;
      if (ftruncate(fd, size) < 0 || fstat(fd, &st) < 0)
        break;
      /* rest in proportion to what was freed: a hole's steps cost none */
      uint64_t freed = (uint64_t)(blocks - st.st_blocks) * 512, us;
      blocks = st.st_blocks;
      us = freed * SVM_RETIRE_REST_US / SVM_RETIRE_STEP;
      if (us > 0)
        nanosleep(&(struct timespec){ .tv_sec = (time_t)(us / 1000000),
                                      .tv_nsec = (long)(us % 1000000) * 1000 }, NULL);
    }
  }
  close(fd);
}

int svm_move_remove_retired_folder(const char *dir, const atomic_bool *stop, char **left)
{
  DIR *d = opendir(dir);
  struct dirent *e;

  *left = NULL;
  if (d) {
    while ((e = readdir(d)) != NULL && !stopped(stop))
      if (e->d_type == DT_REG || e->d_type == DT_UNKNOWN)
        shrink_file(dirfd(d), e->d_name, stop);
    closedir(d);
  }
  if (stopped(stop))
    return svm_error(ECANCELED, "%s: left for the next start of svmd to remove", dir);
  return svm_move_remove_folder(dir, left);
}

void svm_move_remove_retired(const char *ds_dir,
                             void (*log)(void *opaque, const char *path, const char *err),
                             void *opaque)
{
  DIR *d = opendir(ds_dir);
  struct dirent *e;

  if (!d)
    return;
  while ((e = readdir(d)) != NULL) {
    CLEANUP_FREE char *path = NULL;
    char *left = NULL;
    if (strncmp(e->d_name, SVM_RETIRED_PREFIX, strlen(SVM_RETIRED_PREFIX)) != 0)
      continue;
    if (asprintf(&path, "%s/%s", ds_dir, e->d_name) < 0) {
      path = NULL;
      break;
    }
    log(opaque, path,
        svm_move_remove_retired_folder(path, NULL, &left) < 0 ? svm_last_error() : NULL);
    free(left);
  }
  closedir(d);
}
