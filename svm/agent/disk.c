/* A disk of a VM in the agent: its change tracker (.ctk beside the disk) and its NBD export.
 *
 * The export serves the stack raw -> track (svm/disk/track.h): the tracking layer marks every
 * WRITE / WRITE_ZEROES / TRIM durably before passing it down, and the export acknowledges a
 * request only when the stack completed it, so a mark always covers a write before the guest
 * hears it is done: after kill -9 of svmd the .ctk still names every acknowledged write. The
 * tracker belongs to the disk, not to the stack: it is closed after the export (and a stack
 * swapped in by a move carries a tracking layer over the same tracker). The meta context provider "svm-cbt:"
 * serves the changed-block map of a change ID over NBD block status, so a backup tool reads
 * the changed extents with plain NBD (nbdinfo --map=svm-cbt:<uuid>/<seq> URI). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <svmotion/cbt.h>

#include "common/error.h"
#include "svm/agent/internal.h"
#include "svm/nbd/export.h"
#include "svm/disk/layer.h"
#include "svm/disk/track.h"

static const char cbt_prefix[] = "svm-cbt:";

/* How long `cbt changeid` waits for guest I/O to drain before it gives up and says so. */
#define CHANGEID_DRAIN_NS (30ull * 1000 * 1000 * 1000)

static const char *strip_prefix(const char *name)
{
  return strncmp(name, cbt_prefix, sizeof cbt_prefix - 1) == 0 ? name + sizeof cbt_prefix - 1
                                                                : name;
}

/* A context "svm-cbt:<change id>" exists when the tracker accepts the change ID. */
static int meta_resolve(void *opaque, const char *name)
{
  struct agent_disk *d = opaque;
  struct cbt_extent *e = NULL;
  size_t n = 0;
  int r;

  if (!d->cbt)
    return svm_error(ENOENT, "%s: no change tracking now", d->export_name);
  r = cbt_query(d->cbt, strip_prefix(name), 0, 512, &e, &n);

  free(e);
  if (r < 0) {
    agent_log("%s: NBD meta context %s refused: %s", d->export_name, name, svm_last_error());
    return svm_error(ENOENT, "%s", svm_last_error());
  }
  return 0;
}

static int meta_extents(void *opaque, const char *name, uint64_t offset, uint64_t length,
                        struct svm_meta_extent **out, size_t *nout)
{
  struct agent_disk *d = opaque;
  struct cbt_extent *e = NULL;
  size_t n = 0;
  int r;

  *out = NULL;
  *nout = 0;
  if (!d->cbt)
    return svm_error(ENOENT, "%s: no change tracking now", d->export_name);
  r = cbt_query(d->cbt, strip_prefix(name), offset, length, &e, &n);
  if (r < 0)
    return r;
  if (n == 0)
    return 0;
  struct svm_meta_extent *m = calloc(n, sizeof *m);
  if (!m) {
    free(e);
    return svm_error(ENOMEM, "out of memory");
  }
  for (size_t i = 0; i < n; i++) {
    m[i].offset = e[i].offset;
    m[i].length = e[i].length;
  }
  free(e);
  *out = m;
  *nout = n;
  return 0;
}

int agent_disk_start(struct svm_agent *a, struct agent_disk *d)
{
  const struct svm_desc_disk *dd = &d->vm->desc->disks[d->index];
  struct svm_export_opts opts = { .name = d->export_name };
  struct svm_meta_provider prov = {
    .prefix = cbt_prefix, .resolve = meta_resolve, .extents = meta_extents, .opaque = d,
  };
  struct svm_layer *raw = NULL, *top = NULL;
  int r;

  /* The disk first: its lock (svm/disk/lock.h) refuses a disk that another svmd or
   * svm-convert has open before anything touches its .ctk. The stack is the raw file under a
   * tracking layer for the disk's tracker. */
  r = svm_layer_open_raw(d->path, false, &raw);
  if (r < 0)
    return r;
  r = cbt_open(d->ctk_path, dd->uuid, dd->size, 0, &d->cbt);
  if (r < 0) {
    svm_layer_free(raw);
    return r;
  }
  const char *why = cbt_reset_reason(d->cbt);
  if (why)
    agent_log("%s: changed-block tracking was reset: %s", d->export_name, why);
  r = svm_layer_open_track(d->cbt, raw, &top);
  if (r < 0) {
    svm_layer_free(raw);
    goto fail;
  }
  r = svm_export_new(&opts, top, &d->export);
  if (r < 0) {
    svm_layer_free(top);
    goto fail;
  }
  r = svm_export_add_meta_provider(d->export, &prov);
  if (r == 0)
    r = svm_export_listen_unix(d->export, d->sock_path);
  if (r == 0)
    r = agent_set_access(a, d->sock_path, false);   /* 0600, or 0660 for --group */
  if (r == 0 && d->tcp_addr[0] && !a->insecure && !a->nbd_tls) {
    /* NBD over TCP is TLS (svmd --tls-dir / --tls-psk), or plaintext when the operator said
     * so (svmd --insecure); otherwise not at all, and the local guest keeps its unix socket */
    agent_log("%s: not exported over TCP (%s:%s): it would be plaintext; start svmd with "
              "--tls-dir DIR or --tls-psk FILE (TLS), or --insecure", d->export_name,
              d->tcp_addr, d->tcp_port);
    d->tcp_addr[0] = '\0';
  }
  if (r == 0 && d->tcp_addr[0] && a->nbd_tls) {
    svm_export_set_tls(d->export, a->nbd_tls);
    d->tcp_tls = true;
  }
  if (r == 0 && d->tcp_addr[0]) {
    char port[16];
    r = svm_export_listen_tcp(d->export, d->tcp_addr, d->tcp_port, port, sizeof port);
    if (r == 0)
      snprintf(d->tcp_port, sizeof d->tcp_port, "%s", port);
  }
  if (r < 0)
    goto fail;
  return 0;
fail:
  agent_disk_stop(d);
  return r;
}

