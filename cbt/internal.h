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

#define CTK_VERSION 3                        /* written; versions 1 and 2 are read, upgraded */
#define CTK_PAGE 4096u                       /* file page; header slots and data slots */
#define CTK_PAGE_HDR 32u                     /* crc, magic, page index, seq, uuid bits */
#define CTK_BPP ((CTK_PAGE - CTK_PAGE_HDR) / 2u) /* epochs per data page: 2032 */
#define CTK_AL_SLOTS 4u                      /* activity-log ring: 4 entries after the header */
#define CTK_AL_OFF (2u * CTK_PAGE)
#define CTK_AL_PAGES 2u                      /* pages per log entry (version 2: 1) */
#define CTK_AL_ENTRY (CTK_AL_PAGES * CTK_PAGE)
#define CTK_DATA_OFF ((2u + CTK_AL_SLOTS * CTK_AL_PAGES) * CTK_PAGE)  /* version 3 */
#define CTK_DATA_OFF_V1 (2u * CTK_PAGE)
#define CTK_REASON_MAX 192
/* Activity log: an entry is CTK_AL_PAGES pages of self-checking 512-byte sectors (32-byte
 * header + 120 u32 extent numbers each), so a torn entry (sectors of two entries, each whole)
 * is told apart from damage (a sector that fails its check). At most CTK_AL_MAX hot extents
 * of 2^al_shift bytes each: 4 MiB, larger only for disks over 16 PiB (u32 extent numbers). */
#define CTK_AL_SECTOR 512u
#define CTK_AL_SECTOR_HDR 32u
#define CTK_AL_PER_SECTOR ((CTK_AL_SECTOR - CTK_AL_SECTOR_HDR) / 4u)         /* 120 */
#define CTK_AL_MAX (CTK_AL_PER_SECTOR * (CTK_AL_ENTRY / CTK_AL_SECTOR))      /* 1920 */
#define CTK_AL_SHIFT_MIN 22u
/* Data pages written in place between two fdatasyncs: a crash tears at most this many. */
#define CTK_PAGES_INFLIGHT 8u

/* Where things lie in a file of the current version: the header slot of generation gen, the
 * log slot of entry seq, copy `copy` (0 = A, 1 = B) of data page pno. */
static inline uint64_t ctk_header_off(uint64_t gen)
{
  return (gen & 1) * CTK_PAGE;
}

static inline uint64_t ctk_al_off(uint64_t seq)
{
  return CTK_AL_OFF + (seq % CTK_AL_SLOTS) * CTK_AL_ENTRY;
}

static inline uint64_t ctk_page_off(uint64_t pno, unsigned copy)
{
  return CTK_DATA_OFF + (2 * pno + copy) * CTK_PAGE;
}

/* The blocks whose epochs data page pno holds: CTK_BPP, fewer in the last page. */
static inline size_t ctk_page_nblocks(uint64_t nblocks, uint64_t pno)
{
  uint64_t b0 = pno * CTK_BPP;
  return nblocks - b0 < CTK_BPP ? (size_t)(nblocks - b0) : CTK_BPP;
}

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
  uint32_t al_shift;                          /* log2 of the activity-log extent (v2+) */
  char reason[CTK_REASON_MAX];                /* why prev_uuid was replaced */
};

/* Where a .ctk is read from: a file descriptor or a memory buffer (the fuzzer). */
struct ctk_src {
  int fd;                                     /* -1: use buf */
  const uint8_t *buf;
  uint64_t size;
};

/* Result of loading a .ctk: header, the per-block epochs (mmap'd, nblocks entries) with the
 * activity log and the untrusted pages already applied (their blocks in the open epoch). */
struct ctk_image {
  struct ctk_header h;
  uint16_t *ep;
  bool hdr_ok;                                /* header was readable (h.uuid is valid) */
  uint64_t bad_pages;                         /* pages not trusted: counted as all changed */
  uint8_t *dirty;                             /* per page: 1 = memory differs from the file */
  uint32_t *al;                               /* extents of the newest log entry (malloc'd) */
  size_t al_n;
  uint64_t al_seq;                            /* its sequence (0: none) */
  bool al_damaged;                            /* the newest entry may be lost: all changed */
  uint64_t al_marked;                         /* blocks the log put in the open epoch */
  char note[512];                             /* what was not trusted, for the log */
};

/* ctk.c */
uint64_t ctk_npages(uint64_t nblocks);
uint64_t ctk_file_size(uint64_t nblocks);     /* the current version */
uint64_t ctk_file_size_v(uint32_t version, uint64_t nblocks);
/* Pages per activity-log entry of a version (0: version 1 has no log). */
unsigned ctk_al_pages(uint32_t version);
unsigned ctk_al_shift(uint64_t disk_size);
void ctk_image_free(struct ctk_image *img);
/* Encode an activity-log entry of h's version (extents al[0..n), sequence seq) into entry,
 * ctk_al_pages(h->version) pages. */
void ctk_encode_al(const struct ctk_header *h, uint64_t seq, const uint32_t *al, size_t n,
                   uint8_t *entry);
/* Parse and check everything; on failure returns -errno with svm_error() set to the reason
 * (without the path), img->hdr_ok says whether the header itself was usable. */
