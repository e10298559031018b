/* A live move of a VM between the agent's datastores (svmctl migrate VM --datastore DS): the
 * job thread running one VM's move with the pieces of svm/migrate/migrate.h. The table of
 * moves (queue, limits, requests, status, crash resolution) is moves.c.
 *
 * A move, on its job thread:
 *   preparing   destination folder DS2/VM, journal (STATE/moves/VM.move), the folder's other
 *               files, and per disk the destination file and the mirror in the export's stack
 *   copying     the bulk pass of every disk, each on a thread of its own
 *   switching   every export paused (with a deadline: a drain that misses it aborts the move
 *               rather than freezing the guest), each disk switched to its destination with its
 *               tracker, the descriptor written in DS2/VM (the commit point), resumed: the
 *               pause is the move's downtime_ms
 *   cleaning    the source stacks freed, the source folder removed, the journal removed
 * Before the commit any failure (cancel, the destination failing or full, the deadline) puts
 * every disk back on its source and removes the destination folder; the guest keeps its
 * connection and every acknowledged write. After the commit the destination is the VM's.
 *
 * Locking (internal.h): the table and each move's fields are under a->mu; a running move holds
 * a reference on its VM (so it is never deleted under it), and vm->op_mu around each step that
 * swaps a disk's stack or tracker. */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <svmotion/cbt.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "svm/agent/internal.h"
#include "svm/agent/move.h"
#include "svm/migrate/migrate.h"
#include "svm/nbd/export.h"

const char *const agent_move_state_names[] = { "queued", "running", "done", "failed",
                                               "cancelled" };

uint64_t agent_move_now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void agent_move_free(struct agent_move *m)
{
  for (unsigned i = 0; m->disks && i < m->ndisks; i++)
    svm_move_disk_clear(&m->disks[i]);
  free(m->disks);
  free(m);
}

/* ---- the job ---- */

static void set_phase(struct agent_move *m, const char *phase)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&m->a->mu);
  m->phase = phase;
}

static bool cancelled(struct agent_move *m)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&m->a->mu);
  return m->cancel;
}

static char *strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *strf(const char *fmt, ...)
{
  va_list ap;
  char *s;
  int n;

  va_start(ap, fmt);
  n = vasprintf(&s, fmt, ap);
  va_end(ap);
  return n < 0 ? NULL : s;
}

/* Each disk's paths, export and tracker as the VM has them now (the job thread is the only
 * writer of these fields, so it reads them without the lock). */
static int fill_disks(struct agent_move *m, const char *dst_dir)
{
  struct agent_vm *vm = m->vmp;

  for (unsigned i = 0; i < m->ndisks; i++) {
    struct svm_move_disk *md = &m->disks[i];
    struct agent_disk *d = &vm->disks[i];
    const struct svm_desc_disk *dd = &vm->desc->disks[i];
    enum svm_desc_prov p = m->prov_same ? dd->provisioning : m->prov;
    md->export = d->export;
    md->cbt = d->cbt;
    md->name = d->export_name;
    md->disk_id = dd->uuid;
    md->size = dd->size;
    md->prov = p == SVM_DESC_THICK   ? SVM_PROVISIONING_THICK
               : p == SVM_DESC_EAGER ? SVM_PROVISIONING_EAGER
                                     : SVM_PROVISIONING_THIN;
    md->rate = m->rate;
    md->src_path = strdup(d->path);
    md->src_ctk = strdup(d->ctk_path);
    md->dst_path = strf("%s/%s", dst_dir, dd->file);
    md->dst_ctk = strf("%s/%s", dst_dir, dd->ctk);
    if (!md->src_path || !md->src_ctk || !md->dst_path || !md->dst_ctk)
      return svm_error(ENOMEM, "out of memory");
  }
  return 0;
}

/* The files the descriptor names (they move as disks and trackers, not as plain files). */
static const char **disk_files(struct agent_vm *vm, const char *desc_name)
{
  const char **skip = calloc(2 * vm->ndisks + 2, sizeof *skip);
  unsigned n = 0;

  if (!skip)
    return NULL;
  skip[n++] = desc_name;
  for (unsigned i = 0; i < vm->ndisks; i++) {
    skip[n++] = vm->desc->disks[i].file;
    skip[n++] = vm->desc->disks[i].ctk;
  }
  return skip;
}

