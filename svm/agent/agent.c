/* The agent core: state directory and its lock, datastores, the startup scan, the control
 * request dispatch, and shutdown. VMs and their disks are in vm.c and disk.c, the answers in
 * json.c. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "nfc/tls.h"
#include "svm/agent/internal.h"
#include "svm/control/peercred.h"
#include "svm/control/server.h"
#include "svm/precheck/precheck.h"

void agent_log(const char *fmt, ...)
{
  char ts[32], msg[2048];
  struct timespec now;
  struct tm tm;
  va_list ap;

  clock_gettime(CLOCK_REALTIME, &now);
  gmtime_r(&now.tv_sec, &tm);
  strftime(ts, sizeof ts, "%H:%M:%S", &tm);
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "svmd %s.%03ld: %s\n", ts, now.tv_nsec / 1000000, msg);
}

int agent_set_access(struct svm_agent *a, const char *path, bool dir)
{
  bool g = a->group != SVM_NO_GROUP;
  mode_t mode = dir ? (g ? 0710 : 0700) : (g ? 0660 : 0600);

  if (g && chown(path, (uid_t)-1, a->group) < 0)
    return svm_error(errno, "%s: cannot give it to --group %u: %s", path, (unsigned)a->group,
                     strerror(errno));
  if (chmod(path, mode) < 0)
    return svm_error(errno, "%s: chmod %o: %s", path, (unsigned)mode, strerror(errno));
  return 0;
}

static int mkdir_p(const char *path)
{
  CLEANUP_FREE char *p = strdup(path);

  if (!p)
    return svm_error(ENOMEM, "out of memory");
  for (char *s = p + 1;; s++) {
    if (*s == '/' || *s == '\0') {
      char c = *s;
      *s = '\0';
      if (mkdir(p, 0755) < 0 && errno != EEXIST)
        return svm_error(errno, "%s: %s", p, strerror(errno));
      *s = c;
      if (!c)
        break;
    }
  }
  return 0;
}

/* One svmd per state directory: an flock held for the agent's lifetime (released by the
 * kernel even after kill -9, so a crash never leaves a stale lock). */
static int lock_state(struct svm_agent *a)
{
  CLEANUP_FREE char *path = NULL;
  CLEANUP_CLOSE int fd = -1;
  char pid[32];

  if (asprintf(&path, "%s/svmd.lock", a->state_dir) < 0) {
    path = NULL;
    return svm_error(ENOMEM, "out of memory");
  }
  fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0)
    return svm_error(errno, "%s: %s", path, strerror(errno));
  if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
    int e = errno;
    if (e != EWOULDBLOCK)
      return svm_error(e, "%s: lock: %s", path, strerror(e));
    ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
    pid[n > 0 ? n : 0] = '\0';
    pid[strcspn(pid, "\n")] = '\0';
    return svm_error(EBUSY, "another svmd (pid %s) is already running with state directory %s; "
                     "stop it first or give another --state", pid[0] ? pid : "?", a->state_dir);
  }
  snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
  if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, strlen(pid), 0) < 0)
    agent_log("%s: could not record the pid: %s", path, strerror(errno));
  a->lock_fd = TAKE_FD(fd);
  return 0;
}

static void scan_one(void *opaque, const struct svm_datastore *ds, const char *dir,
                     const char *path, struct svm_desc *desc, const char *err)
{
  struct svm_agent *a = opaque;
  struct agent_vm *vm, *other;

  if (!desc) {
    agent_log("skipping VM folder %s: %s (the file is left as it is; fix it and restart svmd)",
              dir, err);
    return;
  }
  other = agent_find_vm(a, desc->name);
  if (other) {
    agent_log("skipping %s: VM '%s' is already in datastore %s (%s)", path, desc->name,
              other->ds->name, other->dir);
    svm_desc_free(desc);
    return;
  }
  CLEANUP_FREE char *name = strdup(desc->name);   /* agent_vm_open frees desc on failure */
  if (agent_vm_open(a, ds, dir, path, desc, &vm) < 0) {
    agent_log("VM %s in %s is degraded, not served: %s", name ? name : "?", dir,
              svm_last_error());
    if (name)
      agent_degraded_add(a, ds, dir, name, svm_last_error());
    return;
  }
  vm->next = a->vms;
  a->vms = vm;
  agent_log("VM %s (datastore %s): %u disk(s) exported", vm->desc->name, ds->name, vm->ndisks);
}

void agent_vm_ref(struct agent_vm *vm)
{
  vm->refs++;
}

