/* Internal: extent maps.
 *
 * An extent is a byte range with flags in the NBD base:allocation sense, so that a map read from
 * a file (SEEK_DATA/SEEK_HOLE) and one read from an NBD server (block status) look the same:
 *   SVM_EXTENT_HOLE  the range is not allocated
 *   SVM_EXTENT_ZERO  the range reads as zeros
 * A hole of a regular file carries both flags; data carries none. */
#ifndef SVM_EXTENTS_H
#define SVM_EXTENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { SVM_EXTENT_HOLE = 1, SVM_EXTENT_ZERO = 2 };

struct svm_extent {
  uint64_t off;
  uint64_t len;
  uint32_t flags;
};

/* A growable list of extents in ascending, non-overlapping order. */
struct svm_extent_list {
  struct svm_extent *v;
  size_t n;
  size_t cap;
};

void svm_extent_list_init(struct svm_extent_list *l);
void svm_extent_list_free(struct svm_extent_list *l);   /* leaves an empty, reusable list */
/* Append [off, off+len) with flags; merges with the last extent when contiguous and equal in
 * flags. Ranges must come in ascending order without overlap (-EINVAL otherwise). */
int svm_extent_list_add(struct svm_extent_list *l, uint64_t off, uint64_t len, uint32_t flags);
/* Bytes covered by extents whose flags, masked with mask, equal want. E.g. data bytes:
 * svm_extent_list_bytes(l, SVM_EXTENT_HOLE, 0). */
uint64_t svm_extent_list_bytes(const struct svm_extent_list *l, uint32_t mask, uint32_t want);

/* The extent of fd that starts at off (off < end): data or hole, clipped to end. A file system
 * without SEEK_DATA support reports everything as data. Returns 0 or -errno. */
int svm_extent_next(int fd, uint64_t off, uint64_t end, struct svm_extent *ext);

/* Append the extents of fd in [start, end) to l. */
int svm_extents_scan(int fd, uint64_t start, uint64_t end, struct svm_extent_list *l);

/* Append the ranges of fd that are allocated but unwritten (FIEMAP_EXTENT_UNWRITTEN, i.e.
 * fallocated and never written) to l, flags SVM_EXTENT_ZERO. -EOPNOTSUPP where the file system
 * has no FIEMAP. The file is synced first so that data still in the page cache counts. */
int svm_extents_unwritten(int fd, struct svm_extent_list *l);

#endif