static int prepare(struct agent_move *m, const char *dst_dir)
{
  struct agent_vm *vm = m->vmp;
  CLEANUP_FREE char *desc_name = strf("%s.svm", m->vm);
  CLEANUP_FREE const char **skip = NULL;
  int r;

  if (!desc_name || !(skip = disk_files(vm, desc_name)))
    return svm_error(ENOMEM, "out of memory");
  r = svm_move_copy_files(vm->dir, dst_dir, skip);
  if (r < 0)
    return svm_error_prefix("copying the files of %s", vm->dir);
  r = fill_disks(m, dst_dir);
  for (unsigned i = 0; r == 0 && i < m->ndisks; i++) {
    if (cancelled(m))
      return svm_error(ECANCELED, "move of %s cancelled", m->vm);
    pthread_mutex_lock(&vm->op_mu);
    r = svm_move_disk_prepare(&m->disks[i]);
    pthread_mutex_unlock(&vm->op_mu);
  }
  return r;
}

struct copy_arg {
  struct svm_move_disk *d;
  int r;
  char err[1024];
};

enum { COPIER_NICE = 10 };

static void *copy_thread(void *opaque)
{
  struct copy_arg *c = opaque;

  /* The guest comes first: on a host with few CPUs a copier that holds one through its whole
   * time slice delays the export's threads by milliseconds; at a lower priority it yields to
   * them when they wake (the copier only loses what the guest uses). */
  (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), COPIER_NICE);
  c->r = svm_move_disk_copy(c->d);
  if (c->r < 0)
    snprintf(c->err, sizeof c->err, "%s", svm_last_error());
  return NULL;
}

/* Every disk's bulk pass in parallel; the first failure cancels the others. */
static int copy(struct agent_move *m)
{
  struct copy_arg *args = calloc(m->ndisks, sizeof *args);
  pthread_t *t = calloc(m->ndisks, sizeof *t);
  bool *started = calloc(m->ndisks, sizeof *started);
  int r = 0;

  if (!args || !t || !started) {
    free(args);
    free(t);
    free(started);
    return svm_error(ENOMEM, "out of memory");
  }
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&m->a->mu);
    m->copying = true;
    m->phase = "copying";
    if (m->cancel)
      for (unsigned i = 0; i < m->ndisks; i++)
        svm_move_disk_cancel(&m->disks[i]);
  }
  for (unsigned i = 0; i < m->ndisks; i++) {
    args[i].d = &m->disks[i];
    started[i] = pthread_create(&t[i], NULL, copy_thread, &args[i]) == 0;
    if (!started[i])
      copy_thread(&args[i]);
  }
  for (unsigned i = 0; i < m->ndisks; i++) {
    if (started[i])
      pthread_join(t[i], NULL);
    if (args[i].r < 0 && r == 0) {
      r = args[i].r;
      svm_error(-r, "%s", args[i].err);
      ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&m->a->mu);
      for (unsigned k = 0; k < m->ndisks; k++)
        svm_move_disk_cancel(&m->disks[k]);
    }
  }
  /* a cancelled copy of one disk is the cause only when nothing else failed */
  for (unsigned i = 0; r < 0 && i < m->ndisks; i++)
    if (args[i].r < 0 && args[i].r != -ECANCELED) {
      r = args[i].r;
      svm_error(-r, "%s", args[i].err);
      break;
    }
  free(args);
  free(t);
  free(started);
  return r;
}

/* The VM's descriptor as it will be in the destination: the same text, the new provisioning. */
static int dst_descriptor(struct agent_move *m, const char *path, struct svm_desc **out)
{
  CLEANUP_FREE char *text = NULL;
  CLEANUP_DESC struct svm_desc *d = NULL;
  size_t len;
  int r = svm_desc_format(m->vmp->desc, &text, &len);

  if (r == 0)
    r = svm_desc_parse(path, text, len, &d);
  for (unsigned i = 0; r == 0 && !m->prov_same && i < m->ndisks; i++) {
    char key[32];
    snprintf(key, sizeof key, "disk%u.provisioning", i);
    r = svm_desc_set(d, key, svm_desc_prov_name(m->prov));
  }
  if (r == 0)
    r = svm_desc_validate(d);
  if (r == 0)
    *out = TAKE_PTR(d);
  return r;
}

/* The VM now lives in the destination (a->mu held): its folder, descriptor, disks' files and
 * trackers. The export names and sockets stay: connected guests notice nothing. */