void agent_vm_unref(struct agent_vm *vm)
{
  vm->refs--;
}

static void free_agent(struct svm_agent *a)
{
  agent_hostmoves_stop(a);         /* cancels and joins host moves before their VMs go */
  agent_moves_stop(a);             /* cancels and joins moves before their VMs go */
  agent_net_stop(a);
  agent_peer_stop(a);              /* no peer thread touches a VM after this */
  while (a->vms) {
    struct agent_vm *vm = a->vms;
    a->vms = vm->next;
    agent_vm_close(vm);
  }
  agent_degraded_free_all(a);
  svm_control_close(a->control);
  for (size_t i = 0; i < a->nds; i++)
    svm_datastore_clear(&a->ds[i]);
  free(a->ds);
  if (a->nbds_dir && a->lock_fd >= 0)
    rmdir(a->nbds_dir);            /* ours only with the lock; only when empty */
  if (a->lock_fd >= 0)
    close(a->lock_fd);
  free(a->name);
  free(a->state_dir);
  free(a->nbds_dir);
  free(a->mgmt);
  free(a->migration);
  free(a->migration_gw);
  free(a->tls_dir);
  free(a->tls_psk);
  while (a->creating) {
    struct agent_name *n = a->creating;
    a->creating = n->next;
    free(n);
  }
  nfc_tls_config_free(a->nbd_tls);   /* after the VMs: their exports used it */
  pthread_mutex_destroy(&a->mu);
  free(a);
}

static char *dup_opt(const char *s)
{
  return s ? strdup(s) : NULL;
}

/* The --datastore NAME=DIR arguments, each name once. */
static int open_datastores(struct svm_agent *a, const struct svm_agent_config *cfg)
{
  for (size_t i = 0; i < cfg->ndatastores; i++) {
    int r = svm_datastore_parse(cfg->datastores[i], &a->ds[a->nds]);
    if (r < 0)
      return r;
    a->nds++;
    for (size_t j = 0; j + 1 < a->nds; j++)
      if (strcmp(a->ds[j].name, a->ds[i].name) == 0)
        return svm_error(EINVAL, "--datastore %s: the name '%s' is given twice",
                         cfg->datastores[i], a->ds[i].name);
  }
  return 0;
}

static int scan_datastores(struct svm_agent *a)
{
  agent_log("host %s, state %s, %zu datastore(s)", a->name, a->state_dir, a->nds);
  for (size_t i = 0; i < a->nds; i++) {
    agent_log("datastore %s = %s", a->ds[i].name, a->ds[i].dir);
    int r = svm_datastore_scan(&a->ds[i], scan_one, a);
    if (r < 0)
      return r;
  }
  return 0;
}

static int open_control(struct svm_agent *a)
{
  CLEANUP_FREE char *sock = NULL;
  int r;

  if (asprintf(&sock, "%s/control.sock", a->state_dir) < 0) {
    sock = NULL;
    return svm_error(ENOMEM, "out of memory");
  }
  r = svm_control_open(sock, &a->control);
  if (r < 0)
    return r;
  svm_control_set_group(a->control, a->group);
  r = agent_set_access(a, sock, false);
  if (r == 0)
    agent_log("control socket %s", sock);
  return r;
}

/* --group NAME (or a numeric gid) */
static int resolve_group(struct svm_agent *a, const char *name)
{
  struct group *gr;
  char *end;

  a->group = SVM_NO_GROUP;
  if (!name)
    return 0;
  gr = getgrnam(name);
  if (gr) {
    a->group = gr->gr_gid;
    return 0;
  }
  errno = 0;
  unsigned long v = strtoul(name, &end, 10);
  if (*name && !*end && !errno && v < (unsigned long)SVM_NO_GROUP) {
    a->group = (gid_t)v;
    return 0;
  }
  return svm_error(ENOENT, "--group %s: no such group (give a group name from /etc/group or "
                   "a gid)", name);
}

