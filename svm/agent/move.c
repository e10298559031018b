/* Live moves of a VM between the agent's datastores (svmctl migrate VM --datastore DS): the
 * move table (queued, running, the last ones done), the job thread running one VM's move with
 * the pieces of svm/migrate/migrate.h, cancel, status, and the resolution at start of a move
 * that a crash cut short.
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
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <svmotion/cbt.h>
#include <svmotion/cli.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "svm/agent/internal.h"
#include "svm/migrate/migrate.h"
#include "svm/nbd/export.h"

enum {
  MOVES_KEPT = 16,                  /* finished moves that status still shows */
};
#define SWITCH_PAUSE_NS (5ull * 1000 * 1000 * 1000)   /* the longest drain at switchover */

enum move_state { MOVE_QUEUED, MOVE_RUNNING, MOVE_DONE, MOVE_FAILED, MOVE_CANCELLED };
static const char *const state_names[] = { "queued", "running", "done", "failed", "cancelled" };

struct agent_move {
  struct agent_move *next;
  struct svm_agent *a;
  unsigned id;
  char vm[72];
  struct agent_vm *vmp;             /* referenced while queued or running */
  const struct svm_datastore *src_ds, *dst_ds;
  bool prov_same;
  enum svm_desc_prov prov;          /* when !prov_same */
  uint64_t rate;
  enum move_state state;
  const char *phase;
  bool cancel;                      /* asked; the job thread acts on it */
  bool copying;                     /* the mirrors are alive: status may ask them */
  unsigned ndisks;
  struct svm_move_disk *disks;
  uint64_t size;                    /* of all disks */
  uint64_t queued_ns, start_ns, end_ns;
  double downtime_ms;
  char error[1024];
};

struct agent_moves {
  char *dir;                        /* STATE/moves */
  struct agent_move *list;          /* in the order asked for */
  unsigned next_id;
  unsigned threads;                 /* job threads running */
  pthread_cond_t cv;                /* signalled when one ends */
  bool stopping;
};

static uint64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool finished(const struct agent_move *m)
{
  return m->state >= MOVE_DONE;
}

static void free_move(struct agent_move *m)
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

static void *copy_thread(void *opaque)
{
  struct copy_arg *c = opaque;

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
  r = dst_descriptor(m, desc_path, &desc);
  for (unsigned i = 0; r == 0 && i < m->ndisks; i++)
    r = svm_move_disk_preflush(&m->disks[i]);
  if (r < 0)
    return r;
  pthread_mutex_lock(&vm->op_mu);
  r = pause_all(m);
  if (r < 0) {
    pthread_mutex_unlock(&vm->op_mu);
    return r;
  }
  for (unsigned i = 0; r == 0 && i < m->ndisks; i++)
    r = svm_move_disk_switch(&m->disks[i]);
  if (r == 0)
    r = svm_desc_save(desc, desc_path);            /* the commit point */
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

/* After the commit: the source goes. */
static void clean_source(struct agent_move *m, const char *src_dir)
{
  char *left = NULL;

  set_phase(m, "cleaning");
  for (unsigned i = 0; i < m->ndisks; i++)
    svm_move_disk_finish(&m->disks[i]);
  if (svm_move_remove_folder(src_dir, &left) < 0)
    agent_log("%s: moved; the source folder %s was not removed completely: %s", m->vm,
              src_dir, svm_last_error());
  free(left);
}

static void schedule_locked(struct svm_agent *a);

static void end_move(struct agent_move *m, int r, const char *why)
{
  struct svm_agent *a = m->a;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&a->mu);

  m->end_ns = now_ns();
  if (r >= 0) {
    m->state = MOVE_DONE;
  } else {
    m->state = r == -ECANCELED ? MOVE_CANCELLED : MOVE_FAILED;
    snprintf(m->error, sizeof m->error, "%s", why ? why : "failed");
  }
  m->phase = state_names[m->state];
  m->vmp->move = NULL;
  agent_vm_unref(m->vmp);
  m->vmp = NULL;
  a->moves->threads--;
  pthread_cond_broadcast(&a->moves->cv);
  schedule_locked(a);
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
  if (mkdir(j.dst_dir, 0700) < 0 || chmod(j.dst_dir, 0700) < 0) {   /* whatever the umask */
    r = svm_error(errno, "%s: %s%s", j.dst_dir, strerror(errno),
                  errno == EEXIST ? " (a folder of that name is in the destination datastore; "
                                    "remove it or choose another datastore)" : "");
    free(*dst_out);              /* not ours: the abort must not remove it */
    *dst_out = NULL;
    free(*src_out);              /* no journal to remove either */
    *src_out = NULL;
    return r;
  }
  r = svm_journal_write(m->a->moves->dir, &j);
  if (r < 0)
    return svm_error_prefix("recording the move");
  r = prepare(m, j.dst_dir);
  if (r == 0)
    r = copy(m);
  if (r == 0)
    r = switchover(m, j.dst_dir);
  return r;
}

