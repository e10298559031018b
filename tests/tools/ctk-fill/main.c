/* ctk-fill: mark every other block of a disk in its .ctk, offline (svmd stopped), so that a
 * query answers with one extent per marked block: the largest answer a disk of that size can
 * give. Used by tests/integ/harden-query.sh; through the public CBT API only.
 *
 *   ctk-fill CTK DISK-UUID DISK-SIZE      prints the number of extents marked */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <svmotion/cbt.h>
#include <svmotion/error.h>

int main(int argc, char **argv)
{
  struct cbt *t;
  struct cbt_info info;
  uint64_t size, n = 0;
  int r;

  if (argc != 4) {
    fprintf(stderr, "usage: ctk-fill CTK DISK-UUID DISK-SIZE\n");
    return 2;
  }
  size = strtoull(argv[3], NULL, 10);
  r = cbt_open(argv[1], argv[2], size, 0, &t);
  if (r < 0) {
    fprintf(stderr, "ctk-fill: %s: %s\n", argv[1], svm_last_error());
    return 1;
  }
  if (cbt_reset_reason(t))
    fprintf(stderr, "ctk-fill: note: %s\n", cbt_reset_reason(t));
  cbt_get_info(t, &info);
  for (uint64_t off = 0; off + info.granularity <= size; off += 2 * (uint64_t)info.granularity) {
    r = cbt_mark(t, off, info.granularity);
    if (r < 0) {
      fprintf(stderr, "ctk-fill: mark at %" PRIu64 ": %s\n", off, strerror(-r));
      cbt_close(t);
      return 1;
    }
    n++;
  }
  cbt_close(t);
  printf("%" PRIu64 "\n", n);
  return 0;
}
