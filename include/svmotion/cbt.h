/* svmotion — changed-block tracking (CBT).
 *
 * One tracker per hot disk records which blocks (a power of two of 4 KiB to 1 MiB, 64 KiB by
 * default) were written, and when: every block carries the number of the epoch in which it
 * was last written. Taking a change ID closes the current epoch; a query "since change ID X"
 * returns the blocks whose epoch is later than X, for any change ID still kept (the last
 * 32767 at least), without a bitmap per epoch.
 *
 * Change IDs are "<uuid>/<sequence>": the uuid names one incarnation of the tracking of one
 * disk, the sequence counts change IDs (1, 2, ...). "*" means "since tracking began".
 *
 * Durability (activity log): cbt_mark() returns only once the mark is crash-safe, so after
 * kill -9 or a power cut every write acknowledged after its cbt_mark() returned is still
 * reported. The per-block epochs are exact in memory and written to the .ctk lazily (before
 * their extent leaves the log, and on close); what the file may lack is bounded by a small
 * on-disk activity log of hot extents (4 MiB each, at most 1920 of them), made durable before
 * a mark into an extent outside it returns. A mark of a block already marked in the open
 * epoch: one load and compare, no lock. A first mark in an epoch into a hot extent: a mutex
 * and a store, no I/O; a change ID leaves the hot set as it is, so the epoch after it starts
 * warm. A first mark into a cold extent: one 8 KiB log write + fdatasync, shared by
 * concurrent callers.
 * After a crash, every block of every logged extent counts as written in the epoch that was
 * open, and so do the blocks of a data page torn by the crash (at most 8 are in flight):
 * a query may over-report, boundedly, and never misses. The bound per crash:
 *     1920 x 4 MiB + 8 x 2032 x granularity bytes   (7.5 GiB + 0.99 GiB at 64 KiB).
 * A clean close (cbt_close) writes everything and empties the log: nothing over-reported.
 *
 * Call order on the guest write path: cbt_mark() (or cbt_discard()) and the data write may
 * run concurrently (svm/disk/track.c does); the write is acknowledged once both are done. A
 * change ID is an exact cut for writes whose cbt_mark() returned before cbt_changeid() was
 * called; a write in flight while the change ID is taken may be counted in the closing epoch,
 * so a backup that reads the disk after taking a change ID quiesces writes around
 * cbt_changeid() (as it does to take a snapshot); svmd drains the disk's NBD export around it
 * (svm/agent/disk.c).
 *
 * TRIM/discard is a change: the discarded blocks read back differently (zeros, or whatever
 * the device returns), so cbt_discard() marks them exactly like a write and a backup copies
 * them (it reads zeros there).
 *
 * Resize: cbt_resize() to a larger size marks the grown area (and the old last block when it
 * was partial) as changed in the current epoch, so an incremental copy picks it up; to a
 * smaller size forgets the blocks past the new end (they no longer exist). Change IDs stay
 * valid across a resize. A .ctk opened with a disk size other than the one it records (the
 * disk was resized behind the tracker's back) is reset like a corrupt file.
 *
 * Damage: a .ctk that is corrupt, truncated, of an unknown version, of another disk or of
 * another size is never trusted: cbt_open() succeeds, tracking restarts as "every block
 * changed" under a new uuid, and every change ID of the old uuid is refused (-ESTALE, or
 * -EINVAL when even the old uuid could not be read) with a message saying to take a new
 * change ID and do a full copy. A data page of which one copy is invalid or zeroed (a torn
 * lazy write, or damage at rest: the file cannot tell) is never trusted: every block it covers
 * counts as changed in the open epoch, change IDs stay valid, and cbt_open_note() says so.
 * A .ctk of version 1 (before the activity log) is upgraded in place at its first open.
 *
 * Space: a .ctk is allocated and written whole when created, so a mark never needs new
 * space; a full datastore stops the guest's writes (ENOSPC), not the tracking. Where a file
 * system cannot honour the allocation, a failed .ctk write fails the marks waiting for it
 * with that error (ENOSPC) and the next mark tries again: tracking recovers by itself.
 *
 * Threads: cbt_mark(), cbt_discard(), cbt_changeid(), cbt_query() and cbt_get_info() may run
 * concurrently. cbt_resize() and cbt_close() must not run concurrently with any other call
 * on the same tracker (drain the disk's I/O first, as a resize needs anyway). The process has
 * one background thread for all its trackers, the page writer: a bounded round per second,
 * which writes only once a tracker's hot set is 3/4 full (the pages the next evictions need).
 *
 * Errors: functions return 0 or a negative errno and leave a message in svm_last_error().
 */
#ifndef SVMOTION_CBT_H
#define SVMOTION_CBT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cbt;                                   /* opaque tracker of one disk */

struct cbt_extent {
  uint64_t offset, length;
};

struct cbt_info {
  char uuid[37];                              /* tracking incarnation, canonical uuid text */
  uint32_t version;                           /* .ctk format version */
  uint32_t granularity;                       /* bytes per block */
  uint64_t disk_size;                         /* bytes */
  uint64_t epoch;                             /* current (open) epoch = next change ID's sequence */
  uint64_t blocks_marked;                     /* blocks written since tracking began */
  uint64_t oldest_changeid;                   /* oldest sequence a query still answers (0: all) */
};

#define CBT_CHANGEID_MAX 64
#define CBT_GRANULARITY_DEFAULT (64u * 1024)
#define CBT_GRANULARITY_MIN (4u * 1024)
#define CBT_GRANULARITY_MAX (1024u * 1024)

