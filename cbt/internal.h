/* Internal interfaces of the cbt library (not installed). See ctk.c for the file format and
 * tracker.c for the locking and the cost model. */
#ifndef SVM_CBT_INTERNAL_H
#define SVM_CBT_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <svmotion/cbt.h>

#include "common/crc32c.h"   /* the page and header checksums */

#define CTK_VERSION 1
#define CTK_PAGE 4096u                       /* file page; header slots and data slots */
#define CTK_PAGE_HDR 32u                     /* crc, magic, page index, seq, uuid bits */
#define CTK_BPP ((CTK_PAGE - CTK_PAGE_HDR) / 2u) /* epochs per data page: 2032 */
#define CTK_DATA_OFF (2u * CTK_PAGE)         /* two header slots first */
#define CTK_REASON_MAX 192

/* Local epoch numbers are 16 bit: 0 = never written, 1..limit. 0xFFFF is never stored; it is
 * the "compacting" value of cur that sends every mark to the slow path. */
#define CTK_EPOCH_LIMIT 65534u
#define CTK_EPOCH_BUSY 0xFFFFu

/* Decoded header (in memory and on disk, see ctk.c). */
struct ctk_header {
  uint32_t version;
  uint64_t gen;                               /* header generation: slot = gen & 1 */
  uint8_t uuid[16];
  uint8_t prev_uuid[16];                      /* incarnation this one replaced (zero: none) */
  uint8_t disk_hash[32];                      /* SHA-256 of disk_id */
  char disk_id[96];                           /* for messages, may be truncated */
  uint32_t granularity;
  uint64_t disk_size;
  uint64_t nblocks;
  uint64_t base;                              /* sequence = base + local epoch */
  uint64_t floor;                             /* oldest sequence still answerable */
  uint32_t cur;                               /* local number of the open epoch, >= 1 */
  char reason[CTK_REASON_MAX];                /* why prev_uuid was replaced */
};

/* Where a .ctk is read from: a file descriptor or a memory buffer (the fuzzer). */
struct ctk_src {
  int fd;                                     /* -1: use buf */
  const uint8_t *buf;
  uint64_t size;
};

/* Result of loading a .ctk: header and the per-block epochs (malloc'd, nblocks entries). */
struct ctk_image {
  struct ctk_header h;
  uint16_t *ep;
  bool hdr_ok;                                /* header was readable (h.uuid is valid) */
  uint64_t torn_pages;                        /* pages where one copy was torn */
};

/* ctk.c */
uint64_t ctk_npages(uint64_t nblocks);
uint64_t ctk_file_size(uint64_t nblocks);
/* Parse and check everything; on failure returns -errno with svm_error() set to the reason
 * (without the path), img->hdr_ok says whether the header itself was usable. */
int ctk_load(const struct ctk_src *src, struct ctk_image *img);
void ctk_encode_header(const struct ctk_header *h, uint8_t page[CTK_PAGE]);
/* Encode data page `pno` (epochs ep[0..count)) with sequence seq into page. */
void ctk_encode_page(const struct ctk_header *h, uint64_t pno, uint64_t seq, const uint16_t *ep,
                     size_t count, uint8_t page[CTK_PAGE]);
/* 1: valid page (seq out), 0: all zero (never written, seq 0), -1: invalid. */
int ctk_check_page(const struct ctk_header *h, uint64_t pno, const uint8_t page[CTK_PAGE],
                   uint64_t *seq);
/* Write a complete new .ctk for header h and epochs ep (mapped through map when not NULL)
 * into a temporary file, fdatasync, rename over path, fsync the directory. Returns the open
 * fd of the new file (locked) or -errno. */
int ctk_write_new(const char *path, const struct ctk_header *h, const uint16_t *ep,
                  uint16_t (*map)(uint16_t e, const void *arg), const void *arg);
void ctk_disk_hash(const char *disk_id, uint8_t out[32]);

/* The tracker. */
struct cbt_range {
  uint64_t b0, b1;                            /* blocks [b0, b1) */
};

struct cbt {
  /* Hot, read by the lock-free fast path of cbt_mark(). */
  uint16_t *ep;                               /* per-block local epoch, __atomic accesses */
  uint16_t cur;                               /* open local epoch, __atomic accesses */
  unsigned gshift;                            /* log2(granularity) */
  uint64_t disk_size;
  uint64_t nblocks;
  size_t ep_bytes;                            /* size of the ep mapping */

  char *path;
  char *disk_id;
  int fd;
  struct ctk_header h;                        /* last durable header (under mu) */
  char *reset_reason;
  uint16_t limit;                             /* highest local epoch before compaction */

  pthread_rwlock_t shape;                     /* write: changeid/resize; read: query scan */
  pthread_mutex_t mu;                         /* group commit state, header */
  pthread_cond_t cv;
  struct cbt_range *pend;                     /* batch being gathered */
  size_t npend, cappend;
  uint64_t batch_gen;                         /* generation of the gathering batch */
  uint64_t done_gen;                          /* last generation made durable */
  bool committing;
  int broken;                                 /* sticky -errno after a failed .ctk write */
  char broken_msg[256];
};

/* tracker.c: the writes and flushes of marks and change IDs in place (pages, header slots)
 * go through these, so that a test can play a power cut: keep only what was flushed, tear
 * or drop the rest (tests/unit/test-cbt-model.c). Default: pwrite(2), fdatasync(2). */
struct cbt_io_hooks {
  ssize_t (*pwrite)(int fd, const void *buf, size_t n, off_t off);
  int (*fdatasync)(int fd);
};
extern struct cbt_io_hooks cbt_io;

/* tracker.c: testing hook (tests/unit/test-cbt-model.c) to make compaction frequent. */
void cbt_internal_set_epoch_limit(struct cbt *t, uint16_t limit);

/* query.c */
/* First block index in [i, end) with ep > thr, or end. */
uint64_t cbt_scan_above(const uint16_t *ep, uint64_t i, uint64_t end, uint16_t thr);
uint64_t cbt_scan_not_above(const uint16_t *ep, uint64_t i, uint64_t end, uint16_t thr);

#endif
