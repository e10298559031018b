/* The cold host move (svmctl migrate VM --host ADDR:PORT --datastore DS): a VM with no guest
 * connected goes to another host over the peer link (svm/peer) and NFC (svm/copy/nfc.h).
 *
 *   1. the VM's exports and trackers are closed (so no guest can connect and the .ctk files
 *      are complete on disk); the VM stays in the list, busy
 *   2. the peers check each other: TLS (mutual), then the destination's certificate against
 *      the host name it gives
 *   3. PREPARE: the destination checks name, datastore and free space, makes a staging folder
 *   4. every file of the VM folder over NFC - disks in the provisioning asked for, the .ctk
 *      files, config files, and the descriptor rewritten for the new provisioning; a stream
 *      cut by the network is opened again and NFC goes on from what is durable
 *   5. COMMIT: the destination makes everything durable, renames the folder, opens the VM and
 *      exports its disks; its OK means the VM is durable there and its own
 *   6. only then the source removes its copy
 * Any failure before the OK (link gone for good, destination full, destination agent killed,
 * cancel) sends ABORT where the link still works (the destination's end of the connection does
 * the same), and reopens the VM's exports here: the VM is untouched.
 *
 * Threads: a move runs on a thread of its own; its record (struct agent_hostmove) is guarded
 * by a->mu except the progress counters, which are atomic. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
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
#include "svm/copy/nfc.h"
#include "svm/peer/peer.h"

enum hm_state { HM_RUNNING, HM_DONE, HM_FAILED, HM_CANCELLED };

static const char *const state_names[] = { "running", "done", "failed", "cancelled" };

enum { RESUME_WINDOW_S = 60 };    /* give up when a file makes no progress for this long */

struct agent_hostmove {
  struct agent_hostmove *next;
  struct svm_agent *a;
  struct agent_vm *vm;            /* while running */
  unsigned id;
  char name[72], hostport[256], ds[128], prov[32], peer_host[256];
  enum hm_state state;
  const char *step;
  char error[1024];
  uint64_t total;
  _Atomic uint64_t done_before;   /* bytes of the files already sent */
  _Atomic uint64_t done_file;     /* of the file being sent */
  _Atomic uint64_t bytes_wire, bytes_resumed, resumes;
  double start, end;
  volatile int cancel;
  pthread_t thread;
  struct nfc_tls *control;        /* the control connection, while prepared */
};

struct agent_hostmoves {
  struct agent_hostmove *list;
  unsigned next_id;
  struct nfc_rate *rate;
};

static double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the move, on its thread ------------------------------------------------------------- */

static void on_progress(void *opaque, uint64_t done, uint64_t total)
{
  struct agent_hostmove *hm = opaque;
  (void)total;
  atomic_store(&hm->done_file, done);
}

static bool retryable(int err)
{
  switch (err) {
  case ECONNRESET: case EPIPE: case ETIMEDOUT: case ECONNREFUSED: case EHOSTUNREACH:
  case ENETUNREACH: case ECONNABORTED: case ENETDOWN: case EHOSTDOWN: case ENODATA:
    return true;
  default:
    return false;
  }
}

/* The destination never speaks unasked on the control connection: readable means it ended
 * (its agent stopped, was killed, or dropped the transfer), and so did the transfer there. A
 * link that is only cut is not readable: that case resumes. */
static bool control_gone(struct agent_hostmove *hm)
{
  struct pollfd p = { .fd = nfc_tls_fd(hm->control), .events = POLLIN };

  return nfc_tls_pending(hm->control) > 0 || (poll(&p, 1, 0) == 1 && p.revents);
}

/* After a stream failed: did the destination see a failure of its own (a full disk, an I/O
 * error) that no retry can fix? Then -errno with its message; 0 to retry. */
