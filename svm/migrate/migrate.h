/* Internal: the pieces of a live move between datastores (DESIGN.md, Data paths 2, 4 and 5).
 * The agent (svm/agent/move.c) runs them for every disk of a VM, in this order:
 *
 *   svm_move_disk_prepare   create the destination file in its provisioning, open it, and
 *                           swap the disk's export to raw_src -> mirror(dst) -> track (the
 *                           same tracker): from now on copied regions are mirrored
 *   svm_move_disk_copy      the bulk pass of the mirror, on the calling thread (several disks
 *                           in parallel on threads of their own); svm_move_disk_cancel stops it
 *   -- switchover, with every disk's export paused by the caller (svm_export_pause with a
 *      deadline): no request in flight, so no mark or write happens --
 *   svm_move_disk_switch    the mirror still in sync, the destination flushed (durable), the
 *                           tracker moved, open, to a .ctk beside the destination written
 *                           from memory (cbt_relocate), the export swapped to
 *                           raw_dst -> track(the same tracker)
 *   -- the caller commits (the descriptor in the destination) and resumes --
 *   svm_move_disk_finish    frees the source stack
 *
 * svm_move_disk_abort undoes whatever was done, at any step before the commit: the export goes
 * back to raw_src -> track(source tracker), and the destination's files are removed. After a
 * switch (or a switch that failed) it must run inside the caller's pause, and the caller then
 * takes m->cbt as the disk's tracker again before resuming: the one it had may be closed. No guest
 * request fails because of a move: the mirror drops a failing destination and completes
 * guest writes on the source.
 *
 * Threads: one disk's functions are called by one thread at a time, except
 * svm_move_disk_cancel and svm_move_disk_progress, which any thread may call. */
#ifndef SVM_MIGRATE_H
#define SVM_MIGRATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <svmotion/convert.h>   /* enum svm_provisioning */

struct cbt;
struct svm_export;
struct svm_layer;
struct svm_mirror;

struct svm_move_disk {
  /* set by the caller */
  struct svm_export *export;
  struct cbt *cbt;                /* the disk's tracker: the source's, after switch the
                                     destination's, after abort the source's again (reopened
                                     when a switch had closed it; NULL if that failed) */
  char *src_path, *dst_path;      /* raw files */
  char *src_ctk, *dst_ctk;
  const char *name;               /* "VM/diskN", for messages */
  const char *disk_id;            /* the disk's uuid, as its tracker was opened with */
  uint64_t size;
  enum svm_provisioning prov;     /* the destination's */
  uint64_t rate;                  /* bytes/s cap of the bulk copy (0: none) */
  /* the move's own */
  struct svm_layer *raw_dst;      /* ours until the switch hands it to the export */
  struct svm_mirror *mirror;      /* lives in the export's stack from prepare to finish */
  struct svm_layer *old_top;      /* after switch: the source stack, freed by finish */
  bool switched;
  bool dst_created;               /* the destination file exists (abort removes it) */
  bool ctk_created;
  atomic_bool cancelled;
  uint64_t copy_start_ns;
  _Atomic uint64_t done, total;   /* bulk pass progress */
  /* the mirror's counters as they were when it was freed */
  uint64_t bytes_copied, bytes_mirrored, writes_parked;
};

int svm_move_disk_prepare(struct svm_move_disk *m);
int svm_move_disk_copy(struct svm_move_disk *m);
void svm_move_disk_cancel(struct svm_move_disk *m);
/* done/total of the bulk pass, bytes copied and mirrored so far; `live`: ask the mirror (the
 * caller knows it is alive: between prepare and the snapshot), else the last snapshot. */
void svm_move_disk_progress(struct svm_move_disk *m, bool live, uint64_t *done, uint64_t *total,
                            uint64_t *copied, uint64_t *mirrored);
/* Before the pause: flush what the destination holds so far, so that the flush inside the
 * pause (the guest's downtime) has little left to write. */
int svm_move_disk_preflush(struct svm_move_disk *m);
int svm_move_disk_switch(struct svm_move_disk *m);
void svm_move_disk_finish(struct svm_move_disk *m);
void svm_move_disk_abort(struct svm_move_disk *m);
/* Keep the mirror's counters in the move (before the mirror goes; progress reads them then). */
void svm_move_disk_snapshot(struct svm_move_disk *m);
/* Frees the strings; call after finish or abort. */
void svm_move_disk_clear(struct svm_move_disk *m);