static int publish(struct agent_move *m, const char *dst_dir, const char *desc_path,
                   struct svm_desc *desc)
{
  struct agent_vm *vm = m->vmp;
  char *dir = strdup(dst_dir), *dp = strdup(desc_path);
  char **paths = calloc(2 * m->ndisks + 1, sizeof *paths);

  if (!dir || !dp || !paths) {
    free(dir);
    free(dp);
    free(paths);
    return svm_error(ENOMEM, "out of memory");
  }
  for (unsigned i = 0; i < m->ndisks; i++) {
    paths[2 * i] = m->disks[i].dst_path;
    paths[2 * i + 1] = m->disks[i].dst_ctk;
  }
  for (unsigned i = 0; i < m->ndisks; i++) {
    struct agent_disk *d = &vm->disks[i];
    free(d->path);
    free(d->ctk_path);
    d->path = strdup(paths[2 * i]);
    d->ctk_path = strdup(paths[2 * i + 1]);
    d->cbt = m->disks[i].cbt;
  }
  free(paths);
  free(vm->dir);
  free(vm->desc_path);
  svm_desc_free(vm->desc);
  vm->dir = dir;
  vm->desc_path = dp;
  vm->desc = desc;
  vm->ds = m->dst_ds;
  return 0;
}

/* Pause every export (a->mu not held), with the deadline. On failure none stays paused. */
static int pause_all(struct agent_move *m)
{
  for (unsigned i = 0; i < m->ndisks; i++) {
    int r = svm_export_pause(m->disks[i].export, SWITCH_PAUSE_NS);
    if (r < 0) {
      while (i)
        svm_export_resume(m->disks[--i].export, NULL);
      return svm_error_prefix("switchover: guest I/O did not drain within %llu s, so the "
                              "move is given up rather than freezing the guest",
                              SWITCH_PAUSE_NS / 1000000000ull);
    }
  }
  return 0;
}

static double resume_all(struct agent_move *m)
{
  uint64_t max = 0;

  for (unsigned i = 0; i < m->ndisks; i++) {
    uint64_t ns = 0;
    svm_export_resume(m->disks[i].export, &ns);
    if (ns > max)
      max = ns;
  }
  return (double)max / 1e6;
}

/* Switchover. Returns 1 once committed (the destination is the VM's), or a negative errno
 * before the commit (the caller aborts). */
static int switchover(struct agent_move *m, const char *dst_dir)
{
  struct agent_vm *vm = m->vmp;
  CLEANUP_FREE char *desc_path = strf("%s/%s.svm", dst_dir, m->vm);
  CLEANUP_DESC struct svm_desc *desc = NULL;
  CLEANUP_FREE char *desc_tmp = NULL;
  uint64_t t[4];
  int r;

  if (!desc_path)
    return svm_error(ENOMEM, "out of memory");
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&m->a->mu);
    for (unsigned i = 0; i < m->ndisks; i++)
      svm_move_disk_snapshot(&m->disks[i]);
    m->copying = false;
    m->phase = "switching";
    if (m->cancel)
      return svm_error(ECANCELED, "move of %s cancelled", m->vm);
  }
  /* Everything that does not depend on the pause is done before it: the descriptor is
   * written and synced beside its name (the commit only renames it), and the destination is
   * flushed (preflush). */
  r = dst_descriptor(m, desc_path, &desc);
  if (r == 0)
    r = svm_desc_stage(desc, desc_path, &desc_tmp);
  for (unsigned i = 0; r == 0 && i < m->ndisks; i++)
    r = svm_move_disk_preflush(&m->disks[i]);
  if (r < 0) {
    if (desc_tmp)
      unlink(desc_tmp);
    return r;
  }
  pthread_mutex_lock(&vm->op_mu);
  t[0] = agent_move_now_ns();
  r = pause_all(m);
  if (r < 0) {
    pthread_mutex_unlock(&vm->op_mu);
    unlink(desc_tmp);
    return r;
  }
  t[1] = agent_move_now_ns();
  for (unsigned i = 0; r == 0 && i < m->ndisks; i++)
    r = svm_move_disk_switch(&m->disks[i]);
  t[2] = agent_move_now_ns();
  if (r == 0)
    r = svm_desc_commit(desc_tmp, desc_path);      /* the commit point */
  else
    unlink(desc_tmp);
  t[3] = agent_move_now_ns();
  if (r < 0) {
    int e = svm_error_prefix("switchover");
    CLEANUP_FREE char *why = strdup(svm_last_error());
    for (unsigned i = 0; i < m->ndisks; i++)
      svm_move_disk_abort(&m->disks[i]);           /* swaps back inside our pause */
    {
      /* a switch closes the source tracker: the disks take the one abort left them (the
       * meta context provider reads it as soon as the export runs again) */
      ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&m->a->mu);
      for (unsigned i = 0; i < m->ndisks; i++)
        vm->disks[i].cbt = m->disks[i].cbt;
    }
    m->downtime_ms = resume_all(m);
    pthread_mutex_unlock(&vm->op_mu);
    return svm_error(-e, "%s", why ? why : "switchover failed");
  }
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&m->a->mu);
    r = publish(m, dst_dir, desc_path, desc);
    if (r == 0)
      desc = NULL;
  }
  m->downtime_ms = resume_all(m);
  pthread_mutex_unlock(&vm->op_mu);
  m->drain_ms = (double)(t[1] - t[0]) / 1e6;
  m->switch_ms = (double)(t[2] - t[1]) / 1e6;
  m->commit_ms = (double)(t[3] - t[2]) / 1e6;
  if (r < 0)
    agent_log("%s: moved, but the agent could not record it (%s); restart svmd to pick the "
              "VM up from %s", m->vm, svm_last_error(), dst_dir);
  return 1;
}

