/* Internal to the converter: the two ends of a copy (a raw file or an NBD export) and the NBD
 * helpers in convert-nbd.c. */
#ifndef SVM_CONVERT_INTERNAL_H
#define SVM_CONVERT_INTERNAL_H

#include <libnbd.h>
#include <stdbool.h>
#include <stdint.h>

#include "svm/disk/extents.h"

struct svm_conv_end {
  const char *name;          /* as the user gave it, for messages */
  bool is_nbd;
  uint64_t size;
  /* raw file */
  int fd;                    /* O_DIRECT where the file system allows it, else buffered */
  int fd_buffered;           /* for requests that are not 4 KiB aligned */
  bool direct;
  /* NBD */
  struct nbd_handle *nbd;
  uint64_t max_request;      /* the server's maximum request size */
  bool can_zero, can_flush, has_allocation;
  bool known_zero;           /* destination: every block already reads as zeros */
};

/* Connect to an NBD URI. Writable ends must not be read-only exports. The source end asks for
 * base:allocation so that holes are not read; a writable end uses it to learn whether it is
 * already all zeros. Returns 0 or -errno with a message naming the URI and the fix. */
int svm_conv_nbd_open(struct svm_conv_end *e, const char *uri, bool writable);
/* Append the extent map of [0, size) of an NBD end to l (all data without base:allocation). */
int svm_conv_nbd_extents(struct svm_conv_end *e, uint64_t size, struct svm_extent_list *l);
/* Flush (when writable and the server can) and disconnect. flush: 0 or -errno. */
int svm_conv_nbd_close(struct svm_conv_end *e, bool flush);

#endif
