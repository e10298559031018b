/* Internal to svm/mirror: the destination guard, the mirror's state, the copier's hooks. */
#ifndef SVM_MIRROR_INTERNAL_H
#define SVM_MIRROR_INTERNAL_H

#include <stdatomic.h>
#include <stdint.h>

#include "svm/disk/layer.h"
#include "svm/mirror/mirror.h"
#include "svm/mirror/region.h"

/* ---- guard.c: every request to the destination goes through the guard ----
 *
 * The guard is a layer over dst (svm_mirror_guard_layer) that writes from its own copies of
 * the data (bounded by a byte budget: a write past it waits its turn), watches every request
 * against the timeout, and drops the destination at the first failure: every request still out
 * completes at once with the drop's error (posted to its own thread), later ones fail at the
 * call, and the late completions of abandoned requests free only the guard's own memory.
 * Refcounted: it outlives the mirror while abandoned requests are still out. */
struct mirror_guard;

int mirror_guard_new(struct svm_layer *dst, uint64_t timeout_ns, uint64_t budget,
                     struct mirror_guard **out);
struct svm_layer *mirror_guard_layer(struct mirror_guard *g);
/* The same guard, for the bulk copy: its aligned writes go to the file with O_DIRECT. */
struct svm_layer *mirror_guard_copier_layer(struct mirror_guard *g);
/* 0 or the -errno that dropped the destination (a relaxed load: cheap on every request). */
int mirror_guard_err(struct mirror_guard *g);
int mirror_guard_status(struct mirror_guard *g, char *msg, size_t len);
/* Drop the destination with err (-errno) and a message, unless it was dropped already. */
void mirror_guard_drop(struct mirror_guard *g, int err, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));
/* Bytes of data copies alive at most so far. */
uint64_t mirror_guard_peak(struct mirror_guard *g);
void mirror_guard_close(struct mirror_guard *g);

/* ---- direct.c: O_DIRECT writes to dst's file for the copier, the rest to dst ---- */
int mirror_direct_open(struct svm_layer *l, bool writable, struct svm_layer **out);  /* NULL: none */
void mirror_direct_close(struct svm_layer *l);
/* Start the write-back of the file's dirty pages in [off, off + len) (a hint: no wait). */
void mirror_direct_clean(struct svm_layer *l, uint64_t off, uint64_t len);
/* Would a write with these go to the file itself (O_DIRECT, on the caller's engine), rather
 * than to the layer below? */
bool mirror_direct_takes(const void *buf, size_t len, uint64_t off, unsigned flags);

/* ---- mirror.c ---- */
enum { MIRROR_GRANULE_SHIFT = 16 };     /* the copied map's granule: 64 KiB */
#define MIRROR_GUEST_QUIET_NS (100ull * 1000 * 1000)   /* svm_mirror_opts guest_quiet_ns */
#define MIRROR_WRITEBACK_NS (100ull * 1000 * 1000)     /* copier.c, on_progress() */
#define MIRROR_CLEAN_AHEAD (8ull << 20)                 /* copier.c, clean_ahead() */

struct mirror_chunk;                    /* copier.c */
struct svm_copy;

struct svm_mirror {
  struct svm_layer *layer;              /* the filter; layer->below is the source */
  struct svm_layer *dst;
  struct mirror_guard *g;
  struct svm_mirror_opts o;
  struct svm_region_table rt;
  /* Granules the copier has passed, or a mirrored request has touched (any part): a guest
   * request touching one is mirrored. Marked before the chunk's (request's) region is
   * released, read by a request after it acquired its own; the table's mutex orders the two
   * for overlapping ranges. Marks only grow: once any byte went to the destination, every
   * later request on it does too, so a copier that skips zeros (dst_reads_zero) never leaves
   * stale data there. */
  _Atomic uint64_t *copied;
  size_t ngranules;
  atomic_uint_fast64_t done, bytes_copied, bytes_mirrored, parked;
  /* When the guest last sent a write, zero or trim (monotonic ns; 0: never): the copier eases
   * off while the guest is writing (copier.c, pace()). */
  atomic_uint_fast64_t guest_ns;
  atomic_bool ran;
  /* The copier's chunks in flight (copier.c, its thread only). */
  struct mirror_chunk *chunks;
  unsigned nchunks;
  uint64_t writeback_ns;                /* the last write-back hint to dst (copier.c) */
  struct svm_layer *direct_src;         /* the copier's O_DIRECT source, or NULL (copier.c) */
  uint64_t clean_to;                    /* source written back up to here (copier.c) */
  struct svm_copy *copy;
};

void mirror_mark_copied(struct svm_mirror *m, uint64_t off, uint64_t len);
uint64_t mirror_now_ns(void);

#endif
