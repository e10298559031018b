/* The agent's table of live moves between datastores: queued in the order asked for, at most
 * SVM_MOVES_PER_HOST / SVM_MOVES_PER_DATASTORE running (svm/migrate/limits.c), the last
 * MOVES_KEPT finished ones kept for status; the migrate, migrate-cancel and status requests;
 * and, at start, the resolution of moves a crash cut short (their journals). The job itself
 * is move.c. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <svmotion/cli.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "svm/agent/internal.h"
#include "svm/agent/move.h"
#include "svm/migrate/migrate.h"

static bool finished(const struct agent_move *m)
{
  return m->state >= MOVE_DONE;
}

/* ---- the table ---- */

/* Start what the limits allow, oldest first (a->mu held). The list is in the order the moves
 * were asked for. */
void agent_moves_schedule_locked(struct svm_agent *a)
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
    m->start_ns = agent_move_now_ns();
    ms->threads++;
    if (pthread_create(&t, &attr, agent_move_thread, m) != 0) {
      ms->threads--;
      m->state = MOVE_FAILED;
      m->phase = "failed";
      m->end_ns = agent_move_now_ns();
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
      agent_move_free(m);
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

static void retired_removed(void *opaque, const char *path, const char *err)
{
  (void)opaque;
  if (err)
    agent_log("the old folder of a VM moved away, %s, was not removed completely: %s", path,
              err);
  else
    agent_log("removed %s: the old folder of a VM that had moved away when svmd stopped", path);
}

int agent_moves_init(struct svm_agent *a)
{
  struct agent_moves *ms = calloc(1, sizeof *ms);
  int r;

  if (!ms || asprintf(&ms->dir, "%s/moves", a->state_dir) < 0) {
    free(ms);
    return svm_error(ENOMEM, "out of memory");
  }
  {
    pthread_condattr_t ca;          /* one_move() waits against the monotonic clock */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ms->cv, &ca);
    atomic_init(&ms->retire_stop, false);
    pthread_condattr_destroy(&ca);
  }
  ms->next_id = 1;
  a->moves = ms;
  if (mkdir(ms->dir, 0700) < 0 && errno != EEXIST)
    return svm_error(errno, "%s: %s", ms->dir, strerror(errno));
  r = svm_journal_scan(ms->dir, resolve_journal, a);
  /* source folders a move had retired but not yet removed (move.c) */
  for (size_t i = 0; i < a->nds; i++)
    svm_move_remove_retired(a->ds[i].dir, retired_removed, NULL);
  return r;
}

void agent_moves_stop(struct svm_agent *a)
{
  struct agent_moves *ms = a->moves;

  if (!ms)
    return;
  pthread_mutex_lock(&a->mu);
  ms->stopping = true;
  atomic_store(&ms->retire_stop, true);    /* an old folder's removal ends at its next step */
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
    agent_move_free(m);
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
  uint64_t end = finished(m) ? m->end_ns : agent_move_now_ns();
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
          m->prov_same ? "same" : svm_desc_prov_name(m->prov), agent_move_state_names[m->state], m->phase,
          m->ndisks, total, done, copied, mirrored, parked, m->rate, secs,
          (double)((m->start_ns ? m->start_ns : end) - m->queued_ns) / 1e9, m->downtime_ms);
  if (m->state == MOVE_FAILED || m->state == MOVE_CANCELLED)
    agent_json_str(f, m->error[0] ? m->error : agent_move_state_names[m->state]);
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
          m->dst_ds->name, agent_move_state_names[m->state], m->phase,
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
    agent_move_free(m);
    return ret;
  }
  for (unsigned i = 0; i < vm->ndisks; i++)
    m->size += vm->desc->disks[i].size;
  snprintf(m->vm, sizeof m->vm, "%s", name);
  m->id = a->moves->next_id++;
  m->state = MOVE_QUEUED;
  m->phase = "queued";
  m->queued_ns = agent_move_now_ns();
  m->vmp = vm;
  vm->move = m;
  agent_vm_ref(vm);
  struct agent_move **tail = &a->moves->list;
  while (*tail)
    tail = &(*tail)->next;
  *tail = m;
  agent_moves_schedule_locked(a);
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
    m->end_ns = agent_move_now_ns();
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

static struct agent_move *find_move(struct agent_moves *ms, const char *id)
{
  char *end;
  unsigned long n = strtoul(id, &end, 10);

  for (struct agent_move *m = ms->list; *id && !*end && m; m = m->next)
    if (m->id == n)
      return m;
  return NULL;
}

/* One move; with wait_ms, once it has finished or after wait_ms (at most STATUS_WAIT_MAX_MS),
 * whichever comes first: svmctl follows a move with these, and learns of its end at once
 * rather than at its next poll. a->mu held (released while waiting). */
static int one_move(struct svm_agent *a, const char *id, uint64_t wait_ms, bool json,
                    char **out)
{
  struct agent_moves *ms = a->moves;
  struct agent_move *m = find_move(ms, id);
  uint64_t wait = wait_ms < STATUS_WAIT_MAX_MS ? wait_ms : STATUS_WAIT_MAX_MS;
  uint64_t until = agent_move_now_ns() + wait * 1000000u;
  struct timespec ts;

  while (m && !finished(m) && !ms->stopping && agent_move_now_ns() < until) {
    ts.tv_sec = (time_t)(until / 1000000000u);
    ts.tv_nsec = (long)(until % 1000000000u);
    pthread_cond_timedwait(&ms->cv, &a->mu, &ts);
    m = find_move(ms, id);             /* it may have been forgotten meanwhile */
  }
  if (!m)
    return svm_error(ENOENT, "no move #%s on host %s (status lists the last %d moves)", id,
                     a->name, MOVES_KEPT);
  return out_move(m, json, out);
}

int agent_move_status(struct svm_agent *a, const char *id, uint64_t wait_ms, bool json,
                      char **out)
{
  static const enum move_state order[] = { MOVE_RUNNING, MOVE_QUEUED };
  struct agent_moves *ms = a->moves;
  FILE *f;

  if (id)
    return one_move(a, id, wait_ms, json, out);
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