static int destination_failed(struct agent_hostmove *hm, const char *token)
{
  struct svm_peer_msg *m = malloc(sizeof *m);
  uint64_t e = 0;
  int r = 0;

  if (!m)
    return 0;
  svm_peer_msg_init(m, SVM_PEER_STATUS);
  svm_peer_msg_add(m, "token", "%s", token);
  if (svm_peer_call(hm->control, m, 5000) == 0 && svm_peer_get_u64(m, "errno", &e) == 0 &&
      e > 0 && e < 4096 && !retryable((int)e)) {
    const char *msg = svm_peer_get(m, "message");
    r = svm_error((int)e, "host %s: %s", hm->peer_host, msg ? msg : strerror((int)e));
  }
  free(m);
  return r;
}

/* Sleep up to ms, waking early on cancel. */
static void nap(struct agent_hostmove *hm, int ms)
{
  for (int i = 0; i < ms / 50 && !hm->cancel; i++)
    nanosleep(&(struct timespec){ .tv_nsec = 50 * 1000000 }, NULL);
}

/* One file over NFC; a stream the network cut is opened again and goes on from what the
 * destination has durable, until the file makes no progress for RESUME_WINDOW_S. */
static int put_file(struct agent_hostmove *hm, struct svm_nfc_put_options *o, const char *path,
                    const char *name, const char *token)
{
  double last_progress = now_s();
  uint64_t best = 0;

  for (;;) {
    struct svm_nfc_put_counters n = { 0 };
    int r;

    atomic_store(&hm->done_file, 0);
    r = svm_nfc_put_file(path, name, o, &n);
    atomic_fetch_add(&hm->bytes_wire, n.bytes_wire);
    atomic_fetch_add(&hm->bytes_resumed, n.bytes_resumed);
    if (r == 0)
      return 0;
    if (hm->cancel)
      return svm_error(ECANCELED, "cancelled");
    if (!retryable(-r))
      return r;
    if (control_gone(hm)) {
      char why[512];
      snprintf(why, sizeof why, "%s", svm_last_error());
      return svm_error(ECONNRESET, "%s: host %s ended the transfer (its agent stopped or "
                       "restarted?): %s", name, hm->peer_host, why);
    }
    if ((r = destination_failed(hm, token)) < 0)
      return r;
    if (atomic_load(&hm->done_file) > best) {
      best = atomic_load(&hm->done_file);
      last_progress = now_s();
    }
    if (now_s() - last_progress > RESUME_WINDOW_S)
      return svm_error_prefix("%s: no progress for %d s", name, RESUME_WINDOW_S);
    agent_log("host move %u of VM %s: %s: %s; resuming", hm->id, hm->name, name,
              svm_last_error());
    atomic_fetch_add(&hm->resumes, 1);
    nap(hm, 1000);
  }
}

/* The welcome's ds=NAME:FREE for our datastore: its free bytes, or -ENOENT. */
static int peer_ds_free(const struct svm_peer_msg *w, const char *ds, uint64_t *free_bytes)
{
  size_t len = strlen(ds);

  for (size_t i = 0; i < w->nfields; i++)
    if (strcmp(w->f[i].key, "ds") == 0 && strncmp(w->f[i].value, ds, len) == 0 &&
        w->f[i].value[len] == ':') {
      *free_bytes = strtoull(w->f[i].value + len + 1, NULL, 10);
      return 0;
    }
  return -ENOENT;
}

/* The provisioning disk i gets at the destination. */
static enum svm_desc_prov target_prov(const struct agent_hostmove *hm, const struct svm_desc *d,
                                      unsigned i)
{
  enum svm_desc_prov p;

  if (strcmp(hm->prov, "same") == 0 || svm_desc_prov_parse(hm->prov, &p) < 0)
    return d->disks[i].provisioning;
  return p;
}

/* Which disk a file of the folder is, or -1. */
static int disk_of(const struct svm_desc *d, const char *file)
{
  for (unsigned i = 0; i < d->ndisks; i++)
    if (strcmp(d->disks[i].file, file) == 0)
      return (int)i;
  return -1;
}