/* Open the tracker in ctk_path for a disk of disk_size bytes, creating the file when missing
 * (granularity used only then; 0 = 64 KiB). A file that is corrupt/foreign/truncated/of another
 * version/of the wrong size is NOT an error: the tracker restarts as "everything changed" under
 * a new uuid, returns 0, and cbt_reset_reason() returns the message (else NULL). disk_id: a
 * stable identifier of the disk (e.g. its descriptor's disk uuid or path) stored in the header
 * to detect a .ctk of another disk. Errors: bad arguments (-EINVAL), the file in use by another
 * tracker (-EBUSY), I/O errors. */
int cbt_open(const char *ctk_path, const char *disk_id, uint64_t disk_size,
             uint32_t granularity, struct cbt **out);

/* Why the tracker restarted at this open ("disk0.ctk: bad header checksum; ..."), or NULL. */
const char *cbt_reset_reason(const struct cbt *t);

/* What this open did not trust and counted as changed (damaged or torn pages, the extents of
 * the activity log after a crash), for the log, or NULL. cbt_open() also prints it on stderr. */
const char *cbt_open_note(const struct cbt *t);

/* Clean close: writes the pages still dirty and empties the activity log (a crash instead
 * leaves the log, hence its bounded over-report), frees the tracker. NULL is accepted. */
void cbt_close(struct cbt *t);

/* Move the tracker to another .ctk file, without closing it: the whole file written at `path`
 * from memory (epochs exact, the activity log's hot set kept, every page synced; a temporary
 * name renamed over `path`), then the tracker uses it and leaves its old file as it was (a
 * live move carries the tracker to the destination's folder inside its pause, and back to the
 * source's on an abort). Change IDs answer as before; marks must not be in flight. 0, or a
 * negative errno with the tracker unchanged. */
int cbt_relocate(struct cbt *t, const char *path);

/* Prepare cbt_relocate(t, path) ahead, while marks go on: the whole file is written at `path`
 * from memory now, and the pages marked from now on are remembered, so that the relocation
 * itself writes only those pages, the header and a log entry, with one fdatasync (no new
 * space, no rename, no directory sync). A live move prepares before its pause and relocates
 * inside it: the whole file's write and syncs were 2 of the guest's 2.5 ms pause. A
 * compaction or a resize in between drops what was prepared (the relocation then writes the
 * whole file), and so does a relocation to another path. 0, or a negative errno with nothing
 * prepared (cbt_relocate still works). */
int cbt_relocate_prepare(struct cbt *t, const char *path);

/* Drop a prepared relocation: its file is closed and removed (cbt_close does it too). */
void cbt_relocate_cancel(struct cbt *t);


/* Thread-safe. Returns 0 once the marks covering [offset,offset+length) are crash-safe (see
 * the top: no I/O unless an extent enters the activity log; a range wider than 8 extents
 * writes its pages directly). Call before acknowledging the write it covers (concurrently
 * with the write is fine). A range past the end of the disk: -EINVAL. A failed write of the
 * .ctk: its errno (-ENOSPC on a full file system that ignored the allocation, -EIO), and the
 * next mark tries again; a failed fdatasync: -EIO, and every later mark that needs I/O fails
 * too (the tracker can no longer promise anything; reopen it). */
int cbt_mark(struct cbt *t, uint64_t offset, uint64_t length);

/* The non-blocking half of cbt_mark(), for callers that must not wait on I/O (the tracking
 * layer, svm/disk/track.c): returns 1 when the range is marked and crash-safe now: every block
 * already marked in the open epoch (the same load and compare as cbt_mark()'s fast path, no
 * lock), or every extent of the range in the activity log's hot set (then marked here under a
 * mutex taken only if free: no syscall, no I/O); 0 when marking needs a write of the .ctk (call
 * cbt_mark() or cbt_discard() from a thread that may block); -EINVAL for a range past the end
 * of the disk. Length 0: 1. */
int cbt_mark_try(struct cbt *t, uint64_t offset, uint64_t length);

/* TRIM/discard/write-zeroes of [offset,offset+length): a change like any write (see top). */
int cbt_discard(struct cbt *t, uint64_t offset, uint64_t length);

/* The disk now has new_size bytes (see top for the semantics). Durable when it returns. */
int cbt_resize(struct cbt *t, uint64_t new_size);

/* Close the current epoch; writes "<uuid>/<seq>" into buf (at least CBT_CHANGEID_MAX bytes
 * is always enough). Durable when it returns. */
int cbt_changeid(struct cbt *t, char *buf, size_t buflen);

/* Extents changed after `since` ("*" = everything ever written) within [offset, offset+length)
 * (length 0 = to end of disk), sorted and merged; *out is malloc'd (free()), NULL when *n is 0.
 * Over-reports at most up to the granularity (whole blocks). A change ID of another uuid, in the
 * future, or malformed: -EINVAL; of an earlier incarnation of this disk's tracking, or older
 * than the oldest kept: -ESTALE; the message says why and to take a new change ID and do a
 * full copy. */
int cbt_query(struct cbt *t, const char *since, uint64_t offset, uint64_t length,
              struct cbt_extent **out, size_t *n);

int cbt_get_info(struct cbt *t, struct cbt_info *info);

/* Offline: read the header + data of a .ctk without opening it for writing (works while an
 * agent has it open). A damaged file: -EINVAL/-EIO with the reason. */
int cbt_info_read(const char *ctk_path, struct cbt_info *info);

/* Render info as text (one "key: value" line each) or as one JSON object with the keys
 * "uuid", "version", "granularity", "disk-size", "epoch", "blocks-marked",
 * "oldest-changeid". Returns 0 or -EIO. */
int cbt_info_print(const struct cbt_info *info, bool json, FILE *f);

/* Bytes of memory the tracker holds (its per-block epoch array and bookkeeping). */
size_t cbt_memory_bytes(const struct cbt *t);

#ifdef __cplusplus
}
#endif
#endif
