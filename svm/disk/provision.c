/* Provisioning of raw disk files: thin, thick (lazy-zeroed) and eager-zeroed thick.
 * See provision.h for the model; the reason for each choice is next to it. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/error.h"
#include "svm/disk/extents.h"
#include "svm/io/io.h"
#include "svm/disk/provision.h"
#include "svm/disk/zero.h"

enum { ZERO_CHUNK = 1 << 20 };

const char *svm_provisioning_to_string(enum svm_provisioning p)
{
  switch (p) {
  case SVM_PROVISIONING_THIN:
    return "thin";
  case SVM_PROVISIONING_THICK:
    return "thick";
  case SVM_PROVISIONING_EAGER:
    return "eager-zeroed-thick";
  }
  return "unknown";
}

int svm_provisioning_from_string(const char *s, enum svm_provisioning *out)
{
  if (strcmp(s, "thin") == 0)
    *out = SVM_PROVISIONING_THIN;
  else if (strcmp(s, "thick") == 0 || strcmp(s, "lazy-zeroed-thick") == 0)
    *out = SVM_PROVISIONING_THICK;
  else if (strcmp(s, "eager-zeroed-thick") == 0 || strcmp(s, "eager") == 0 ||
           strcmp(s, "eagerzeroedthick") == 0)
    *out = SVM_PROVISIONING_EAGER;
  else
    return svm_error(EINVAL, "provisioning '%s': unknown (use thin, thick or eager-zeroed-thick)",
                     s);
  return 0;
}

int svm_provision_prepare(int fd, const char *path, uint64_t size, enum svm_provisioning p)
{
  if (ftruncate(fd, (off_t)size) < 0)
    return svm_error(errno, "%s: cannot set size to %llu bytes: %s", path,
                     (unsigned long long)size, strerror(errno));
  if (p == SVM_PROVISIONING_THIN || size == 0)
    return 0;
  /* Thick and eager: reserve every block now, so that running out of space shows here and not
   * halfway through the copy, and the file is laid out in few extents. A request that cannot
   * fit is refused before fallocate(), which would otherwise fill the file system up to the
   * last block (ext4 keeps what it allocated) and make every other writer fail meanwhile. */
  struct statvfs vfs;
  struct stat st;
  if (fstatvfs(fd, &vfs) == 0 && fstat(fd, &st) == 0) {
    uint64_t have = (uint64_t)st.st_blocks * 512, avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    if (size > have && size - have > avail)
      return svm_error(ENOSPC, "%s: not enough space to allocate %llu bytes (%s provisioning): "
                       "free some space or choose thin provisioning", path,
                       (unsigned long long)size, svm_provisioning_to_string(p));
  }
  if (fallocate(fd, 0, 0, (off_t)size) < 0) {
    int e = errno;
    if (e == ENOSPC)
      return svm_error(e, "%s: not enough space to allocate %llu bytes (%s provisioning): "
                       "free some space or choose thin provisioning", path,
                       (unsigned long long)size, svm_provisioning_to_string(p));
    if (e != EOPNOTSUPP)
      return svm_error(e, "%s: fallocate: %s", path, strerror(e));
    /* No fallocate on this file system: allocate by writing zeros (eager-zeroed, then). */
    return svm_provision_finish(fd, path, size, SVM_PROVISIONING_EAGER, NULL);
  }
  return 0;
}

bool svm_provision_skip_zero(enum svm_provisioning p)
{
  /* Thin: a skipped block stays a hole. Thick: it stays an allocated, unwritten extent, which
   * reads as zeros. Eager: finish() writes zeros over it. None need the write. */
  (void)p;
  return true;
}

static int write_zeros(int fd, const char *path, uint64_t off, uint64_t len, const char *zeros,
                       uint64_t *written)
{
  while (len > 0) {
    size_t n = len < ZERO_CHUNK ? (size_t)len : ZERO_CHUNK;
    ssize_t w = pwrite(fd, zeros, n, (off_t)off);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      if (errno == ENOSPC)
        return svm_error(ENOSPC, "%s: no space left to write zeros at offset %llu: "
                         "free some space or choose thin or thick provisioning", path,
                         (unsigned long long)off);
      return svm_error(errno, "%s: writing zeros at offset %llu: %s", path,
                       (unsigned long long)off, strerror(errno));
    }
    off += (uint64_t)w;
    len -= (uint64_t)w;
    if (written != NULL)
      *written += (uint64_t)w;
  }
  return 0;
}

