/* The agent's side of the peer link (svm/peer): svmd --mgmt, and what a destination does for
 * a cold host move - a hidden staging folder per incoming VM (DS/.svm-incoming.VM, which the
 * datastore scan never takes for a VM), files written there by NFC streams, and a commit that
 * makes them durable, renames the folder to DS/VM and opens the VM. A staging folder left by a
 * crash is removed when the agent starts (agent_peer_clean_incoming). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/cleanup.h"
#include <svmotion/cli.h>

#include "common/error.h"
#include "svm/agent/internal.h"
#include "svm/peer/peer.h"

#define INCOMING_PREFIX ".svm-incoming."

static void peer_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void peer_log(const char *fmt, ...)
{
  char msg[2048];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  agent_log("%s", msg);
}

uint64_t agent_ds_free(const struct svm_datastore *ds)
{
  struct statvfs st;

  if (statvfs(ds->dir, &st) < 0)
    return 0;
  return (uint64_t)st.f_bavail * st.f_frsize;
}

static int hello(void *opaque, struct svm_peer_msg *reply)
{
  struct svm_agent *a = opaque;
  int r;

  if ((r = svm_peer_msg_add(reply, "host", "%s", a->name)) < 0 ||
      (r = svm_peer_msg_add(reply, "version", "%s", SVM_VERSION)) < 0)
    return r;
  for (size_t i = 0; i < a->nds; i++)
    if ((r = svm_peer_msg_add(reply, "ds", "%s:%" PRIu64, a->ds[i].name,
                              agent_ds_free(&a->ds[i]))) < 0)
      return r;
  return 0;
}

/* Remove every regular file of a folder, then the folder: what a move may have put there
 * (NFC data and progress records). Anything else (a sub-folder) stays and is reported. */
int agent_remove_folder(const char *dir)
{
  DIR *d = opendir(dir);
  struct dirent *e;
  int r = 0;

  if (!d)
    return errno == ENOENT ? 0 : svm_error(errno, "%s: %s", dir, strerror(errno));
  while ((e = readdir(d))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    if (unlinkat(dirfd(d), e->d_name, 0) < 0 && errno != ENOENT)
      r = svm_error(errno, "%s/%s: %s", dir, e->d_name, strerror(errno));
  }
  closedir(d);
  if (rmdir(dir) < 0 && r == 0)
    r = svm_error(errno, "%s: %s", dir, strerror(errno));
  return r;
}

/* snprintf into a PATH_MAX buffer, refusing what does not fit. */
static int pathf(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int pathf(char *out, const char *fmt, ...)
{
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(out, PATH_MAX, fmt, ap);
  va_end(ap);
  if (n < 0 || n >= PATH_MAX)
    return svm_error(ENAMETOOLONG, "path too long");
  return 0;
}

static int fsync_path(const char *path, int flags)
{
  CLEANUP_CLOSE int fd = open(path, flags | O_CLOEXEC | O_NOFOLLOW);

  if (fd < 0 || fsync(fd) < 0)
    return svm_error(errno, "%s: fsync: %s", path, strerror(errno));
  return 0;
}

static int prepare(void *opaque, const char *peer, const char *host,
                   const struct svm_peer_msg *req, char *dir)
{
  struct svm_agent *a = opaque;
  const char *vm = svm_peer_get(req, "vm"), *dsname = svm_peer_get(req, "datastore");
  const struct svm_datastore *ds;
  char final[PATH_MAX];
  struct stat st;
  uint64_t need = 0, avail;

  if (!vm || !svm_vm_name_valid(vm))
    return svm_error(EINVAL, "'%s' is not a VM name", vm ? vm : "");
  if (!dsname)
    return svm_error(EINVAL, "PREPARE without a datastore");
  if (svm_peer_get_u64(req, "bytes", &need) < 0)
    return -EINVAL;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&a->mu);
  ds = agent_find_ds(a, dsname);
  if (!ds)
    return svm_error(ENOENT, "host %s has no datastore '%s'", a->name, dsname);
  if (agent_find_vm(a, vm))
    return svm_error(EEXIST, "host %s has a VM named %s already", a->name, vm);
  if (pathf(final, "%s/%s", ds->dir, vm) < 0)
    return -ENAMETOOLONG;
  if (lstat(final, &st) == 0)
    return svm_error(EEXIST, "host %s: %s exists already", a->name, final);
  if (pathf(dir, "%s/" INCOMING_PREFIX "%s", ds->dir, vm) < 0)
    return -ENAMETOOLONG;
  if (lstat(dir, &st) == 0)
    return svm_error(EBUSY, "host %s: VM %s is being received already", a->name, vm);
  avail = agent_ds_free(ds);
  if (need > avail) {
    char n[32], f[32];
    return svm_error(ENOSPC, "datastore %s on host %s has %s free, VM %s needs %s", ds->name,
                     a->name, svm_size_format(avail, f, sizeof f), vm,
                     svm_size_format(need, n, sizeof n));
  }
  if (mkdir(dir, 0700) < 0)
    return svm_error(errno, "host %s: %s: %s", a->name, dir, strerror(errno));
  agent_log("peer %s (host %s): receiving VM %s into datastore %s (%s)", peer, host, vm,
            ds->name, dir);
  return 0;
}