static void abort_move(struct agent_move *m, const char *dst_dir)
{
  char *left = NULL;

  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&m->a->mu);
    if (m->copying)
      for (unsigned i = 0; i < m->ndisks; i++)
        svm_move_disk_snapshot(&m->disks[i]);
    m->copying = false;
    m->phase = "aborting";
  }
  pthread_mutex_lock(&m->vmp->op_mu);
  for (unsigned i = 0; i < m->ndisks; i++)
    svm_move_disk_abort(&m->disks[i]);
  pthread_mutex_unlock(&m->vmp->op_mu);
  if (svm_move_remove_folder(dst_dir, &left) < 0)
    agent_log("%s: move aborted; %s (remove it by hand)", m->vm, svm_last_error());
  free(left);
}

/* After the commit: the source's files closed and its folder retired (renamed out of the
 * VM's name); *retired (malloc'd) is what is left to remove once the move has reported, or
 * NULL when the folder is gone already (removed here: it could not be renamed). */
static void retire_source(struct agent_move *m, const char *src_dir, char **retired)
{
  char tag[16], *left = NULL;

  set_phase(m, "cleaning");
  for (unsigned i = 0; i < m->ndisks; i++)
    svm_move_disk_finish(&m->disks[i]);
  snprintf(tag, sizeof tag, "%u", m->id);
  if (svm_move_retire_folder(src_dir, tag, retired) == 0)
    return;
  agent_log("%s: moved; %s; removing the source folder now", m->vm, svm_last_error());
  if (svm_move_remove_folder(src_dir, &left) < 0)
    agent_log("%s: moved; the source folder %s was not removed completely: %s", m->vm,
              src_dir, svm_last_error());
  free(left);
}

/* The retired source's blocks freed, after the move reported: the move's thread is still
 * counted (a->moves->threads), so svmd's stop waits for it. */
static void remove_retired(struct svm_agent *a, const char *vm, char *retired)
{
  char *left = NULL;

  if (retired && svm_move_remove_retired_folder(retired, &a->moves->retire_stop, &left) < 0)
    agent_log("%s: moved; its old folder %s was not removed completely: %s", vm, retired,
              svm_last_error());
  free(left);
  free(retired);
  pthread_mutex_lock(&a->mu);
  a->moves->threads--;
  pthread_cond_broadcast(&a->moves->cv);
  pthread_mutex_unlock(&a->mu);
}

static void end_move(struct agent_move *m, int r, const char *why)
{
  struct svm_agent *a = m->a;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&a->mu);

  m->end_ns = agent_move_now_ns();
  if (r >= 0) {
    m->state = MOVE_DONE;
  } else {
    m->state = r == -ECANCELED ? MOVE_CANCELLED : MOVE_FAILED;
    snprintf(m->error, sizeof m->error, "%s", why ? why : "failed");
  }
  m->phase = agent_move_state_names[m->state];
  m->vmp->move = NULL;
  agent_vm_unref(m->vmp);
  m->vmp = NULL;
  pthread_cond_broadcast(&a->moves->cv);   /* status waiters (moves.c) */
  agent_moves_schedule_locked(a);      /* may free m: kept finished moves are bounded */
}