/* The state directory (made if missing, then locked) and the agent's own copies of cfg. */
static int setup_state(struct svm_agent *a, const struct svm_agent_config *cfg)
{
  int r;

  a->name = strdup(cfg->name);
  a->mgmt = dup_opt(cfg->mgmt);
  a->migration = dup_opt(cfg->migration);
  a->migration_gw = dup_opt(cfg->migration_gw);
  a->tls_dir = dup_opt(cfg->tls_dir);
  a->tls_psk = dup_opt(cfg->tls_psk);
  a->insecure = cfg->insecure;
  a->nfc_streams = cfg->nfc_streams ? cfg->nfc_streams : 1;
  a->nfc_rate = cfg->nfc_rate;
  a->ds = calloc(cfg->ndatastores, sizeof *a->ds);
  r = resolve_group(a, cfg->group);
  if (r < 0)
    return r;
  if (cfg->tls_dir || cfg->tls_psk) {
    /* TCP exports speak TLS (NBD_OPT_STARTTLS): the host's server certificate, or a PSK */
    r = cfg->tls_dir ? nfc_tls_config_x509(NFC_TLS_SERVER, cfg->tls_dir, &a->nbd_tls)
                     : nfc_tls_config_psk(NFC_TLS_SERVER, cfg->tls_psk, &a->nbd_tls);
    if (r < 0)
      return svm_error_prefix(cfg->tls_dir ? "--tls-dir" : "--tls-psk");
  }
  r = mkdir_p(cfg->state_dir);
  if (r < 0)
    return r;
  a->state_dir = realpath(cfg->state_dir, NULL);
  if (!a->state_dir)
    return svm_error(errno, "%s: %s", cfg->state_dir, strerror(errno));
  if (!a->name || !a->ds || asprintf(&a->nbds_dir, "%s/nbd", a->state_dir) < 0) {
    a->nbds_dir = NULL;
    return svm_error(ENOMEM, "out of memory");
  }
  r = lock_state(a);
  if (r < 0)
    return r;
  /* svmd's own directory: only its user (and --group, to reach the sockets) get in */
  return agent_set_access(a, a->state_dir, true);
}

int svm_agent_start(const struct svm_agent_config *cfg, struct svm_agent **out)
{
  struct svm_agent *a;
  int r;

  *out = NULL;
  if (!cfg->name || !*cfg->name || !cfg->state_dir || !*cfg->state_dir)
    return svm_error(EINVAL, "the agent needs a --name and a --state directory");
  if (cfg->ndatastores == 0)
    return svm_error(EINVAL, "the agent needs at least one --datastore NAME=DIR");
  a = calloc(1, sizeof *a);
  if (!a)
    return svm_error(ENOMEM, "out of memory");
  a->lock_fd = -1;
  pthread_mutex_init(&a->mu, NULL);
  r = setup_state(a, cfg);
  if (!r)
    r = open_datastores(a, cfg);
  if (!r)
    r = mkdir_p(a->nbds_dir);
  if (!r)
    r = agent_moves_init(a);     /* a move cut by a crash is resolved before the scan */
  if (!r)
    r = agent_set_access(a, a->nbds_dir, true);
  if (!r)
    r = scan_datastores(a);
  if (!r)
    r = open_control(a);
  if (!r)
    r = agent_peer_start(a);     /* after the scan: a peer may ask about VMs at once */
  if (!r)
    r = agent_net_start(a);      /* after the peer link: its credentials */
  if (r < 0) {
    free_agent(a);   /* one teardown for whatever was set up */
    return r;
  }
  *out = a;
  return 0;
}

void svm_agent_stop(struct svm_agent *a)
{
  if (!a)
    return;
  agent_log("shutting down: closing exports and change trackers");
  free_agent(a);
}

/* ---- control requests ---- */

static bool want_json(const struct svm_ctl_request *r)
{
  const char *f = svm_ctl_arg(r, "format");
  return !f || strcmp(f, "json") == 0;
}

/* Every argument of the request must be one of `allowed` (NULL-terminated). */
static int check_args(const struct svm_ctl_request *r, const char *const *allowed)
{
  for (size_t i = 0; i < r->nargs; i++) {
    bool ok = strcmp(r->args[i].key, "format") == 0;
    for (size_t j = 0; !ok && allowed[j]; j++)
      ok = strcmp(r->args[i].key, allowed[j]) == 0;
    if (!ok)
      return svm_error(EINVAL, "%s: unknown argument '%s'", r->verb, r->args[i].key);
  }
  const char *f = svm_ctl_arg(r, "format");
  if (f && strcmp(f, "json") != 0 && strcmp(f, "text") != 0)
    return svm_error(EINVAL, "%s: format must be json or text", r->verb);
  return 0;
}