/* DS/.svm-incoming.VM -> the datastore and VM */
static const struct svm_datastore *staging_ds(struct svm_agent *a, const char *dir,
                                              const char **vm)
{
  const char *slash = strrchr(dir, '/');

  if (!slash || strncmp(slash + 1, INCOMING_PREFIX, strlen(INCOMING_PREFIX)) != 0)
    return NULL;
  *vm = slash + 1 + strlen(INCOMING_PREFIX);
  for (size_t i = 0; i < a->nds; i++)
    if (strlen(a->ds[i].dir) == (size_t)(slash - dir) &&
        strncmp(a->ds[i].dir, dir, (size_t)(slash - dir)) == 0)
      return &a->ds[i];
  return NULL;
}

/* Every file of the folder durable, then the folder. */
static int sync_folder(const char *dir)
{
  DIR *d = opendir(dir);
  struct dirent *e;
  char path[PATH_MAX];
  int r = 0;

  if (!d)
    return svm_error(errno, "%s: %s", dir, strerror(errno));
  while (r == 0 && (e = readdir(d))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    r = pathf(path, "%s/%s", dir, e->d_name);
    if (r == 0)
      r = fsync_path(path, O_RDONLY);
  }
  closedir(d);
  return r == 0 ? fsync_path(dir, O_RDONLY | O_DIRECTORY) : r;
}

static int commit(void *opaque, const char *peer, const char *dir, const struct svm_peer_msg *req)
{
  struct svm_agent *a = opaque;
  const struct svm_datastore *ds;
  const char *name = NULL;
  char final[PATH_MAX], desc_path[PATH_MAX], path[PATH_MAX];
  struct svm_desc *desc;
  struct agent_vm *vm;
  int r;

  ds = staging_ds(a, dir, &name);
  if (!ds)
    return svm_error(EINVAL, "%s is not a staging folder of this host", dir);
  if (pathf(desc_path, "%s/%s.svm", dir, name) < 0)
    return -ENAMETOOLONG;
  r = svm_desc_load(desc_path, &desc);
  if (r < 0)
    return svm_error_prefix("VM %s is incomplete", name);
  if (strcmp(desc->name, name) != 0) {
    svm_desc_free(desc);
    return svm_error(EINVAL, "%s names VM %s, not %s", desc_path, desc->name, name);
  }
  /* Every disk and tracker the descriptor names must have arrived. */
  for (unsigned i = 0; i < desc->ndisks; i++) {
    struct stat st;
    if (pathf(path, "%s/%s", dir, desc->disks[i].file) < 0 || stat(path, &st) < 0 ||
        (uint64_t)st.st_size != desc->disks[i].size) {
      svm_desc_free(desc);
      return svm_error(EINVAL, "VM %s is incomplete: disk%u (%s) %s", name, i,
                       desc->disks[i].file, errno == ENOENT ? "is missing" : "has another size");
    }
  }
  svm_desc_free(desc);
  if ((r = sync_folder(dir)) < 0)
    return r;

  if (pathf(final, "%s/%s", ds->dir, name) < 0 || pathf(desc_path, "%s/%s.svm", final, name) < 0)
    return -ENAMETOOLONG;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&a->mu);
  if (agent_find_vm(a, name))
    return svm_error(EEXIST, "host %s has a VM named %s already", a->name, name);
  if (renameat2(AT_FDCWD, dir, AT_FDCWD, final, RENAME_NOREPLACE) < 0)
    return svm_error(errno, "%s -> %s: %s", dir, final, strerror(errno));
  r = fsync_path(ds->dir, O_RDONLY | O_DIRECTORY);
  if (r == 0)
    r = svm_desc_load(desc_path, &desc);
  if (r == 0)
    r = agent_vm_open(a, ds, final, desc_path, desc, &vm);
  if (r < 0) {
    /* Back to staging: abort removes it, and the source still owns the VM. */
    int e = svm_last_errno();
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", svm_last_error());
    if (rename(final, dir) < 0)
      agent_log("%s: could not move it back to %s: %s", final, dir, strerror(errno));
    return svm_error(e, "VM %s: %s", name, msg);
  }
  vm->next = a->vms;
  a->vms = vm;
  agent_log("peer %s: VM %s received into datastore %s: %u disk(s) exported", peer, name,
            ds->name, vm->ndisks);
  return 0;
}