static int run_move(struct agent_move *m, char **src_out, char **dst_out)
{
  struct agent_vm *vm = m->vmp;
  struct svm_journal j = { .vm = "" };
  int r;

  snprintf(j.vm, sizeof j.vm, "%s", m->vm);
  snprintf(j.src_ds, sizeof j.src_ds, "%s", m->src_ds->name);
  snprintf(j.dst_ds, sizeof j.dst_ds, "%s", m->dst_ds->name);
  snprintf(j.src_dir, sizeof j.src_dir, "%s", vm->dir);
  snprintf(j.dst_dir, sizeof j.dst_dir, "%s/%s", m->dst_ds->dir, m->vm);
  *src_out = strdup(j.src_dir);
  *dst_out = strdup(j.dst_dir);
  if (!*src_out || !*dst_out)
    return svm_error(ENOMEM, "out of memory");
  /* the folder first: a journal must never name a folder that is not the move's own (a
   * crash between the two leaves an empty folder, which the next move to it names) */
  if (mkdir(j.dst_dir, 0700) < 0) {
    r = svm_error(errno, "%s: %s%s", j.dst_dir, strerror(errno),
                  errno == EEXIST ? " (a folder of that name is in the destination datastore; "
                                    "remove it or choose another datastore)" : "");
    free(*dst_out);              /* not ours: the abort must not remove it */
    *dst_out = NULL;
    free(*src_out);              /* no journal to remove either */
    *src_out = NULL;
    return r;
  }
  if (chmod(j.dst_dir, 0700) < 0) {                 /* whatever the umask */
    r = svm_error(errno, "%s: chmod: %s", j.dst_dir, strerror(errno));
    rmdir(j.dst_dir);
    free(*dst_out);
    *dst_out = NULL;
    free(*src_out);
    *src_out = NULL;
    return r;
  }
  r = svm_journal_write(m->a->moves->dir, &j);
  if (r < 0)
    return svm_error_prefix("recording the move");
  r = prepare(m, j.dst_dir);
  m->copy_ns = agent_move_now_ns();
  if (r == 0)
    r = copy(m);
  m->switch_ns = agent_move_now_ns();
  if (r == 0)
    r = switchover(m, j.dst_dir);
  return r;
}

void *agent_move_thread(void *opaque)
{
  struct agent_move *m = opaque;
  struct svm_agent *a = m->a;
  char *src = NULL, *dst = NULL, *retired = NULL;
  char vm[sizeof m->vm];
  CLEANUP_FREE char *why = NULL;
  int r;

  agent_log("%s: moving from datastore %s to %s", m->vm, m->src_ds->name, m->dst_ds->name);
  r = run_move(m, &src, &dst);
  snprintf(vm, sizeof vm, "%s", m->vm);
  if (r == 1) {
    uint64_t end_switch = agent_move_now_ns();
    retire_source(m, src, &retired);
    uint64_t now = agent_move_now_ns();
    agent_log("%s: moved to datastore %s (%s) in %.3f s (prepare %.3f, copy %.3f, switchover "
              "%.3f, retire %.3f), guest paused %.2f ms (drain %.2f, switch %.2f, commit %.2f)",
              m->vm, m->dst_ds->name, dst, (double)(now - m->start_ns) / 1e9,
              (double)(m->copy_ns - m->start_ns) / 1e9, (double)(m->switch_ns - m->copy_ns) / 1e9,
              (double)(end_switch - m->switch_ns) / 1e9, (double)(now - end_switch) / 1e9,
              m->downtime_ms, m->drain_ms, m->switch_ms, m->commit_ms);
  } else {
    why = strdup(svm_last_error());
    if (cancelled(m))
      r = -ECANCELED;        /* asked for: whatever failed on the way out is not the cause */
    if (dst)
      abort_move(m, dst);
    agent_log("%s: move to datastore %s %s: %s; the VM stays on %s%s", m->vm, m->dst_ds->name,
              r == -ECANCELED ? "cancelled" : "failed", why ? why : "?", m->src_ds->name,
              dst ? ", the destination was removed" : "");
  }
  if (src && svm_journal_remove(a->moves->dir, m->vm) < 0)
    agent_log("%s: %s", m->vm, svm_last_error());
  free(src);
  free(dst);
  end_move(m, r < 0 ? r : 0, why);
  remove_retired(a, vm, retired);
  return NULL;
}