void agent_disk_stop(struct agent_disk *d)
{
  if (d->export) {
    svm_export_free(d->export);    /* disconnects clients, joins the I/O threads */
    d->export = NULL;
    unlink(d->sock_path);
  }
  if (d->cbt) {
    cbt_close(d->cbt);
    d->cbt = NULL;
  }
}

uint64_t agent_disk_clients(struct agent_disk *d)
{
  struct svm_export_stats st = { 0 };

  if (d->export)
    svm_export_get_stats(d->export, &st);
  return st.clients_now;
}

void agent_disk_cbt_json(struct agent_disk *d, FILE *f)
{
  struct cbt_info info;

  if (!d->cbt || cbt_get_info(d->cbt, &info) < 0)
    return;
  fprintf(f, ", \"cbt\": {\"uuid\": \"%s\", \"granularity\": %" PRIu32 ", \"epoch\": %" PRIu64
          "}", info.uuid, info.granularity, info.epoch);
}

int agent_cbt_changeid(struct agent_disk *d, bool json, char **out)
{
  char id[CBT_CHANGEID_MAX];
  uint64_t paused_ns;
  int r;

  /* A change ID must be an exact cut: a write whose mark landed in the closing epoch but whose
   * data is still in flight would otherwise be missing from both sides of it. Draining the
   * export first means every marked write has completed when the epoch closes; the guest sees
   * a pause of one .ctk header fdatasync. */
  r = svm_export_pause(d->export, CHANGEID_DRAIN_NS);
  if (r < 0)
    return svm_error_prefix("%s disk%u: draining guest I/O for the change ID", d->vm->desc->name,
                            d->index);
  r = cbt_changeid(d->cbt, id, sizeof id);
  svm_export_resume(d->export, &paused_ns);
  if (r < 0)
    return svm_error_prefix("%s disk%u", d->vm->desc->name, d->index);
  if (json)
    r = asprintf(out, "{\"vm\": \"%s\", \"disk\": %u, \"change-id\": \"%s\"}",
                 d->vm->desc->name, d->index, id);
  else
    r = asprintf(out, "%s\n", id);
  if (r < 0) {
    *out = NULL;
    return svm_error(ENOMEM, "out of memory");
  }
  return 0;
}

int agent_cbt_query(struct agent_disk *d, const char *since, uint64_t cursor, size_t limit,
                    bool json, char **out)
{
  struct cbt_extent *e = NULL;
  struct cbt_info info;
  uint64_t total = 0, next = 0;
  size_t n = 0, len;
  FILE *f;
  int r;

  if (cursor >= d->vm->desc->disks[d->index].size)
    return svm_error(EINVAL, "cbt-query: cursor %" PRIu64 " is past the end of %s disk%u",
                     cursor, d->vm->desc->name, d->index);
  r = cbt_query(d->cbt, since, cursor, 0, &e, &n);

  if (r < 0)
    return svm_error_prefix("%s disk%u", d->vm->desc->name, d->index);
  r = cbt_get_info(d->cbt, &info);
  if (r < 0) {
    free(e);
    return r;
  }
  f = open_memstream(out, &len);
  if (!f) {
    free(e);
    return svm_error(ENOMEM, "out of memory");
  }
  for (size_t i = 0; i < n; i++)
    total += e[i].length;
  /* One page (svm/control/proto.h): the extents from the cursor on, at most `limit` of them;
   * the next page starts where the last one ends (merged extents never touch, so no extent is
   * cut in two by a page boundary). */
  if (n > limit) {
    next = e[limit - 1].offset + e[limit - 1].length;
    n = limit;
  }
  if (json) {
    fprintf(f, "{\"vm\": ");
    agent_json_str(f, d->vm->desc->name);
    fprintf(f, ", \"disk\": %u, \"since\": ", d->index);
    agent_json_str(f, since);
    fprintf(f, ", \"tracking-uuid\": \"%s\", \"granularity\": %" PRIu32 ", \"disk-size\": %"
            PRIu64 ", \"changed-bytes\": %" PRIu64 ", \"extents\": [", info.uuid,
            info.granularity, info.disk_size, total);
    for (size_t i = 0; i < n; i++)
      fprintf(f, "%s{\"offset\": %" PRIu64 ", \"length\": %" PRIu64 "}", i ? ", " : "",
              e[i].offset, e[i].length);
    if (next)
      fprintf(f, "], \"next-cursor\": %" PRIu64 "}", next);
    else
      fprintf(f, "], \"next-cursor\": null}");
  } else {
    for (size_t i = 0; i < n; i++)
      fprintf(f, "%" PRIu64 " %" PRIu64 "\n", e[i].offset, e[i].length);
  }
  free(e);
  if (fclose(f) != 0) {
    free(*out);
    *out = NULL;
    return svm_error(ENOMEM, "out of memory");
  }
  return 0;
}
