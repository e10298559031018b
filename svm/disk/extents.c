/* Extent maps from SEEK_DATA/SEEK_HOLE (what is allocated) and FIEMAP (what is unwritten).
 * SEEK_DATA is what makes work follow data rather than size: a 1 TiB sparse file with 1 MiB of
 * data costs a handful of lseek calls. */
#include <errno.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "svm/disk/extents.h"

void svm_extent_list_init(struct svm_extent_list *l)
{
  l->v = NULL;
  l->n = 0;
  l->cap = 0;
}

void svm_extent_list_free(struct svm_extent_list *l)
{
  free(l->v);
  svm_extent_list_init(l);
}

int svm_extent_list_add(struct svm_extent_list *l, uint64_t off, uint64_t len, uint32_t flags)
{
  struct svm_extent *last = l->n > 0 ? &l->v[l->n - 1] : NULL;

  if (len == 0)
    return 0;
  if (off + len < off)
    return -EINVAL;
  if (last != NULL) {
    if (off < last->off + last->len)
      return -EINVAL;
    if (off == last->off + last->len && last->flags == flags) {
      last->len += len;
      return 0;
    }
  }
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    struct svm_extent *v = realloc(l->v, cap * sizeof *v);
    if (v == NULL)
      return -ENOMEM;
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n++] = (struct svm_extent){ off, len, flags };
  return 0;
}

uint64_t svm_extent_list_bytes(const struct svm_extent_list *l, uint32_t mask, uint32_t want)
{
  uint64_t sum = 0;

  for (size_t i = 0; i < l->n; i++)
    if ((l->v[i].flags & mask) == want)
      sum += l->v[i].len;
  return sum;
}

int svm_extent_next(int fd, uint64_t off, uint64_t end, struct svm_extent *ext)
{
  off_t data, hole;

  if (off >= end)
    return -EINVAL;
  data = lseek(fd, (off_t)off, SEEK_DATA);
  if (data < 0) {
    if (errno == ENXIO) {           /* no data from off to the end of the file */
      *ext = (struct svm_extent){ off, end - off, SVM_EXTENT_HOLE | SVM_EXTENT_ZERO };
      return 0;
    }
    if (errno == EINVAL || errno == EOPNOTSUPP) {    /* no SEEK_DATA: all data */
      *ext = (struct svm_extent){ off, end - off, 0 };
      return 0;
    }
    return -errno;
  }
  if ((uint64_t)data > off) {
    uint64_t e = (uint64_t)data < end ? (uint64_t)data : end;
    *ext = (struct svm_extent){ off, e - off, SVM_EXTENT_HOLE | SVM_EXTENT_ZERO };
    return 0;
  }
  hole = lseek(fd, (off_t)off, SEEK_HOLE);
  if (hole < 0)
    return -errno;
  {
    uint64_t e = (uint64_t)hole < end ? (uint64_t)hole : end;
    if (e <= off)         /* file shrank under us: what is past its end reads as zeros */
      e = end;
    *ext = (struct svm_extent){ off, e - off, 0 };
  }
  return 0;
}

int svm_extents_scan(int fd, uint64_t start, uint64_t end, struct svm_extent_list *l)
{
  struct svm_extent e;
  int r;

  for (uint64_t off = start; off < end; off += e.len) {
    r = svm_extent_next(fd, off, end, &e);
    if (r < 0)
      return r;
    r = svm_extent_list_add(l, e.off, e.len, e.flags);
    if (r < 0)
      return r;
  }
  return 0;
}

int svm_extents_unwritten(int fd, struct svm_extent_list *l)
{
  enum { N = 256 };
  struct fiemap *fm = calloc(1, sizeof *fm + N * sizeof(struct fiemap_extent));
  uint64_t start = 0;
  int r = 0;
  bool sync = true;

  if (fm == NULL)
    return -ENOMEM;
  for (;;) {
    memset(fm, 0, sizeof *fm);
    fm->fm_start = start;
    fm->fm_length = FIEMAP_MAX_OFFSET - start;
    /* Sync once, first: delayed-allocation data in the page cache would otherwise still show
     * as unwritten, and a caller filling unwritten ranges with zeros would destroy it. */
    fm->fm_flags = sync ? FIEMAP_FLAG_SYNC : 0;
    fm->fm_extent_count = N;
    sync = false;
    if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0) {
      r = errno == ENOTTY || errno == EOPNOTSUPP ? -EOPNOTSUPP : -errno;
      break;
    }
    if (fm->fm_mapped_extents == 0)
      break;
    for (unsigned i = 0; i < fm->fm_mapped_extents; i++) {
      struct fiemap_extent *fe = &fm->fm_extents[i];
      if (fe->fe_flags & FIEMAP_EXTENT_UNWRITTEN) {
        r = svm_extent_list_add(l, fe->fe_logical, fe->fe_length, SVM_EXTENT_ZERO);
        if (r < 0)
          goto out;
      }
      start = fe->fe_logical + fe->fe_length;
      if (fe->fe_flags & FIEMAP_EXTENT_LAST)
        goto out;
    }
  }
out:
  free(fm);
  return r;
}