struct plan {
  struct svm_desc *desc;          /* the destination's descriptor */
  char desc_tmp[PATH_MAX];        /* ... saved here */
  char desc_name[PATH_MAX];       /* VM.svm */
  struct dirent **ents;
  int nents;
  uint64_t need;                  /* bytes the destination must have free */
};

static void plan_free(struct plan *p)
{
  svm_desc_free(p->desc);
  if (p->desc_tmp[0])
    unlink(p->desc_tmp);
  for (int i = 0; i < p->nents; i++)
    free(p->ents[i]);
  free(p->ents);
}

static int regular_only(const struct dirent *e)
{
  return e->d_type == DT_REG || e->d_type == DT_UNKNOWN;
}

static int by_name(const struct dirent **x, const struct dirent **y)
{
  return strcmp((*x)->d_name, (*y)->d_name);
}

/* What goes: the folder's files, the descriptor as the destination will have it, the bytes
 * that takes there. */
static int make_plan(struct agent_hostmove *hm, const char *dir, const char *desc_path,
                     struct plan *p)
{
  struct svm_agent *a = hm->a;
  char path[PATH_MAX];
  int r;

  if ((r = svm_desc_load(desc_path, &p->desc)) < 0)
    return r;
  for (unsigned i = 0; i < p->desc->ndisks; i++) {
    char key[48];
    snprintf(key, sizeof key, "disk%u.provisioning", i);
    if ((r = svm_desc_set(p->desc, key, svm_desc_prov_name(target_prov(hm, p->desc, i)))) < 0)
      return r;
  }
  if ((r = svm_desc_validate(p->desc)) < 0)
    return r;
  snprintf(p->desc_tmp, sizeof p->desc_tmp, "%s/hostmove-%u.svm", a->state_dir, hm->id);
  if ((r = svm_desc_save(p->desc, p->desc_tmp)) < 0) {
    p->desc_tmp[0] = '\0';
    return r;
  }
  snprintf(p->desc_name, sizeof p->desc_name, "%s.svm", hm->name);
  p->nents = scandir(dir, &p->ents, regular_only, by_name);
  if (p->nents < 0) {
    p->nents = 0;
    return svm_error(errno, "%s: %s", dir, strerror(errno));
  }
  for (int i = 0; i < p->nents; i++) {
    const char *f = p->ents[i]->d_name;
    int disk = disk_of(p->desc, f);
    struct stat st;

    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, f) >= sizeof path ||
        lstat(path, &st) < 0 || !S_ISREG(st.st_mode))
      continue;
    hm->total += (uint64_t)st.st_size;
    if (disk >= 0 && target_prov(hm, p->desc, (unsigned)disk) != SVM_DESC_THIN)
      p->need += (uint64_t)st.st_size;
    else
      p->need += (uint64_t)st.st_blocks * 512;
  }
  return 0;
}

static int send_files(struct agent_hostmove *hm, struct svm_peer_nfc_dest *dest, const char *dir,
                      struct plan *p)
{
  struct svm_agent *a = hm->a;
  struct svm_nfc_put_options o = {
    .connect = svm_peer_nfc_connect, .connect_opaque = dest,
    .streams = a->nfc_streams, .rate = a->hostmoves->rate,
    .progress = on_progress, .progress_opaque = hm, .cancel = &hm->cancel,
  };
  char path[PATH_MAX];

  for (int i = 0; i < p->nents; i++) {
    const char *f = p->ents[i]->d_name;
    int disk = disk_of(p->desc, f), r;
    struct stat st;

    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, f) >= sizeof path ||
        lstat(path, &st) < 0 || !S_ISREG(st.st_mode))
      continue;
    o.provisioning = disk >= 0 ? (enum svm_provisioning)target_prov(hm, p->desc, (unsigned)disk)
                               : SVM_PROVISIONING_THIN;
    r = put_file(hm, &o, strcmp(f, p->desc_name) == 0 ? p->desc_tmp : path, f, dest->token);
    if (r < 0)
      return svm_error_prefix("sending %s", f);
    atomic_fetch_add(&hm->done_before, (uint64_t)st.st_size);
    atomic_store(&hm->done_file, 0);
  }
  return 0;
}