static void abort_transfer(void *opaque, const char *peer, const char *dir)
{
  int r = agent_remove_folder(dir);

  if (r < 0)
    agent_log("peer %s: could not remove the partial VM folder: %s", peer, svm_last_error());
  else
    agent_log("peer %s: transfer aborted, %s removed", peer, dir);
}

/* The NFC receiver for one stream, into the staging folder. */
static int nfc_stream(void *opaque, struct nfc_tls *t, const char *dir)
{
  return svm_peer_nfc_serve(t, dir);
}

int agent_peer_clean_incoming(struct svm_agent *a)
{
  for (size_t i = 0; i < a->nds; i++) {
    DIR *d = opendir(a->ds[i].dir);
    struct dirent *e;
    char path[PATH_MAX];

    if (!d)
      continue;
    while ((e = readdir(d))) {
      if (strncmp(e->d_name, INCOMING_PREFIX, strlen(INCOMING_PREFIX)) != 0)
        continue;
      if (pathf(path, "%s/%s", a->ds[i].dir, e->d_name) < 0 || agent_remove_folder(path) < 0)
        agent_log("partial incoming VM folder %s: %s", path, svm_last_error());
      else
        agent_log("removed %s: a host move into datastore %s that did not finish", path,
                  a->ds[i].name);
    }
    closedir(d);
  }
  return 0;
}

static struct svm_peer_ops peer_ops = {
  .log = peer_log,
  .hello = hello,
  .prepare = prepare,
  .commit = commit,
  .abort = abort_transfer,
  .nfc_stream = nfc_stream,
  .info = agent_precheck_info,
};

int agent_peer_start(struct svm_agent *a)
{
  int r;

  agent_peer_clean_incoming(a);
  /* Credentials serve both directions: the --mgmt listener, and the moves this host starts.
   * Without --mgmt they are optional (this host only moves VMs away, if it has them). */
  if (!a->mgmt && !a->tls_dir && !a->tls_psk && !a->insecure)
    return 0;
  r = svm_peer_creds_load(a->tls_dir, a->tls_psk, a->insecure, &a->creds);
  if (r < 0)
    return r;
  a->have_creds = true;
  if (!a->mgmt)
    return 0;
  peer_ops.opaque = a;
  r = svm_peer_server_start(a->mgmt, a->creds.server, &peer_ops, &a->peer);
  if (r < 0)
    return r;
  agent_log("peer link on %s (%s)", svm_peer_server_addr(a->peer),
            a->creds.server ? nfc_tls_config_kind(a->creds.server) : "plaintext: --insecure");
  return 0;
}

void agent_peer_stop(struct svm_agent *a)
{
  svm_peer_server_stop(a->peer);
  a->peer = NULL;
  svm_peer_creds_clear(&a->creds);
}