int ctk_load(const struct ctk_src *src, struct ctk_image *img);
void ctk_encode_header(const struct ctk_header *h, uint8_t page[CTK_PAGE]);
/* Encode data page `pno` (epochs ep[0..count)) with sequence seq into page. */
void ctk_encode_page(const struct ctk_header *h, uint64_t pno, uint64_t seq, const uint16_t *ep,
                     size_t count, uint8_t page[CTK_PAGE]);
/* 1: valid page (seq out), 0: all zero (never written, seq 0; only legitimate in version
 * 1 files, later versions write every copy at creation), -1: invalid. */
int ctk_check_page(const struct ctk_header *h, uint64_t pno, const uint8_t page[CTK_PAGE],
                   uint64_t *seq);
/* Write a complete new .ctk for header h and epochs ep (mapped through map when not NULL)
 * into a temporary file, fdatasync, rename over path, fsync the directory. Returns the open
 * fd of the new file (locked) or -errno. */
int ctk_write_new(const char *path, const struct ctk_header *h, const uint16_t *ep,
                  uint16_t (*map)(uint16_t e, const void *arg), const void *arg,
                  const uint32_t *al, size_t al_n);
void ctk_disk_hash(const char *disk_id, uint8_t out[32]);

/* The tracker. */
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
  char *note;                                 /* what the open did not trust, or NULL */
  uint16_t limit;                             /* highest local epoch before compaction */

  /* Lock order: shape, then wmu, then mu. */
  pthread_rwlock_t shape;                     /* write: changeid/resize; read: query, flush */
  pthread_mutex_t wmu;                        /* in-place writes of data pages and the log */
  pthread_mutex_t mu;                         /* everything below */
  pthread_cond_t cv;

  /* Data pages whose memory is newer than the file (written lazily). */
  uint8_t *dirty;                             /* per page */
  uint64_t npages, ndirty;
  uint64_t flush_pos;                         /* the lazy writer's round-robin cursor */

  /* The activity log: the hot set, a subset of the newest durable log entry. */
  unsigned al_shift;
  uint64_t nextents;
  uint16_t *al_idx;                           /* per extent: 0, or 1 + index in al_ext */
  uint32_t al_ext[CTK_AL_MAX];
  uint64_t al_stamp[CTK_AL_MAX];              /* LRU clock of each entry */
  size_t al_n, al_limit;
  uint64_t al_clock, al_seq;                  /* al_seq: newest log entry written */
  uint32_t *pend;                             /* extents waiting for the next log entry */
  size_t npend, cappend;
  uint64_t batch_gen;                         /* generation of the gathering batch */
  uint64_t done_gen;                          /* last generation finished */
  uint64_t fail_gen;                          /* last generation that failed, fail_rc why */
  int fail_rc;
  char fail_msg[256];
  bool committing;
  int broken;                                 /* sticky -errno after a failed fdatasync */
  char broken_msg[256];

  /* A relocation prepared ahead (cbt_relocate_prepare), under mu: its file, written from
   * memory while marks went on, and the pages marked since, which the relocation rewrites. */
  char *reloc_path;                           /* NULL: none */
  int reloc_fd;
  uint64_t reloc_gen;                         /* its header's generation */
  uint8_t *reloc_dirty;                       /* per page */

  /* The background writer of dirty pages. */
  struct cbt *writer_next;        /* on the shared page writer's list (tracker.c) */
  bool flusher_on;               /* on that list */
  unsigned flush_ms;             /* cbt_io.flush_ms at open: the flusher's period */
};

/* tracker.c: the writes and flushes of marks and change IDs in place (pages, log, header
 * slots) go through these, so that a test can play a power cut: keep only what was flushed,
 * tear or drop the rest (tests/unit/test-cbt-model.c). Default: pwrite(2), fdatasync(2), and
 * a background writer of dirty pages every flush_ms (0: none, only explicit flushes). */
struct cbt_io_hooks {
  ssize_t (*pwrite)(int fd, const void *buf, size_t n, off_t off);
  int (*fdatasync)(int fd);
  unsigned flush_ms;
};
extern struct cbt_io_hooks cbt_io;

/* tracker.c: testing hooks (tests/unit/test-cbt-model.c): frequent compaction, a small hot
 * set, an explicit run of the page writer (up to max_batches batches, 0 = all) over every
 * dirty page or, with ahead, over those a background round would write. */
void cbt_internal_set_epoch_limit(struct cbt *t, uint16_t limit);
void cbt_internal_set_al_limit(struct cbt *t, size_t n);
int cbt_internal_flush(struct cbt *t, bool ahead, unsigned max_batches);
/* The most a crash may over-report, in bytes, with the tracker's current settings. */
uint64_t cbt_internal_overreport_bound(const struct cbt *t);

/* query.c */
/* First block index in [i, end) with ep > thr, or end. */
uint64_t cbt_scan_above(const uint16_t *ep, uint64_t i, uint64_t end, uint16_t thr);
uint64_t cbt_scan_not_above(const uint16_t *ep, uint64_t i, uint64_t end, uint16_t thr);

#endif