static int need_vm(struct svm_agent *a, const struct svm_ctl_request *r, struct agent_vm **vm)
{
  const char *name = svm_ctl_arg(r, "vm");

  if (!name)
    return svm_error(EINVAL, "%s: missing argument 'vm'", r->verb);
  *vm = agent_find_vm(a, name);
  struct agent_degraded *g = *vm ? NULL : agent_degraded_find(a, name);
  if (g)
    return svm_error(EIO, "VM %s is degraded and not served: %s (fix that and restart svmd; "
                     "svmd never changes a degraded VM's files)", name, g->reason);
  if (!*vm)
    return svm_error(ENOENT, "no such VM '%s' on host %s (svmctl vm list shows the VMs)", name,
                     a->name);
  return 0;
}

static int need_disk(struct svm_agent *a, const struct svm_ctl_request *r,
                     struct agent_disk **d)
{
  struct agent_vm *vm;
  const char *s = svm_ctl_arg(r, "disk");
  char *end;
  int ret = need_vm(a, r, &vm);

  if (ret < 0)
    return ret;
  if (!s)
    return svm_error(EINVAL, "%s: missing argument 'disk'", r->verb);
  errno = 0;
  unsigned long i = strtoul(s, &end, 10);
  if (!*s || *end || errno || s[0] == '-' || s[0] == '+')
    return svm_error(EINVAL, "disk '%s' is not a disk index (0, 1, ...)", s);
  if (i >= vm->ndisks)
    return svm_error(ENOENT, "VM %s has no disk %s (it has %u: 0%s)", vm->desc->name, s,
                     vm->ndisks, vm->ndisks > 1 ? " ..." : "");
  *d = &vm->disks[i];
  if (!(*d)->cbt)
    return agent_hostmove_running(a, vm->desc->name)
               ? svm_error(EBUSY, "VM %s is being moved to another host (svmctl status): its "
                           "disks are closed until the move ends", vm->desc->name)
               : svm_error(EIO, "VM %s disk %s has no change tracking now (a move could not "
                           "reopen it; see the log); restart svmd to reopen it", vm->desc->name, s);
  return 0;
}

/* One control command each: the request's arguments are checked already (struct command). */

static int do_ping(struct svm_agent *a, const struct svm_ctl_request *r, bool json,
                   char **payload)
{
  FILE *f = open_memstream(payload, &(size_t){ 0 });

  if (!f)
    return svm_error(ENOMEM, "out of memory");
  if (json) {
    fputs("{\"host\": ", f);
    agent_json_str(f, a->name);
    fputs(", \"version\": ", f);
    agent_json_str(f, SVM_VERSION);
    fprintf(f, ", \"protocol\": %d}", SVM_CTL_VERSION);
  } else {
    fprintf(f, "svmd %s on host %s\n", SVM_VERSION, a->name);
  }
  fclose(f);
  return 0;
}

static int do_vm_list(struct svm_agent *a, const struct svm_ctl_request *r, bool json,
                      char **payload)
{
  return agent_out_vm_list(a, json, payload);
}

static int do_vm_show(struct svm_agent *a, const struct svm_ctl_request *r, bool json,
                      char **payload)
{
  struct agent_vm *vm;
  const char *name = svm_ctl_arg(r, "vm");
  struct agent_degraded *g = name ? agent_degraded_find(a, name) : NULL;

  if (g)
    return agent_out_degraded(g, json, payload);
  int ret = need_vm(a, r, &vm);
  return ret < 0 ? ret : agent_out_vm(a, vm, json, payload);
}

/* Runs outside a->mu: an eager-zeroed create writes every byte of its disks. */
static int do_vm_create(struct svm_agent *a, const struct svm_ctl_request *r, bool json,
                        char **payload)
{
  struct agent_vm *vm;
  int ret = agent_vm_create(a, r, &vm);

  if (ret < 0)
    return ret;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&a->mu);
  ret = agent_out_vm(a, vm, json, payload);
  agent_vm_unref(vm);
  return ret;
}

static int do_vm_delete(struct svm_agent *a, const struct svm_ctl_request *r, bool json,
                        char **payload)
{
  struct agent_vm *vm;
  CLEANUP_FREE char *name = NULL;   /* the VM (and its descriptor) is gone after the delete */
  FILE *f;
  int ret = need_vm(a, r, &vm);

  if (ret < 0)
    return ret;
  if (vm->move)
    return svm_error(EBUSY, "VM %s is being moved (svmctl status); wait for the move or cancel "
                     "it with svmctl migrate --cancel %s", vm->desc->name, vm->desc->name);
  if (vm->refs)
    return svm_error(EBUSY, "VM %s is busy with another request; try again", vm->desc->name);
  name = strdup(vm->desc->name);
  if (!name)
    return svm_error(ENOMEM, "out of memory");
  ret = agent_vm_delete(a, name);
  if (ret < 0)
    return ret;
  if (!json) {
    if (asprintf(payload, "VM %s deleted\n", name) >= 0)
      return 0;
    *payload = NULL;
    return svm_error(ENOMEM, "out of memory");
  }
  f = open_memstream(payload, &(size_t){ 0 });
  if (!f)
    return svm_error(ENOMEM, "out of memory");
  fputs("{\"deleted\": ", f);
  agent_json_str(f, name);
  fputs("}", f);
  fclose(f);
  return 0;
}