static void set_step(struct agent_hostmove *hm, const char *step)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&hm->a->mu);
  hm->step = step;
}

/* Steps 2 to 5. *committed: the destination said OK to COMMIT. */
static int run(struct agent_hostmove *hm, const char *dir, const char *desc_path,
               bool *committed)
{
  struct svm_agent *a = hm->a;
  struct svm_peer_nfc_dest dest = { .creds = &a->creds, .hostport = hm->hostport,
                                    .self = a->name };
  struct svm_peer_msg *m = malloc(sizeof *m);
  struct plan plan = { 0 };
  struct nfc_tls *t = NULL;
  bool prepared = false;
  uint64_t free_bytes = 0;
  const char *token;
  int r;

  *committed = false;
  if (!m)
    return svm_error(ENOMEM, "out of memory");
  set_step(hm, "connecting");
  r = svm_peer_dial(&a->creds, hm->hostport, "control", a->name, NULL, m, &t);
  if (r < 0)
    goto out;
  snprintf(hm->peer_host, sizeof hm->peer_host, "%s",
           svm_peer_get(m, "host") ? svm_peer_get(m, "host") : "");
  if ((r = svm_peer_check_identity(t, hm->peer_host)) < 0)
    goto out;
  if (strcmp(hm->peer_host, a->name) == 0) {
    r = svm_error(EINVAL, "%s is this host (%s): a move to another datastore here needs no "
                  "--host", hm->hostport, a->name);
    goto out;
  }
  agent_log("host move %u of VM %s: peer %s is host %s (%s%s%s)", hm->id, hm->name, hm->hostport,
            hm->peer_host, nfc_tls_kind(t), nfc_tls_peer_identity(t)[0] ? ", certificate " : "",
            nfc_tls_peer_identity(t));
  if (peer_ds_free(m, hm->ds, &free_bytes) < 0) {
    r = svm_error(ENOENT, "host %s has no datastore '%s'", hm->peer_host, hm->ds);
    goto out;
  }
  if ((r = make_plan(hm, dir, desc_path, &plan)) < 0)
    goto out;

  set_step(hm, "preparing");
  svm_peer_msg_init(m, SVM_PEER_PREPARE);
  svm_peer_msg_add(m, "vm", "%s", hm->name);
  svm_peer_msg_add(m, "datastore", "%s", hm->ds);
  svm_peer_msg_add(m, "bytes", "%" PRIu64, plan.need);
  if ((r = svm_peer_call(t, m, SVM_PEER_CALL_MS)) < 0)
    goto out;
  token = svm_peer_get(m, "token");
  if (!token || strlen(token) != SVM_PEER_TOKEN_LEN) {
    r = svm_error(EPROTO, "peer %s: PREPARE answered without a transfer token", hm->hostport);
    goto out;
  }
  prepared = true;
  hm->control = t;
  snprintf(dest.token, sizeof dest.token, "%s", token);

  set_step(hm, "copying");
  if ((r = send_files(hm, &dest, dir, &plan)) < 0)
    goto out;
  if (hm->cancel) {
    r = svm_error(ECANCELED, "cancelled");
    goto out;
  }

  set_step(hm, "committing");
  svm_peer_msg_init(m, SVM_PEER_COMMIT);
  svm_peer_msg_add(m, "token", "%s", dest.token);
  r = svm_peer_call(t, m, SVM_PEER_CALL_MS);
  if (r == 0) {
    *committed = true;
  } else if (retryable(-r)) {
    /* No answer: the destination may or may not own the VM now. Keep ours (never lose it). */
    svm_error_prefix("COMMIT unanswered: check whether host %s has VM %s before deleting "
                     "either copy", hm->peer_host, hm->name);
  }
  prepared = false;             /* a failed COMMIT has aborted on the destination */

out:
  if (prepared && t) {
    char msg[1024];
    int e = svm_last_errno();
    snprintf(msg, sizeof msg, "%s", svm_last_error());
    svm_peer_msg_init(m, SVM_PEER_ABORT);
    svm_peer_msg_add(m, "token", "%s", dest.token);
    if (svm_peer_call(t, m, 30000) < 0)
      agent_log("host move %u of VM %s: ABORT: %s (the destination cleans up when the "
                "connection ends or when its agent restarts)", hm->id, hm->name,
                svm_last_error());
    svm_error(e, "%s", msg);
  }
  svm_peer_hangup(t);
  plan_free(&plan);
  free(m);
  return r;
}