static void *move_thread(void *opaque)
{
  struct agent_move *m = opaque;
  struct svm_agent *a = m->a;
  char *src = NULL, *dst = NULL;
  CLEANUP_FREE char *why = NULL;
  int r;

  agent_log("%s: moving from datastore %s to %s", m->vm, m->src_ds->name, m->dst_ds->name);
  r = run_move(m, &src, &dst);
  if (r == 1) {
    clean_source(m, src);
    agent_log("%s: moved to datastore %s (%s) in %.1f s, guest paused %.2f ms", m->vm,
              m->dst_ds->name, dst, (double)(now_ns() - m->start_ns) / 1e9, m->downtime_ms);
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
  return NULL;
}

/* ---- the table ---- */

/* Start what the limits allow, oldest first (a->mu held). The list is in the order the moves
 * were asked for. */
static void schedule_locked(struct svm_agent *a)
{
  struct agent_moves *ms = a->moves;
  struct svm_move_slot running[SVM_MOVES_PER_HOST + 1];
  unsigned n = 0, nfinished = 0;

  if (ms->stopping)
    return;
  for (struct agent_move *m = ms->list; m; m = m->next)
    if (m->state == MOVE_RUNNING && n < SVM_MOVES_PER_HOST + 1)
      running[n++] = (struct svm_move_slot){ m->src_ds->name, m->dst_ds->name };
  for (struct agent_move *m = ms->list; m; m = m->next) {
    struct svm_move_slot s = { m->src_ds->name, m->dst_ds->name };
    pthread_attr_t attr;
    pthread_t t;
    if (m->state != MOVE_QUEUED || !svm_move_may_start(running, n, &s))
      continue;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    m->state = MOVE_RUNNING;
    m->phase = "preparing";
    m->start_ns = now_ns();
    ms->threads++;
    if (pthread_create(&t, &attr, move_thread, m) != 0) {
      ms->threads--;
      m->state = MOVE_FAILED;
      m->phase = "failed";
      m->end_ns = now_ns();
      snprintf(m->error, sizeof m->error, "could not start a thread for the move");
      m->vmp->move = NULL;
      agent_vm_unref(m->vmp);
      m->vmp = NULL;
    } else if (n < SVM_MOVES_PER_HOST + 1) {
      running[n++] = s;
    }
    pthread_attr_destroy(&attr);
  }
  /* forget the oldest finished moves past MOVES_KEPT */
  for (struct agent_move *m = ms->list; m; m = m->next)
    nfinished += finished(m);
  for (struct agent_move **pp = &ms->list; *pp && nfinished > MOVES_KEPT;) {
    struct agent_move *m = *pp;
    if (finished(m)) {
      *pp = m->next;
      free_move(m);
      nfinished--;
    } else {
      pp = &m->next;
    }
  }
}

static void resolve_journal(void *opaque, const char *file, const struct svm_journal *j,
                            const char *err)
{
  struct svm_agent *a = opaque;
  const struct svm_datastore *src, *dst;
  CLEANUP_FREE char *want_src = NULL;
  CLEANUP_FREE char *want_dst = NULL;
  CLEANUP_FREE char *desc = NULL;
  char *left = NULL;
  struct stat st;

  if (!j) {
    agent_log("move journal %s: %s; left alone (remove it once the folders it names are "
              "sorted out)", file, err);
    return;
  }
  src = agent_find_ds(a, j->src_ds);
  dst = agent_find_ds(a, j->dst_ds);
  if (!src || !dst || asprintf(&want_src, "%s/%s", src->dir, j->vm) < 0 ||
      asprintf(&want_dst, "%s/%s", dst->dir, j->vm) < 0 ||
      strcmp(want_src, j->src_dir) != 0 || strcmp(want_dst, j->dst_dir) != 0) {
    agent_log("move journal %s names folders outside this svmd's datastores (%s, %s); left "
              "alone", file, j->src_dir, j->dst_dir);
    return;
  }
  if (asprintf(&desc, "%s/%s.svm", j->dst_dir, j->vm) < 0) {
    desc = NULL;
    return;
  }
  if (stat(desc, &st) == 0) {
    agent_log("VM %s: its move from datastore %s to %s had committed when svmd stopped: the "
              "destination %s is the VM's; removing what is left of the source %s", j->vm,
              j->src_ds, j->dst_ds, j->dst_dir, j->src_dir);
    if (svm_move_remove_folder(j->src_dir, &left) < 0)
      agent_log("VM %s: %s", j->vm, svm_last_error());
  } else {
    agent_log("VM %s: its move from datastore %s to %s was cut short when svmd stopped: the "
              "source %s is intact and stays the VM's; removing the partial destination %s",
              j->vm, j->src_ds, j->dst_ds, j->src_dir, j->dst_dir);
    if (svm_move_remove_folder(j->dst_dir, &left) < 0)
      agent_log("VM %s: %s", j->vm, svm_last_error());
  }
  free(left);
  svm_journal_remove(a->moves->dir, j->vm);
}

int agent_moves_init(struct svm_agent *a)
{
  struct agent_moves *ms = calloc(1, sizeof *ms);

  if (!ms || asprintf(&ms->dir, "%s/moves", a->state_dir) < 0) {
    free(ms);
    return svm_error(ENOMEM, "out of memory");
  }
  pthread_cond_init(&ms->cv, NULL);
  ms->next_id = 1;
  a->moves = ms;
  if (mkdir(ms->dir, 0700) < 0 && errno != EEXIST)
    return svm_error(errno, "%s: %s", ms->dir, strerror(errno));
  return svm_journal_scan(ms->dir, resolve_journal, a);
}

void agent_moves_stop(struct svm_agent *a)
{
  struct agent_moves *ms = a->moves;

  if (!ms)
    return;
  pthread_mutex_lock(&a->mu);
  ms->stopping = true;
  for (struct agent_move *m = ms->list; m; m = m->next) {
    if (m->state == MOVE_QUEUED) {
      m->state = MOVE_CANCELLED;
      m->vmp->move = NULL;
      agent_vm_unref(m->vmp);
      m->vmp = NULL;
    } else if (m->state == MOVE_RUNNING) {
      m->cancel = true;
      for (unsigned i = 0; i < m->ndisks; i++)
        svm_move_disk_cancel(&m->disks[i]);
    }
  }
  while (ms->threads)
    pthread_cond_wait(&ms->cv, &a->mu);
  pthread_mutex_unlock(&a->mu);
  while (ms->list) {
    struct agent_move *m = ms->list;
    ms->list = m->next;
    free_move(m);
  }
  pthread_cond_destroy(&ms->cv);
  free(ms->dir);
  free(ms);
  a->moves = NULL;
}

/* ---- requests ---- */

static void move_json(FILE *f, struct agent_move *m)
{
  uint64_t done = 0, total = 0, copied = 0, mirrored = 0, parked = 0;
  uint64_t end = finished(m) ? m->end_ns : now_ns();
  double secs = m->start_ns ? (double)(end - m->start_ns) / 1e9 : 0;

  for (unsigned i = 0; m->disks && i < m->ndisks; i++) {
    uint64_t d, t, c, mi;
    svm_move_disk_progress(&m->disks[i], m->copying, &d, &t, &c, &mi);
    done += d;
    total += t;
    copied += c;
    mirrored += mi;
    parked += m->disks[i].writes_parked;
  }
  if (!total)
    total = m->size;
  if (m->state == MOVE_DONE)
    done = total;
  fprintf(f, "{\"id\": %u, \"vm\": ", m->id);
  agent_json_str(f, m->vm);
  fputs(", \"from\": ", f);
  agent_json_str(f, m->src_ds->name);
  fputs(", \"to\": ", f);
  agent_json_str(f, m->dst_ds->name);
  fprintf(f, ", \"provisioning\": \"%s\", \"state\": \"%s\", \"phase\": \"%s\", \"disks\": %u, "
          "\"bytes_total\": %" PRIu64 ", \"bytes_done\": %" PRIu64 ", \"bytes_copied\": %"
          PRIu64 ", \"bytes_mirrored\": %" PRIu64 ", \"writes_parked\": %" PRIu64
          ", \"rate_limit\": %" PRIu64 ", \"seconds\": %.3f, \"queued_seconds\": %.3f, "
          "\"downtime_ms\": %.3f, \"error\": ",
          m->prov_same ? "same" : svm_desc_prov_name(m->prov), state_names[m->state], m->phase,
          m->ndisks, total, done, copied, mirrored, parked, m->rate, secs,
          (double)((m->start_ns ? m->start_ns : end) - m->queued_ns) / 1e9, m->downtime_ms);
  if (m->state == MOVE_FAILED || m->state == MOVE_CANCELLED)
    agent_json_str(f, m->error[0] ? m->error : state_names[m->state]);
  else
    fputs("null", f);
  fputs("}", f);
}

static void move_text(FILE *f, struct agent_move *m)
{
  char d[32], t[32];
  uint64_t done = 0, total = 0, c, mi;

  for (unsigned i = 0; m->disks && i < m->ndisks; i++) {
    uint64_t dd, tt;
    svm_move_disk_progress(&m->disks[i], m->copying, &dd, &tt, &c, &mi);
    done += dd;
    total += tt;
  }
  if (!total)
    total = m->size;
  if (m->state == MOVE_DONE)
    done = total;
  fprintf(f, "#%u %s %s -> %s  %s (%s)  %s / %s", m->id, m->vm, m->src_ds->name,
          m->dst_ds->name, state_names[m->state], m->phase,
          svm_size_format(done, d, sizeof d), svm_size_format(total, t, sizeof t));
  if (m->state == MOVE_DONE)
    fprintf(f, "  downtime %.2f ms", m->downtime_ms);
  if (m->error[0])
    fprintf(f, "  %s", m->error);
  fputc('\n', f);
}

static int finish_out(FILE *f, char **out)
{
  if (fclose(f) != 0) {
    free(*out);
    *out = NULL;
    return svm_error(ENOMEM, "out of memory");
  }
  return 0;
}

static int out_move(struct agent_move *m, bool json, char **out)
{
  FILE *f = open_memstream(out, &(size_t){ 0 });

  if (!f)
    return svm_error(ENOMEM, "out of memory");
  if (json)
    move_json(f, m);
  else
    move_text(f, m);
  return finish_out(f, out);
}

int agent_move_start(struct svm_agent *a, const struct svm_ctl_request *r, bool json,
                     char **out)
{
  const char *name = svm_ctl_arg(r, "vm"), *dsname = svm_ctl_arg(r, "datastore");
  const char *prov = svm_ctl_arg(r, "provisioning"), *rate = svm_ctl_arg(r, "rate");
  struct agent_vm *vm;
  struct agent_move *m;
  struct stat st;
  char dst[4200];
  int ret;

  if (!name || !dsname)
    return svm_error(EINVAL, "migrate: needs the arguments 'vm' and 'datastore'");
  vm = agent_find_vm(a, name);
  if (!vm)
    return svm_error(ENOENT, "no such VM '%s' on host %s (svmctl vm list shows the VMs)", name,
                     a->name);
  if (vm->move)
    return svm_error(EBUSY, "VM %s is being moved already (move #%u; svmctl status)", name,
                     vm->move->id);
  m = calloc(1, sizeof *m);
  if (!m)
    return svm_error(ENOMEM, "out of memory");
  m->a = a;
  m->dst_ds = agent_find_ds(a, dsname);
  m->src_ds = vm->ds;
  m->prov_same = !prov || strcmp(prov, "same") == 0;
  ret = 0;
  if (!m->dst_ds)
    ret = svm_error(ENOENT, "no such datastore '%s' on host %s (svmctl vm list shows them)",
                    dsname, a->name);
  else if (m->dst_ds == vm->ds)
    ret = svm_error(EINVAL, "VM %s is on datastore %s already", name, dsname);
  else if (!m->prov_same && svm_desc_prov_parse(prov, &m->prov) < 0)
    ret = svm_error(EINVAL, "'%s' is not a provisioning (same, thin, thick or "
                    "eager-zeroed-thick)", prov);
  if (ret == 0 && rate) {
    char *end;
    errno = 0;
    m->rate = strtoull(rate, &end, 10);
    if (!*rate || *end || errno || rate[0] == '-')
      ret = svm_error(EINVAL, "rate '%s' is not a number of bytes per second", rate);
  }
  if (ret == 0) {
    snprintf(dst, sizeof dst, "%s/%s", m->dst_ds->dir, name);
    if (lstat(dst, &st) == 0)
      ret = svm_error(EEXIST, "%s exists already in datastore %s; remove it or choose another "
                      "datastore", dst, dsname);
  }
  if (ret == 0) {
    m->ndisks = vm->ndisks;
    m->disks = calloc(vm->ndisks ? vm->ndisks : 1, sizeof *m->disks);
    if (!m->disks)
      ret = svm_error(ENOMEM, "out of memory");
  }
  if (ret < 0) {
    free_move(m);
    return ret;
  }
  for (unsigned i = 0; i < vm->ndisks; i++)
    m->size += vm->desc->disks[i].size;
  snprintf(m->vm, sizeof m->vm, "%s", name);
  m->id = a->moves->next_id++;
  m->state = MOVE_QUEUED;
  m->phase = "queued";
  m->queued_ns = now_ns();
  m->vmp = vm;
  vm->move = m;
  agent_vm_ref(vm);
  struct agent_move **tail = &a->moves->list;
  while (*tail)
    tail = &(*tail)->next;
  *tail = m;
  schedule_locked(a);
  if (m->state == MOVE_QUEUED)
    agent_log("%s: move #%u to datastore %s queued (at most %d moves per host and %d per "
              "datastore at once)", name, m->id, dsname, SVM_MOVES_PER_HOST,
              SVM_MOVES_PER_DATASTORE);
  return out_move(m, json, out);
}

int agent_move_cancel(struct svm_agent *a, const char *name, bool json, char **out)
{
  struct agent_vm *vm = agent_find_vm(a, name);
  struct agent_move *m;

  if (!vm)
    return svm_error(ENOENT, "no such VM '%s' on host %s", name, a->name);
  m = vm->move;
  if (!m)
    return svm_error(ENOENT, "VM %s is not being moved (svmctl status shows the moves)", name);
  m->cancel = true;
  if (m->state == MOVE_QUEUED) {
    m->state = MOVE_CANCELLED;
    m->phase = "cancelled";
    m->end_ns = now_ns();
    snprintf(m->error, sizeof m->error, "cancelled while queued");
    vm->move = NULL;
    agent_vm_unref(vm);
    m->vmp = NULL;
  } else if (m->copying) {
    for (unsigned i = 0; i < m->ndisks; i++)
      svm_move_disk_cancel(&m->disks[i]);
  }
  agent_log("%s: cancel of move #%u asked", name, m->id);
  return out_move(m, json, out);
}

int agent_move_status(struct svm_agent *a, const char *id, bool json, char **out)
{
  static const enum move_state order[] = { MOVE_RUNNING, MOVE_QUEUED };
  struct agent_moves *ms = a->moves;
  FILE *f;

  if (id) {
    char *end;
    unsigned long n = strtoul(id, &end, 10);
    for (struct agent_move *m = ms->list; *id && !*end && m; m = m->next)
      if (m->id == n)
        return out_move(m, json, out);
    return svm_error(ENOENT, "no move #%s on host %s (status lists the last %d moves)", id,
                     a->name, MOVES_KEPT);
  }
  f = open_memstream(out, &(size_t){ 0 });
  if (!f)
    return svm_error(ENOMEM, "out of memory");
  if (json) {
    static const char *const keys[] = { "running", "queued" };
    fputs("{\"host\": ", f);
    agent_json_str(f, a->name);
    fprintf(f, ", \"limits\": {\"per_host\": %d, \"per_datastore\": %d}", SVM_MOVES_PER_HOST,
            SVM_MOVES_PER_DATASTORE);
    for (unsigned k = 0; k < 2; k++) {
      bool first = true;
      fprintf(f, ", \"%s\": [", keys[k]);
      /* oldest first: the queue in the order it will run */
      for (struct agent_move *m = ms->list; m; m = m->next)
        if (m->state == order[k]) {
          fputs(first ? "" : ", ", f);
          move_json(f, m);
          first = false;
        }
      fputs("]", f);
    }
    bool first = true;
    fputs(", \"done\": [", f);
    for (struct agent_move *m = ms->list; m; m = m->next)
      if (finished(m)) {
        fputs(first ? "" : ", ", f);
        move_json(f, m);
        first = false;
      }
    fputs("]}", f);
  } else {
    bool any = false;
    for (unsigned k = 0; k < 2; k++)
      for (struct agent_move *m = ms->list; m; m = m->next)
        if (m->state == order[k]) {
          move_text(f, m);
          any = true;
        }
    for (struct agent_move *m = ms->list; m; m = m->next)
      if (finished(m)) {
        move_text(f, m);
        any = true;
      }
    if (!any)
      fprintf(f, "no moves on host %s\n", a->name);
  }
  return finish_out(f, out);
}