/* folder.c: the VM folder's other files (config files: whatever the descriptor does not name
 * as a disk or tracker), copied to the destination folder with their modes, synced. `skip`
 * names the files not to copy (NULL-terminated). */
int svm_move_copy_files(const char *src_dir, const char *dst_dir, const char *const *skip);
/* Remove every regular file of a folder made by a move, then the folder. Reports in *left
 * (malloc'd, NULL when all went) what could not be removed. */
int svm_move_remove_folder(const char *dir, char **left);
/* After the commit: the source folder renamed, durably, out of the VM's name, to a hidden
 * sibling SVM_RETIRED_PREFIX<name>-<tag> (malloc'd in *retired), which svm_move_remove_folder
 * then removes at leisure. Freeing a large file's blocks can take long (a file system mounted
 * with discard trims them in unlink: 0.5 s per 2 GiB measured here), and the move is over
 * once the VM is committed elsewhere; a start after a crash removes what is left
 * (svm_move_remove_retired). */
#define SVM_RETIRED_PREFIX ".svm-removing-"
int svm_move_retire_folder(const char *dir, const char *tag, char **retired);
/* Remove a retired folder as svm_move_remove_folder does, its files shrunk a step at a time
 * first (SVM_RETIRE_STEP bytes; after a step that freed blocks, a rest of SVM_RETIRE_REST_US
 * per step's worth freed; holes cost no rest): freeing a large file's blocks in one go holds
 * the file system's journal, and with it every guest's fdatasync, for as long as the device
 * takes to trim them all (measured: 0.5 s per 2 GiB, guest writes stalled for 12 ms; 4 MiB
 * steps with 5 ms rests left no stall among the largest gaps). When *stop (may be NULL)
 * becomes true it returns -ECANCELED at once, the folder left (a start removes it). */
enum { SVM_RETIRE_STEP = 4 << 20, SVM_RETIRE_REST_US = 5000 };
int svm_move_remove_retired_folder(const char *dir, const atomic_bool *stop, char **left);
/* Remove every SVM_RETIRED_PREFIX folder of datastore folder ds_dir; each one's path goes to
 * log (with NULL, or with the error when it could not be removed completely). */
void svm_move_remove_retired(const char *ds_dir,
                             void (*log)(void *opaque, const char *path, const char *err),
                             void *opaque);
/* Copy one file (a config file of the folder) durably: tmp + fsync + rename + fsync of
 * the folder. */
int svm_move_copy_file(const char *src, const char *dst);

/* journal.c: one file per move in STATE/moves/, written (durably) before the destination
 * folder is made and removed after the move is over either way. A start after a crash reads
 * them: without a descriptor in the destination the move never committed (the source is
 * authoritative: the destination goes); with one it did (the destination is authoritative:
 * what is left of the source goes). */
struct svm_journal {
  char vm[72];
  char src_dir[4096], dst_dir[4096];
  char src_ds[72], dst_ds[72];
};
int svm_journal_write(const char *moves_dir, const struct svm_journal *j);
/* Parse a journal's text (bounded, checked: exposed for the fuzzer). */
int svm_journal_parse(const char *buf, size_t len, struct svm_journal *j);
int svm_journal_remove(const char *moves_dir, const char *vm);
/* fn for each journal found (files that do not parse are reported with j == NULL). */
int svm_journal_scan(const char *moves_dir,
                     void (*fn)(void *opaque, const char *file, const struct svm_journal *j,
                                const char *err),
                     void *opaque);

/* limits.c: at most SVM_MOVES_PER_HOST moves at once on a host and SVM_MOVES_PER_DATASTORE
 * touching one datastore (source or destination), vSphere's limits. */
enum { SVM_MOVES_PER_HOST = 2, SVM_MOVES_PER_DATASTORE = 8 };
struct svm_move_slot {
  const char *src_ds, *dst_ds;
};
/* May a move of src -> dst start, given the `n` moves running now? */
bool svm_move_may_start(const struct svm_move_slot *running, unsigned n,
                        const struct svm_move_slot *next);

#endif