/* ---- start, finish, status ---------------------------------------------------------------- */

static void *hostmove_thread(void *arg)
{
  struct agent_hostmove *hm = arg;
  struct svm_agent *a = hm->a;
  char dir[PATH_MAX], desc_path[PATH_MAX];
  bool committed = false;

  pthread_mutex_lock(&a->mu);
  snprintf(dir, sizeof dir, "%s", hm->vm->dir);
  snprintf(desc_path, sizeof desc_path, "%s", hm->vm->desc_path);
  pthread_mutex_unlock(&a->mu);

  run(hm, dir, desc_path, &committed);

  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&a->mu);
  agent_vm_unref(hm->vm);
  hm->end = now_s();
  if (committed) {
    /* The destination owns the VM, durably: now ours can go. */
    hm->step = "removing the source";
    if (agent_vm_delete(a, hm->name) < 0 || agent_remove_folder(dir) < 0)
      agent_log("host move %u of VM %s: the source copy in %s: %s (remove it by hand)", hm->id,
                hm->name, dir, svm_last_error());
    hm->state = HM_DONE;
    hm->step = "done";
    agent_log("host move %u of VM %s to host %s done: %" PRIu64 " bytes in %.1f s", hm->id,
              hm->name, hm->peer_host, hm->total, hm->end - hm->start);
  } else {
    snprintf(hm->error, sizeof hm->error, "%s", svm_last_error());
    hm->state = hm->cancel ? HM_CANCELLED : HM_FAILED;
    hm->step = "aborted";
    for (unsigned i = 0; i < hm->vm->ndisks; i++)
      if (agent_disk_start(a, &hm->vm->disks[i]) < 0)
        agent_log("VM %s disk%u: could not be exported again: %s", hm->name, i,
                  svm_last_error());
    agent_log("host move %u of VM %s to %s %s: %s; the VM stays here, exported", hm->id,
              hm->name, hm->hostport, state_names[hm->state], hm->error);
  }
  hm->vm = NULL;
  return NULL;
}

static struct agent_hostmove *find_running(struct svm_agent *a, const char *vm)
{
  for (struct agent_hostmove *hm = a->hostmoves ? a->hostmoves->list : NULL; hm; hm = hm->next)
    if (hm->state == HM_RUNNING && strcmp(hm->name, vm) == 0)
      return hm;
  return NULL;
}

bool agent_hostmove_running(struct svm_agent *a, const char *vm)
{
  return find_running(a, vm) != NULL;
}