/* Runs outside a->mu: it drains the disk's export (up to 30 s when a request hangs). */
static int do_cbt_changeid(struct svm_agent *a, const struct svm_ctl_request *r, bool json,
                           char **payload)
{
  struct agent_disk *d;
  struct agent_vm *vm;
  int ret;

  pthread_mutex_lock(&a->mu);
  ret = need_disk(a, r, &d);
  vm = ret < 0 ? NULL : d->vm;
  if (vm)
    agent_vm_ref(vm);
  pthread_mutex_unlock(&a->mu);
  if (ret < 0)
    return ret;
  pthread_mutex_lock(&vm->op_mu);
  ret = agent_cbt_changeid(d, json, payload);
  pthread_mutex_unlock(&vm->op_mu);
  pthread_mutex_lock(&a->mu);
  agent_vm_unref(vm);
  pthread_mutex_unlock(&a->mu);
  return ret;
}

static int do_migrate(struct svm_agent *a, const struct svm_ctl_request *r, bool json,
                      char **payload)
{
  if (svm_ctl_arg(r, "host")) {           /* to another host: svm/agent/hostmove.c */
    int ret = agent_precheck_gate(a, r);  /* svm/agent/precheck.c: refuses on an error */
    if (ret < 0)
      return ret;
    return agent_hostmove_start(a, r, json, payload);
  }
  return agent_move_start(a, r, json, payload);
}

static int do_migrate_cancel(struct svm_agent *a, const struct svm_ctl_request *r, bool json,
                             char **payload)
{
  const char *vm = svm_ctl_arg(r, "vm");

  if (!vm)
    return svm_error(EINVAL, "migrate-cancel: missing argument 'vm'");
  int ret = agent_hostmove_cancel(a, vm, json, payload);
  if (ret != -ENOENT)
    return ret;
  return agent_move_cancel(a, vm, json, payload);
}

/* An optional numeric argument: *v is left alone when it is absent. */
static int parse_num(const struct svm_ctl_request *r, const char *key, uint64_t *v)
{
  const char *s = svm_ctl_arg(r, key);
  char *end;

  if (!s)
    return 0;
  errno = 0;
  unsigned long long x = strtoull(s, &end, 10);
  if (!*s || *end || errno || s[0] < '0' || s[0] > '9')
    return svm_error(EINVAL, "%s: %s '%s' is not a number", r->verb, key, s);
  *v = x;
  return 0;
}

static int do_status(struct svm_agent *a, const struct svm_ctl_request *r, bool json,
                     char **payload)
{
  const char *id = svm_ctl_arg(r, "id");
  char *moves = NULL, *hosts = NULL;
  uint64_t wait_ms = 0;
  size_t len;
  bool first = true;
  FILE *f;
  int ret;

  if (parse_num(r, "wait_ms", &wait_ms) < 0)
    return -EINVAL;
  if (svm_ctl_arg(r, "wait_ms") && !id)
    return svm_error(EINVAL, "status: wait_ms needs the id of a move");

  if (id && strtoul(id, NULL, 10) > AGENT_HOSTMOVE_ID_BASE)
    return agent_hostmove_show(a, (unsigned)strtoul(id, NULL, 10), json, payload);
  ret = agent_move_status(a, id, wait_ms, json, &moves);
  if (ret < 0 || id)
    return *payload = moves, ret;
  /* The host moves (hostmove.c) after the datastore moves: "host_moves": [...] in JSON. */
  f = open_memstream(&hosts, &len);
  if (!f) {
    free(moves);
    return svm_error(ENOMEM, "out of memory");
  }
  agent_hostmove_status(a, json, f, &first);
  fclose(f);
  len = strlen(moves);
  if (json && len && moves[len - 1] == '}') {
    moves[len - 1] = '\0';
    ret = asprintf(payload, "%s, \"host_moves\": [%s]}", moves, hosts ? hosts : "");
  } else {
    ret = asprintf(payload, "%s%s", moves, hosts ? hosts : "");
  }
  free(moves);
  free(hosts);
  if (ret < 0) {
    *payload = NULL;
    return svm_error(ENOMEM, "out of memory");
  }
  return 0;
}


