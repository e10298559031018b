/* Internal: the mirror's region table - the byte ranges in flight, shared by the bulk copier and
 * the guest writes of every connection and every I/O thread (DESIGN.md, Data paths 2).
 *
 * Every entry is exclusive: a copier chunk never reads a range while a guest write to it is in
 * flight, a guest write never lands in a chunk being copied, and two overlapping guest writes
 * run one after the other, in the order they arrived (so they reach source and destination in
 * the same order). Entries that do not overlap run side by side.
 *
 * Nobody blocks. svm_region_acquire() either grants the range at once (true) or PARKS the entry
 * (false) and returns; when the ranges in its way are released, the releasing thread moves it
 * to the held set and calls its granted() callback. granted() runs on someone else's thread
 * with the table locked (so that withdrawing an entry never races with its callback): it only
 * hands the entry back to the thread that owns it, with svm_io_post_node() on that thread's
 * engine, and never calls into the table (QEMU's
 * mirror_wait_on_conflicts waits in a coroutine; here the request is a parked continuation).
 *
 * Order: parked entries form one FIFO queue. A new entry that overlaps a parked one parks
 * behind it even when the held set would let it through, and a parked entry is granted only
 * when it overlaps neither a held entry nor an entry parked before it: overlapping requests are
 * granted strictly in arrival order, and a stream of guest writes cannot starve a copier chunk.
 *
 * Cost: one mutex, a list walk over held and parked entries per acquire and per release (both
 * are bounded by the requests in flight: the copier's chunks plus the export's queue depth).
 */
#ifndef SVM_MIRROR_REGION_H
#define SVM_MIRROR_REGION_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct svm_region;
typedef void (*svm_region_granted_fn)(struct svm_region *r);

/* Caller-owned storage, valid until released. Fill off, len, granted (and opaque). */
struct svm_region {
  uint64_t off, len;
  svm_region_granted_fn granted;  /* a parked entry was granted (any thread, table locked) */
  void *opaque;
  /* private to the table */
  struct svm_region *prev, *next;
  int state;
};

struct svm_region_table {
  pthread_mutex_t mu;
  struct svm_region *held;                 /* unordered */
  struct svm_region *park_head, *park_tail; /* FIFO */
  uint64_t parked_total;                   /* entries that ever parked (statistics) */
};

void svm_region_table_init(struct svm_region_table *t);
/* The table must be empty. */
void svm_region_table_destroy(struct svm_region_table *t);

/* true: granted now (held). false: parked; r->granted(r) runs when it is granted. */
bool svm_region_acquire(struct svm_region_table *t, struct svm_region *r);

/* Give a held entry back, or withdraw a parked one (its granted() will not run after this
 * returns). Grants the parked entries that can now go. */
void svm_region_release(struct svm_region_table *t, struct svm_region *r);

/* Entries held and parked right now (tests, status). */
void svm_region_table_count(struct svm_region_table *t, unsigned *held, unsigned *parked);

#endif
