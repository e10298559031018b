/* The move journal (migrate.h): STATE/moves/VM.move, a few `key = value` lines:
 *
 *   svm.move = 1
 *   vm = vm1
 *   src-datastore = ds1        src = /srv/ds1/vm1
 *   dst-datastore = ds2        dst = /srv/ds2/vm1
 *
 * written durably before the destination folder exists, so that a start after a crash knows
 * which folder a half-done move made. The file comes from disk: it is bounded and checked
 * before use, and a bad one is reported, never acted on. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "svm/migrate/migrate.h"

enum { JOURNAL_MAX = 16 * 1024 };

static int path_of(const char *dir, const char *vm, const char *suffix, char **out)
{
  if (asprintf(out, "%s/%s.move%s", dir, vm, suffix) < 0) {
    *out = NULL;
    return svm_error(ENOMEM, "out of memory");
  }
  return 0;
}

int svm_journal_write(const char *moves_dir, const struct svm_journal *j)
{
  CLEANUP_FREE char *path = NULL;
  CLEANUP_FREE char *tmp = NULL;
  CLEANUP_CLOSE int fd = -1;
  CLEANUP_CLOSE int dfd = -1;
  char *text = NULL;
  int n, r = 0;

  if (path_of(moves_dir, j->vm, "", &path) < 0 || path_of(moves_dir, j->vm, ".tmp", &tmp) < 0)
    return -ENOMEM;
  n = asprintf(&text, "svm.move = 1\nvm = %s\nsrc-datastore = %s\nsrc = %s\n"
               "dst-datastore = %s\ndst = %s\n", j->vm, j->src_ds, j->src_dir, j->dst_ds,
               j->dst_dir);
  if (n < 0)
    return svm_error(ENOMEM, "out of memory");
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0 || fchmod(fd, 0600) < 0 || write(fd, text, (size_t)n) != n || fsync(fd) < 0 ||
      rename(tmp, path) < 0)
    r = svm_error(errno ? errno : EIO, "%s: %s", path, strerror(errno ? errno : EIO));
  free(text);
  if (r < 0) {
    unlink(tmp);
    return r;
  }
  dfd = open(moves_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0 || fsync(dfd) < 0)
    return svm_error(errno, "%s: fsync: %s", moves_dir, strerror(errno));
  return 0;
}

int svm_journal_remove(const char *moves_dir, const char *vm)
{
  CLEANUP_FREE char *path = NULL;
  CLEANUP_CLOSE int dfd = -1;

  if (path_of(moves_dir, vm, "", &path) < 0)
    return -ENOMEM;
  if (unlink(path) < 0 && errno != ENOENT)
    return svm_error(errno, "%s: %s", path, strerror(errno));
  dfd = open(moves_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0)
    fsync(dfd);
  return 0;
}

static int set_field(struct svm_journal *j, const char *key, const char *val, unsigned *seen)
{
  static const char *const keys[] = { "vm", "src-datastore", "src", "dst-datastore", "dst" };
  char *const fields[] = { j->vm, j->src_ds, j->src_dir, j->dst_ds, j->dst_dir };
  const size_t sizes[] = { sizeof j->vm, sizeof j->src_ds, sizeof j->src_dir, sizeof j->dst_ds,
                           sizeof j->dst_dir };

  if (strcmp(key, "svm.move") == 0)
    return strcmp(val, "1") == 0 ? 0 : svm_error(EINVAL, "unknown version '%s'", val);
  for (unsigned i = 0; i < 5; i++) {
    if (strcmp(key, keys[i]) != 0)
      continue;
    if (strlen(val) >= sizes[i] || !*val)
      return svm_error(EINVAL, "bad value of '%s'", key);
    if (i == 2 || i == 4) {
      if (val[0] != '/' || strstr(val, "/../") || strstr(val, "/./"))
        return svm_error(EINVAL, "'%s' must be an absolute, plain path", key);
    } else if (strchr(val, '/') || val[0] == '.') {
      return svm_error(EINVAL, "bad name in '%s'", key);
    }
    strcpy(fields[i], val);
    *seen |= 1u << i;
    return 0;
  }
  return 0;        /* unknown keys are for later versions */
}

int svm_journal_parse(const char *text, size_t len, struct svm_journal *j)
{
  const char *end = text + len;
  unsigned seen = 0;

  memset(j, 0, sizeof *j);
  if (len > JOURNAL_MAX)
    return svm_error(EFBIG, "larger than %d bytes", JOURNAL_MAX);
  if (memchr(text, '\0', len))
    return svm_error(EINVAL, "holds a NUL byte");
  for (const char *line = text; line < end;) {
    const char *nl = memchr(line, '\n', (size_t)(end - line));
    size_t n = nl ? (size_t)(nl - line) : (size_t)(end - line);
    char buf[4200], *eq;
    if (n >= sizeof buf)
      return svm_error(EINVAL, "line too long");
    memcpy(buf, line, n);
    buf[n] = '\0';
    line += n + (nl ? 1 : 0);
    eq = strstr(buf, " = ");
    if (!buf[0])
      continue;
    if (!eq)
      return svm_error(EINVAL, "line '%.40s' is not 'key = value'", buf);
    *eq = '\0';
    int r = set_field(j, buf, eq + 3, &seen);
    if (r < 0)
      return r;
  }
  if (seen != 31)
    return svm_error(EINVAL, "incomplete (needs vm, src, dst and their datastores)");
  /* the folders are the VM's own: DS/VM */
  const char *s = strrchr(j->src_dir, '/'), *d = strrchr(j->dst_dir, '/');
  if (strcmp(s + 1, j->vm) != 0 || strcmp(d + 1, j->vm) != 0)
    return svm_error(EINVAL, "the folders are not named for VM '%s'", j->vm);
  return 0;
}

static int load(const char *path, struct svm_journal *j)
{
  CLEANUP_CLOSE int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  char buf[JOURNAL_MAX + 1];
  struct stat st;
  ssize_t n;

  if (fd < 0)
    return svm_error(errno, "%s", strerror(errno));
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
    return svm_error(EINVAL, "not a regular file");
  n = read(fd, buf, JOURNAL_MAX + 1);
  if (n < 0)
    return svm_error(errno, "%s", strerror(errno));
  return svm_journal_parse(buf, (size_t)n, j);
}

int svm_journal_scan(const char *moves_dir,
                     void (*fn)(void *opaque, const char *file, const struct svm_journal *j,
                                const char *err),
                     void *opaque)
{
  DIR *d = opendir(moves_dir);
  struct dirent *e;

  if (!d)
    return errno == ENOENT ? 0 : svm_error(errno, "%s: %s", moves_dir, strerror(errno));
  while ((e = readdir(d)) != NULL) {
    size_t n = strlen(e->d_name);
    CLEANUP_FREE char *path = NULL;
    struct svm_journal j;
    if (e->d_name[0] == '.')
      continue;
    if (asprintf(&path, "%s/%s", moves_dir, e->d_name) < 0) {
      path = NULL;
      continue;
    }
    if (n > 9 && strcmp(e->d_name + n - 9, ".move.tmp") == 0) {
      unlink(path);              /* never renamed: its move had not begun */
      continue;
    }
    if (n <= 5 || strcmp(e->d_name + n - 5, ".move") != 0)
      continue;
    if (load(path, &j) < 0)
      fn(opaque, path, NULL, svm_last_error());
    else
      fn(opaque, path, &j, NULL);
  }
  closedir(d);
  return 0;
}