static int do_cbt_query(struct svm_agent *a, const struct svm_ctl_request *r, bool json,
                        char **payload)
{
  const char *since = svm_ctl_arg(r, "since");
  struct agent_disk *d;
  int ret = need_disk(a, r, &d);

  if (ret < 0)
    return ret;
  if (!since)
    return svm_error(EINVAL, "cbt-query: missing argument 'since' (a change ID or '*')");
  uint64_t cursor = 0, limit = SVM_CTL_QUERY_PAGE;
  if (parse_num(r, "cursor", &cursor) < 0 || parse_num(r, "limit", &limit) < 0)
    return -EINVAL;
  if (limit == 0 || limit > SVM_CTL_QUERY_PAGE)
    return svm_error(EINVAL, "cbt-query: limit must be 1-%d extents", SVM_CTL_QUERY_PAGE);
  return agent_cbt_query(d, since, cursor, (size_t)limit, json, payload);
}

static int do_precheck(struct svm_agent *a, const struct svm_ctl_request *r, bool json,
                       char **payload)
{
  const char *vm = svm_ctl_arg(r, "vm"), *ds = svm_ctl_arg(r, "datastore");
  const char *host = svm_ctl_arg(r, "host"), *bw = svm_ctl_arg(r, "bandwidth");
  struct svm_pc_report *rep;
  int ret;

  if (!vm || !ds)
    return svm_error(EINVAL, "precheck: needs vm and datastore");
  rep = calloc(1, sizeof *rep);
  if (!rep)
    return svm_error(ENOMEM, "out of memory");
  ret = agent_precheck(a, vm, ds, host, svm_ctl_arg(r, "provisioning"), bw && *bw == '1', false,
                       rep);
  if (ret == 0)
    ret = svm_pc_format(rep, vm, host, json, payload);
  free(rep);
  return ret;
}

/* The protocol's commands and the arguments each takes (besides format). */
/* The protocol's commands and the arguments each takes (besides format). `unlocked` commands
 * take a->mu themselves (they do long work outside it); the others run under it. */
static const struct command {
  const char *verb;
  const char *const args[6];   /* NULL-terminated */
  int (*fn)(struct svm_agent *a, const struct svm_ctl_request *r, bool json, char **payload);
  bool unlocked;
} commands[] = {
  { "ping", { NULL }, do_ping, false },
  { "vm-list", { NULL }, do_vm_list, false },
  { "vm-show", { "vm", NULL }, do_vm_show, false },
  { "vm-create", { "vm", "datastore", "disk", "tcp", "tcp-any", NULL }, do_vm_create, true },
  { "vm-delete", { "vm", NULL }, do_vm_delete, false },
  { "cbt-changeid", { "vm", "disk", NULL }, do_cbt_changeid, true },
  { "cbt-query", { "vm", "disk", "since", "cursor", "limit", NULL }, do_cbt_query, false },
  { "migrate", { "vm", "datastore", "provisioning", "rate", "host", NULL }, do_migrate, false },
  { "migrate-cancel", { "vm", NULL }, do_migrate_cancel, false },
  { "status", { "id", "wait_ms", NULL }, do_status, false },
  { "precheck", { "vm", "datastore", "host", "bandwidth", "provisioning", NULL },
    do_precheck, false },
};

static int handle(void *opaque, const struct svm_ctl_request *r, char **payload)
{
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
    const struct command *c = &commands[i];
    if (strcmp(r->verb, c->verb) != 0)
      continue;
    struct svm_agent *a = opaque;
    int ret = check_args(r, c->args);
    if (ret < 0)
      return ret;
    if (c->unlocked)
      return c->fn(a, r, want_json(r), payload);
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&a->mu);
    return c->fn(a, r, want_json(r), payload);
  }
  return svm_error(EOPNOTSUPP, "unknown command '%s' (this svmd %s knows ping, vm-list, "
                   "vm-show, vm-create, vm-delete, cbt-changeid, cbt-query, migrate, "
                   "migrate-cancel, status, precheck)", r->verb, SVM_VERSION);
}

int svm_agent_run(struct svm_agent *a, int stop_fd)
{
  agent_log("ready");
  return svm_control_serve(a->control, stop_fd, handle, a);
}