static void out_move(FILE *f, struct agent_hostmove *hm)
{
  double secs = (hm->state == HM_RUNNING ? now_s() : hm->end) - hm->start;

  fprintf(f, "{\"id\": %u, \"kind\": \"host\", \"vm\": ", hm->id);
  agent_json_str(f, hm->name);
  fputs(", \"host\": ", f);
  agent_json_str(f, hm->hostport);
  fputs(", \"peer\": ", f);
  agent_json_str(f, hm->peer_host);
  fputs(", \"datastore\": ", f);
  agent_json_str(f, hm->ds);
  fputs(", \"provisioning\": ", f);
  agent_json_str(f, hm->prov);
  fputs(", \"to\": ", f);
  agent_json_str(f, hm->ds);
  fprintf(f, ", \"state\": \"%s\", \"step\": \"%s\", \"phase\": \"%s\", \"bytes_total\": %" PRIu64
          ", \"bytes_copied\": %" PRIu64 ", \"bytes_done\": %" PRIu64 ", \"bytes_wire\": %" PRIu64
          ", \"bytes_resumed\": %" PRIu64 ", \"resumes\": %" PRIu64
          ", \"seconds\": %.3f, \"downtime_ms\": 0, \"error\": ",
          state_names[hm->state], hm->step, hm->step,
          hm->total, atomic_load(&hm->done_before) + atomic_load(&hm->done_file),
          atomic_load(&hm->done_before) + atomic_load(&hm->done_file),
          atomic_load(&hm->bytes_wire), atomic_load(&hm->bytes_resumed),
          atomic_load(&hm->resumes), secs);
  if (hm->error[0])
    agent_json_str(f, hm->error);
  else
    fputs("null", f);
  fputs("}", f);
}

static void out_text(FILE *f, struct agent_hostmove *hm)
{
  char c[32], t[32];

  fprintf(f, "move %u: VM %s -> host %s (%s) datastore %s: %s (%s), %s of %s", hm->id,
          hm->name, hm->peer_host[0] ? hm->peer_host : "?", hm->hostport, hm->ds,
          state_names[hm->state], hm->step,
          svm_size_format(atomic_load(&hm->done_before) + atomic_load(&hm->done_file), c,
                          sizeof c),
          svm_size_format(hm->total, t, sizeof t));
  if (hm->error[0])
    fprintf(f, ": %s", hm->error);
  fputc('\n', f);
}

int agent_hostmove_start(struct svm_agent *a, const struct svm_ctl_request *r, bool json,
                         char **out)
{
  const char *vmname = svm_ctl_arg(r, "vm"), *host = svm_ctl_arg(r, "host");
  const char *ds = svm_ctl_arg(r, "datastore"), *prov = svm_ctl_arg(r, "provisioning");
  struct agent_hostmove *hm;
  struct agent_vm *vm;
  enum svm_desc_prov p;
  FILE *f;

  if (!vmname || !host || !ds)
    return svm_error(EINVAL, "migrate: a host move needs vm, host and datastore");
  if (prov && strcmp(prov, "same") != 0 && svm_desc_prov_parse(prov, &p) < 0)
    return svm_error(EINVAL, "--provisioning %s: same, thin, thick or eager-zeroed-thick", prov);
  if (!a->have_creds)
    return svm_error(EINVAL, "host %s has no credentials for the peer link: start svmd with "
                     "--tls-dir DIR or --tls-psk FILE (or --insecure for tests)", a->name);
  vm = agent_find_vm(a, vmname);
  if (!vm)
    return svm_error(ENOENT, "no such VM '%s' on host %s (svmctl vm list shows the VMs)",
                     vmname, a->name);
  if (find_running(a, vmname) || vm->refs || vm->move)
    return svm_error(EBUSY, "VM %s is busy (being moved: svmctl status)", vmname);
  for (unsigned i = 0; i < vm->ndisks; i++) {
    uint64_t clients = agent_disk_clients(&vm->disks[i]);
    if (clients > 0)
      return svm_error(EBUSY, "VM %s has a guest connected to disk%u (%" PRIu64 " NBD "
                       "client%s): only a VM without a guest can move to another host (a live "
                       "host move does not exist yet); stop the guest first", vmname, i,
                       clients, clients > 1 ? "s" : "");
  }
  if (!a->hostmoves && !(a->hostmoves = calloc(1, sizeof *a->hostmoves)))
    return svm_error(ENOMEM, "out of memory");
  if (a->nfc_rate && !a->hostmoves->rate && nfc_rate_new(a->nfc_rate, &a->hostmoves->rate) < 0)
    return -svm_last_errno();
  hm = calloc(1, sizeof *hm);
  if (!hm)
    return svm_error(ENOMEM, "out of memory");
  hm->a = a;
  hm->vm = vm;
  hm->id = AGENT_HOSTMOVE_ID_BASE + ++a->hostmoves->next_id;
  snprintf(hm->name, sizeof hm->name, "%s", vmname);
  snprintf(hm->hostport, sizeof hm->hostport, "%s", host);
  snprintf(hm->ds, sizeof hm->ds, "%s", ds);
  snprintf(hm->prov, sizeof hm->prov, "%s", prov ? prov : "same");
  hm->step = "starting";
  hm->start = now_s();
  /* Cold: no guest may connect while the files travel, and the trackers write their last
   * state to the .ctk files now. */
  for (unsigned i = 0; i < vm->ndisks; i++)
    agent_disk_stop(&vm->disks[i]);
  agent_vm_ref(vm);
  if (pthread_create(&hm->thread, NULL, hostmove_thread, hm) != 0) {
    agent_vm_unref(vm);
    for (unsigned i = 0; i < vm->ndisks; i++)
      agent_disk_start(a, &vm->disks[i]);
    free(hm);
    return svm_error(EAGAIN, "cannot start a thread for the move");
  }
  hm->next = a->hostmoves->list;
  a->hostmoves->list = hm;
  agent_log("host move %u of VM %s to %s (datastore %s, provisioning %s) started", hm->id,
            vmname, host, ds, hm->prov);
  f = open_memstream(out, &(size_t){ 0 });
  if (!f)
    return svm_error(ENOMEM, "out of memory");
  if (json)
    out_move(f, hm);
  else
    out_text(f, hm);
  fclose(f);
  return 0;
}