int svm_provision_finish(int fd, const char *path, uint64_t size, enum svm_provisioning p,
                         uint64_t *zero_written)
{
  struct svm_extent_list todo, holes;
  char *zeros = NULL;
  int r;

  if (p != SVM_PROVISIONING_EAGER || size == 0)
    return 0;
  svm_extent_list_init(&todo);
  svm_extent_list_init(&holes);
  /* What is not yet written is either a hole or an unwritten (fallocated) extent. */
  zeros = calloc(1, ZERO_CHUNK);
  if (zeros == NULL) {
    r = svm_error(ENOMEM, "%s: out of memory", path);
    goto out;
  }
  r = svm_extents_unwritten(fd, &todo);
  if (r < 0 && r != -EOPNOTSUPP) {
    r = svm_error(-r, "%s: FIEMAP: %s", path, strerror(-r));
    goto out;
  }
  for (size_t i = 0; i < todo.n; i++) {
    uint64_t off = todo.v[i].off, end = off + todo.v[i].len;
    if (end > size)
      end = size;      /* KEEP_SIZE preallocation past the end is not the disk's */
    if (off < end && (r = write_zeros(fd, path, off, end - off, zeros, zero_written)) < 0)
      goto out;
  }
  /* Then the holes. ext4 and xfs show unwritten extents as holes to SEEK_HOLE too, so look
   * only now that those are written (and synced, so they are no longer unwritten). */
  if (todo.n > 0 && fdatasync(fd) < 0) {
    r = svm_error(errno, "%s: fdatasync: %s", path, strerror(errno));
    goto out;
  }
  r = svm_extents_scan(fd, 0, size, &holes);
  if (r < 0) {
    r = svm_error(-r, "%s: SEEK_HOLE: %s", path, strerror(-r));
    goto out;
  }
  for (size_t i = 0; i < holes.n; i++)
    if ((holes.v[i].flags & SVM_EXTENT_HOLE) &&
        (r = write_zeros(fd, path, holes.v[i].off, holes.v[i].len, zeros, zero_written)) < 0)
      goto out;
  r = 0;
out:
  free(zeros);
  svm_extent_list_free(&todo);
  svm_extent_list_free(&holes);
  return r;
}

uint64_t svm_provision_needed(enum svm_provisioning p, uint64_t size, uint64_t data_bytes)
{
  return p == SVM_PROVISIONING_THIN ? data_bytes : size;
}

int svm_punch_zeroes(int fd, const char *path, uint64_t block, uint64_t *scanned,
                     uint64_t *punched)
{
  enum { BUF = 4 << 20 };
  struct stat st;
  struct svm_extent e;
  char *buf;
  int r = 0;

  if (block == 0 || block % 512 != 0 || BUF % block != 0)
    return svm_error(EINVAL, "%s: punch granularity %llu is not a multiple of 512", path,
                     (unsigned long long)block);
  if (fstat(fd, &st) < 0)
    return svm_error(errno, "%s: %s", path, strerror(errno));
  buf = svm_io_alloc_buffer(BUF);
  if (buf == NULL)
    return svm_error(ENOMEM, "%s: out of memory", path);
  for (uint64_t off = 0, size = (uint64_t)st.st_size; off < size; off += e.len) {
    r = svm_extent_next(fd, off, size, &e);
    if (r < 0) {
      r = svm_error(-r, "%s: SEEK_DATA: %s", path, strerror(-r));
      break;
    }
    if (e.flags & SVM_EXTENT_HOLE)
      continue;
    for (uint64_t pos = e.off, end = e.off + e.len; pos < end;) {
      size_t n = end - pos < BUF ? (size_t)(end - pos) : BUF;
      ssize_t got = pread(fd, buf, n, (off_t)pos);
      if (got < 0 && errno == EINTR)
        continue;
      if (got <= 0) {
        r = got < 0 ? svm_error(errno, "%s: read at offset %llu: %s", path,
                                (unsigned long long)pos, strerror(errno)) : 0;
        break;
      }
      for (size_t i = 0; i < (size_t)got;) {
        size_t z = svm_zero_span(buf + i, (size_t)got - i, block, true);
        /* Only whole blocks: a short block at the very end stays as it is. */
        size_t zz = z - (z % block);
        if (zz > 0) {
          if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(pos + i),
                        (off_t)zz) < 0) {
            r = svm_error(errno, "%s: cannot punch a hole at offset %llu: %s%s", path,
                          (unsigned long long)(pos + i), strerror(errno),
                          errno == EOPNOTSUPP ? " (the file system cannot make holes)" : "");
            goto out;
          }
          if (punched != NULL)
            *punched += zz;
        }
        i += z;
        i += svm_zero_span(buf + i, (size_t)got - i, block, false);
      }
      if (scanned != NULL)
        *scanned += (uint64_t)got;
      pos += (uint64_t)got;
    }
    if (r < 0)
      break;
  }
out:
  free(buf);
  return r;
}
