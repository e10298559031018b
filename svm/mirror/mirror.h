/* Internal: the synchronous mirror of a live disk (DESIGN.md, Data paths 2, 4, 5; issue 8).
 *
 * A filter layer (svm/disk/layer.h) over the source that also writes to a destination layer,
 * plus the one-pass bulk copier that fills the destination while guests keep writing:
 *
 * - A guest write, zero or trim to a range the copier has already copied goes to the source
 *   and the destination, and completes when both are done, FUA on both; to a range not yet
 *   copied it goes to the source only (the copier carries it). FLUSH flushes both. Reads and
 *   block status come from the source.
 * - A region table (region.h) keeps copier chunks and guest writes apart without blocking any
 *   thread: a request that meets a conflict is parked and resumed later on its own thread.
 * - A destination failure (an error, ENOSPC, a request older than dst_timeout_ns) drops the
 *   destination: from then on guests see the source alone, no guest request fails because of
 *   the move, and run() / status() report why.
 *
 * Usage (svm/migrate): the stack raw_src -> track becomes raw_src -> mirror(dst) -> track and is
 * swapped into the export; svm_mirror_run() on a job thread; then pause the export, check
 * svm_mirror_status() == 0, flush dst, swap to raw_dst -> track, resume. Abort: swap back.
 *
 * Memory: each guest request costs a small record; writes to dst are made from the mirror's
 * own copies of the data, at most buffer_budget bytes at once. The copier holds `requests`
 * chunk buffers. Raw files are read and written by the copier with O_DIRECT (direct.c).
 * Limit: a destination request stuck in the kernel is given up at the timeout (the guest goes
 * on, run() fails), but the I/O engine that issued it still waits for it when it is freed
 * (svm_io_free): for the copier's own engines, that is when run() returns. When such a
 * request finally completes it touches only the mirror's own memory, which outlives the layer
 * until then.
 */
#ifndef SVM_MIRROR_H
#define SVM_MIRROR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "svm/disk/layer.h"

struct svm_mirror;

enum {
  SVM_MIRROR_DEFAULT_REQUEST = 2 << 20,   /* the copier's window: mirror.c says why */
  SVM_MIRROR_DEFAULT_REQUESTS = 32,
  SVM_MIRROR_DEFAULT_BUSY_REQUEST = 256 << 10,
  SVM_MIRROR_DEFAULT_BUSY_REQUESTS = 2,
};

struct svm_mirror_opts {
  uint64_t request_size;      /* copier chunk (0: default, SVM_MIRROR_DEFAULT_REQUEST) */
  unsigned requests;          /* copier chunks in flight (0: default, SVM_MIRROR_DEFAULT_REQUESTS) */
  /* The copier's window while the guest writes (copier.c, pace()): chunks of at most
   * busy_request_size (0: SVM_MIRROR_DEFAULT_BUSY_REQUEST), at most busy_requests of them
   * (0: SVM_MIRROR_DEFAULT_BUSY_REQUESTS). */
  uint64_t busy_request_size;
  unsigned busy_requests;
  uint64_t guest_quiet_ns;    /* quiet for this long, the guest gets the full window again
                                 (0: 100 ms) */
  bool dst_reads_zero;        /* dst is fresh and reads as zeros: zeros need not be written */
  bool zero_allocates;        /* dst provisioning is thick / eager-zeroed: zero runs stay
                                 allocated (zeros and trims to dst keep the range allocated) */
  uint64_t dst_timeout_ns;    /* a dst request slower than this drops the destination (0: 30 s) */
  /* Bytes of data copies in flight to dst (writes to dst are made from the mirror's own
   * copies, so that a late completion after a drop never touches a guest's buffer). A write
   * past the budget waits for earlier ones (one larger than it goes alone). 0: twice the
   * copier's chunks in flight, at least 64 MiB more than them. */
  uint64_t buffer_budget;
  void (*progress)(void *opaque, uint64_t done, uint64_t total);   /* from run()'s thread */
  void *progress_opaque;
};

struct svm_mirror_counters {
  uint64_t total;             /* the disk's size */
  uint64_t done;              /* bytes the copier has dealt with */
  uint64_t bytes_copied;      /* data the copier wrote to dst (zeros it skipped excluded) */
  uint64_t bytes_mirrored;    /* guest writes and zeroes sent to dst as well */
  uint64_t writes_parked;     /* guest requests that waited in the region table */
  uint64_t buffer_peak;       /* most bytes of data copies alive at once (<= buffer_budget,
                                 or one request larger than it) */
};

/* A filter over `src` (owned, like any filter) that also writes to `dst` (a layer the caller
 * keeps, and frees after the mirror layer is freed). *layer_out is the filter; *m a handle
 * valid while the layer lives. Sizes must match. o may be NULL. */
int svm_mirror_new(struct svm_layer *src, struct svm_layer *dst, const struct svm_mirror_opts *o,
                   struct svm_layer **layer_out, struct svm_mirror **m);

/* The bulk copy: one pass of the copy engine over src on the calling thread (with its own I/O
 * engines), then a flush of dst. Returns 0 when every region is copied and durable (from then on every guest write goes to both,
 * so src and dst stay identical), -ECANCELED after svm_mirror_cancel(), or the dst failure's
 * -errno (ENOSPC, EIO, ETIMEDOUT...) with svm_error set naming dst, the offset and the fix.
 * Runs once. */
int svm_mirror_run(struct svm_mirror *m);

/* Stop the copy (run() returns -ECANCELED) and drop the destination. Any thread. */
void svm_mirror_cancel(struct svm_mirror *m);

/* 0 while the destination is in the mirror, or the -errno that dropped it (also after run()
 * returned 0). msg, when not NULL, receives the reason (empty when 0). Any thread. */
int svm_mirror_status(struct svm_mirror *m);
int svm_mirror_status_msg(struct svm_mirror *m, char *msg, size_t len);

void svm_mirror_get_counters(struct svm_mirror *m, struct svm_mirror_counters *c);  /* any thread */

#endif