int agent_hostmove_cancel(struct svm_agent *a, const char *vm, bool json, char **out)
{
  struct agent_hostmove *hm = find_running(a, vm);
  FILE *f;

  if (!hm)
    return -ENOENT;
  hm->cancel = 1;
  agent_log("host move %u of VM %s: cancel requested", hm->id, vm);
  f = open_memstream(out, &(size_t){ 0 });
  if (!f)
    return svm_error(ENOMEM, "out of memory");
  if (json)
    out_move(f, hm);
  else
    out_text(f, hm);
  fclose(f);
  return 0;
}

void agent_hostmove_status(struct svm_agent *a, bool json, FILE *f, bool *first)
{
  for (struct agent_hostmove *hm = a->hostmoves ? a->hostmoves->list : NULL; hm; hm = hm->next) {
    if (json) {
      if (!*first)
        fputs(", ", f);
      out_move(f, hm);
    } else {
      out_text(f, hm);
    }
    *first = false;
  }
}

int agent_hostmove_show(struct svm_agent *a, unsigned id, bool json, char **out)
{
  for (struct agent_hostmove *hm = a->hostmoves ? a->hostmoves->list : NULL; hm; hm = hm->next)
    if (hm->id == id) {
      FILE *f = open_memstream(out, &(size_t){ 0 });
      if (!f)
        return svm_error(ENOMEM, "out of memory");
      if (json)
        out_move(f, hm);
      else
        out_text(f, hm);
      fclose(f);
      return 0;
    }
  return svm_error(ENOENT, "no move %u on host %s", id, a->name);
}

/* Called with a->mu NOT held: cancels the running moves and joins every thread. */
void agent_hostmoves_stop(struct svm_agent *a)
{
  struct agent_hostmoves *hs = a->hostmoves;

  if (!hs)
    return;
  pthread_mutex_lock(&a->mu);
  for (struct agent_hostmove *hm = hs->list; hm; hm = hm->next)
    hm->cancel = 1;
  pthread_mutex_unlock(&a->mu);
  while (hs->list) {
    struct agent_hostmove *hm = hs->list;
    hs->list = hm->next;
    pthread_join(hm->thread, NULL);
    free(hm);
  }
  nfc_rate_free(hs->rate);
  free(hs);
  a->hostmoves = NULL;
}
