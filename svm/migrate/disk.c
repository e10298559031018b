/* One disk's part of a live move (migrate.h): the destination file, the mirror in the disk's
 * stack, the bulk pass, the switch to the destination, and the way back. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <svmotion/cbt.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "svm/disk/layer.h"
#include "svm/disk/provision.h"
#include "svm/disk/track.h"
#include "svm/migrate/migrate.h"
#include "svm/mirror/mirror.h"
#include "svm/nbd/export.h"

enum {
  DST_TIMEOUT_S = 30,            /* a destination request hung longer drops the destination */
};

static uint64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The destination file, empty, in its provisioning (an eager-zeroed one is written with zeros
 * here, before the copy: the copy then skips the source's zeros), durable. */
static int create_dst(struct svm_move_disk *m)
{
  CLEANUP_CLOSE int fd = open(m->dst_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  int r;

  if (fd < 0)
    return svm_error(errno, "%s: %s", m->dst_path, strerror(errno));
  m->dst_created = true;
  if (fchmod(fd, 0600) < 0)                       /* whatever the umask */
    return svm_error(errno, "%s: chmod: %s", m->dst_path, strerror(errno));
  r = svm_provision_prepare(fd, m->dst_path, m->size, m->prov);
  if (r == 0)
    r = svm_provision_finish(fd, m->dst_path, m->size, m->prov, NULL);
  if (r == 0 && fdatasync(fd) < 0)
    r = svm_error(errno, "%s: fdatasync: %s", m->dst_path, strerror(errno));
  return r;
}

/* The bulk pass reports here; with a rate cap it also waits here, so that the copier runs
 * no faster than asked (an operator's cap, and the tests' way to make a move last). */
static void on_progress(void *opaque, uint64_t done, uint64_t total)
{
  struct svm_move_disk *m = opaque;

  atomic_store(&m->done, done);
  atomic_store(&m->total, total);
  if (!m->rate)
    return;
  for (;;) {
    uint64_t due = m->copy_start_ns + (uint64_t)((double)done / (double)m->rate * 1e9);
    uint64_t now = now_ns();
    if (now >= due || atomic_load(&m->cancelled))
      return;
    uint64_t wait = due - now < 50000000u ? due - now : 50000000u;
    nanosleep(&(struct timespec){ .tv_sec = 0, .tv_nsec = (long)wait }, NULL);
  }
}

/* raw_src (a new descriptor) -> mirror(raw_dst) -> track(the disk's tracker) */
static int build_mirror_stack(struct svm_move_disk *m, struct svm_layer **top)
{
  struct svm_mirror_opts o = {
    .dst_reads_zero = true,                          /* a new file, or zeroed (eager) */
    .zero_allocates = m->prov != SVM_PROVISIONING_THIN,
    .dst_timeout_ns = (uint64_t)DST_TIMEOUT_S * 1000000000u,
    .progress = on_progress,
    .progress_opaque = m,
  };
  struct svm_layer *src = NULL, *mir = NULL;
  int r;

  if (m->rate) {
    /* one chunk at a time, so that the pacing wait in on_progress (after a chunk completed)
     * never holds a chunk in flight, and a guest write never waits for it */
    o.requests = 1;
    o.request_size = 256 * 1024;
  }
  r = svm_layer_open_raw(m->src_path, false, &src);
  if (r < 0)
    return r;
  r = svm_mirror_new(src, m->raw_dst, &o, &mir, &m->mirror);
  if (r < 0) {
    svm_layer_free(src);
    return r;
  }
  r = svm_layer_open_track(m->cbt, mir, top);
  if (r < 0) {
    svm_layer_free(mir);
    m->mirror = NULL;
  }
  return r;
}

int svm_move_disk_prepare(struct svm_move_disk *m)
{
  struct svm_layer *top = NULL, *old = NULL;
  int r;

  atomic_store(&m->total, m->size);
  r = create_dst(m);
  if (r == 0)
    r = svm_layer_open_raw(m->dst_path, false, &m->raw_dst);
  if (r == 0)
    r = build_mirror_stack(m, &top);
  if (r < 0)
    return svm_error_prefix("%s: preparing the destination", m->name);
  r = svm_export_swap(m->export, top, &old, NULL);
  if (r < 0) {
    svm_layer_free(top);      /* never served: frees the mirror and raw_src */
    m->mirror = NULL;
    return svm_error_prefix("%s: putting the mirror in", m->name);
  }
  svm_layer_free(old);        /* raw -> track of the same tracker, drained by the swap */
  return 0;
}

int svm_move_disk_copy(struct svm_move_disk *m)
{
  int r;

  m->copy_start_ns = now_ns();
  if (atomic_load(&m->cancelled))
    return svm_error(ECANCELED, "%s: move cancelled", m->name);
  r = svm_mirror_run(m->mirror);
  if (r == -ECANCELED || atomic_load(&m->cancelled))
    return svm_error(ECANCELED, "%s: move cancelled", m->name);
  if (r < 0)
    return svm_error_prefix("%s: bulk copy", m->name);
  return 0;
}

void svm_move_disk_cancel(struct svm_move_disk *m)
{
  atomic_store(&m->cancelled, true);
  if (m->mirror)
    svm_mirror_cancel(m->mirror);
}

void svm_move_disk_progress(struct svm_move_disk *m, bool live, uint64_t *done, uint64_t *total,
                            uint64_t *copied, uint64_t *mirrored)
{
  struct svm_mirror_counters c;

  *done = atomic_load(&m->done);
  *total = atomic_load(&m->total);
  if (live && m->mirror) {
    svm_mirror_get_counters(m->mirror, &c);
    *copied = c.bytes_copied;
    *mirrored = c.bytes_mirrored;
    if (c.total) {
      *done = c.done;
      *total = c.total;
    }
  } else {
    *copied = m->bytes_copied;
    *mirrored = m->bytes_mirrored;
  }
}

void svm_move_disk_snapshot(struct svm_move_disk *m)
{
  struct svm_mirror_counters c;

  if (!m->mirror)
    return;
  svm_mirror_get_counters(m->mirror, &c);
  m->bytes_copied = c.bytes_copied;
  m->bytes_mirrored = c.bytes_mirrored;
  m->writes_parked = c.writes_parked;
  if (c.total) {
    atomic_store(&m->done, c.done);
    atomic_store(&m->total, c.total);
  }
}

/* Before the pause: the destination's cached writes go to disk now, while the guest runs;
 * inside the pause only what the last milliseconds added is left. The same for the tracker:
 * its file at the destination is written whole now (cbt_relocate_prepare), and the switch
 * only adds the pages marked since. Without it the switch writes the whole file (a failure
 * here costs the guest those 2 ms, not the move). */
int svm_move_disk_preflush(struct svm_move_disk *m)
{
  if (svm_layer_flush_sync(m->raw_dst) < 0)
    return svm_error_prefix("%s: flushing the destination %s", m->name, m->dst_path);
  if (m->cbt) {
    if (cbt_relocate_prepare(m->cbt, m->dst_ctk) == 0)
      m->ctk_created = true;
    else
      fprintf(stderr, "svmd: %s: preparing the change tracking's file at the destination: "
              "%s; the switch writes it whole\n", m->name, svm_last_error());
  }
  return 0;
}

/* The source tracker again, after a switch closed it and could not finish. NULL when even
 * that fails (the disk is then served without tracking, and the caller says so). */
static void reopen_source_tracker(struct svm_move_disk *m)
{
  if (m->cbt)
    return;
  if (cbt_open(m->src_ctk, m->disk_id, m->size, 0, &m->cbt) < 0) {
    fprintf(stderr, "svmd: %s: could not reopen the change tracking %s: %s; the disk is "
            "served without it until svmd restarts\n", m->name, m->src_ctk, svm_last_error());
    m->cbt = NULL;
  }
}

/* The tracker moves with the disk, open: its file beside the destination gets the epochs from
 * memory (cbt_relocate: exact, the hot set kept, so the guest's first writes after the switch
 * find their extents as warm as before; prepared before the pause, so only the pages marked
 * since are written here), and the same tracker goes on there, so change IDs answer exactly.
 * A few page writes and one sync in the pause, where a close, a copy and an open cost four
 * syncs and a read of the whole file. The export is drained: no mark is in flight. */
static int move_tracker(struct svm_move_disk *m)
{
  int r;

  if (!m->cbt)
    return 0;
  r = cbt_relocate(m->cbt, m->dst_ctk);
  if (r < 0)
    return svm_error_prefix("%s: moving the change tracking to %s", m->name, m->dst_ctk);
  m->ctk_created = true;
  return 0;
}

/* The tracker back to the source's file after a switch that cannot finish: written from
 * memory again (exact). Failing that, the source's own file as the relocation left it (its
 * log covers what it lacks: an over-report, never a miss). */
static void tracker_back(struct svm_move_disk *m)
{
  if (!m->cbt || cbt_relocate(m->cbt, m->src_ctk) == 0)
    return;
  fprintf(stderr, "svmd: %s: %s; reopening %s as it is\n", m->name, svm_last_error(),
          m->src_ctk);
  cbt_close(m->cbt);
  m->cbt = NULL;
  reopen_source_tracker(m);
}

/* The destination's flush in the pause, on a thread of its own beside the tracker's move:
 * the two syncs of one file system then share its journal commit instead of waiting for one
 * each, one after the other, while the guest waits. */
struct flush_job {
  struct svm_layer *layer;
  int r;
  char msg[512];
};

static void *flush_main(void *arg)
{
  struct flush_job *j = arg;

  j->r = svm_layer_flush_sync(j->layer);
  if (j->r < 0)
    snprintf(j->msg, sizeof j->msg, "%s", svm_last_error());
  return NULL;
}

int svm_move_disk_switch(struct svm_move_disk *m)
{
  struct svm_layer *raw = NULL, *top = NULL, *old = NULL;
  struct flush_job fj = { .layer = m->raw_dst };
  pthread_t flusher;
  bool threaded, moved = false;
  int r = svm_mirror_status(m->mirror);

  if (r < 0)
    return svm_error(-r, "%s: the destination %s failed during the move: %s", m->name,
                     m->dst_path, strerror(-r));
  /* the destination holds every acknowledged write now: it must be durable before anything
   * points at it (the descriptor's commit, after this returns) */
  threaded = pthread_create(&flusher, NULL, flush_main, &fj) == 0;
  if (!threaded)
    flush_main(&fj);
  /* a second descriptor on the destination: raw_dst stays the mirror's until finish */
  r = svm_layer_open_raw(m->dst_path, false, &raw);
  if (r < 0)
    r = svm_error_prefix("%s: opening %s", m->name, m->dst_path);
  else if ((r = move_tracker(m)) == 0)
    moved = m->cbt != NULL;
  if (threaded)
    pthread_join(flusher, NULL);
  if (r == 0 && fj.r < 0)
    r = svm_error(-fj.r, "%s: flushing the destination %s: %s", m->name, m->dst_path, fj.msg);
  if (r < 0 && moved)
    tracker_back(m);              /* moved, but the destination is not durable */
  if (r == 0) {
    r = m->cbt ? svm_layer_open_track(m->cbt, raw, &top) : 0;
    if (r == 0) {
      if (!m->cbt)
        top = raw;                /* no tracker: the data path goes on all the same */
      raw = NULL;
      r = svm_export_swap(m->export, top, &old, NULL);   /* nested in the caller's pause */
      if (r < 0)
        svm_layer_free(top);
    }
    if (r < 0) {
      r = svm_error_prefix("%s: switching to %s", m->name, m->dst_path);
      tracker_back(m);
    }
  }
  svm_layer_free(raw);
  if (r < 0)
    return r;
  m->old_top = old;               /* its tracking layer points at the same tracker */
  m->switched = true;
  return 0;
}

void svm_move_disk_finish(struct svm_move_disk *m)
{
  svm_layer_free(m->old_top);     /* track(closed) -> mirror -> raw_src */
  m->old_top = NULL;
  m->mirror = NULL;
  svm_layer_free(m->raw_dst);
  m->raw_dst = NULL;
}

/* The export back on raw_src -> track(source tracker), a fresh stack (the mirror's, or the
 * switched one, goes), then the destination's files. */
void svm_move_disk_abort(struct svm_move_disk *m)
{
  if (m->cbt)
    cbt_relocate_cancel(m->cbt);  /* a file prepared at the destination goes */
  if (m->switched) {
    tracker_back(m);              /* the export is paused */
    m->switched = false;
  }
  if (m->mirror) {
    struct svm_layer *raw = NULL, *top = NULL, *old = NULL;
    int r;
    reopen_source_tracker(m);
    r = svm_layer_open_raw(m->src_path, false, &raw);
    if (r == 0 && m->cbt) {
      r = svm_layer_open_track(m->cbt, raw, &top);
      if (r < 0)
        svm_layer_free(raw);
    } else if (r == 0) {
      top = raw;                  /* no tracker: the data path must go on all the same */
    }
    if (r == 0) {
      r = svm_export_swap(m->export, top, &old, NULL);
      if (r < 0)
        svm_layer_free(top);
    }
    if (r < 0) {
      /* the stack in the export stays: the mirror serves the source alone once the
       * destination is dropped, so the guest is served; its files must stay too */
      fprintf(stderr, "svmd: %s: could not take the mirror out (%s); it stays, serving the "
              "source\n", m->name, svm_last_error());
      svm_mirror_cancel(m->mirror);
      return;
    }
    svm_layer_free(old);          /* track -> mirror -> raw_src, or raw_dst -> track(copy) */
    svm_layer_free(m->old_top);   /* after a switch: the mirror's stack */
    m->old_top = NULL;
    m->mirror = NULL;
  }
  svm_layer_free(m->raw_dst);
  m->raw_dst = NULL;
  if (m->dst_created && unlink(m->dst_path) < 0 && errno != ENOENT)
    fprintf(stderr, "svmd: %s: could not remove %s: %s\n", m->name, m->dst_path,
            strerror(errno));
  if (m->ctk_created && unlink(m->dst_ctk) < 0 && errno != ENOENT)
    fprintf(stderr, "svmd: %s: could not remove %s: %s\n", m->name, m->dst_ctk,
            strerror(errno));
  m->dst_created = m->ctk_created = false;
}

void svm_move_disk_clear(struct svm_move_disk *m)
{
  free(m->src_path);
  free(m->dst_path);
  free(m->src_ctk);
  free(m->dst_ctk);
  m->src_path = m->dst_path = m->src_ctk = m->dst_ctk = NULL;
}
