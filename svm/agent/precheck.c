/* The agent's side of the prechecks (svm/precheck): `svmctl precheck` (the control verb
 * "precheck"), the peer link's INFO answer, and the --migration listener with its gateway
 * (svm/net). */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "svm/agent/internal.h"
#include "svm/net/net.h"
#include "svm/precheck/precheck.h"

static void net_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void net_log(const char *fmt, ...)
{
  char msg[2048];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  agent_log("%s", msg);
}

int agent_net_start(struct svm_agent *a)
{
  struct svm_net_iface i;
  struct in_addr addr, gw;
  unsigned port;
  int r;

  if (a->migration_gw && !a->migration)
    return svm_error(EINVAL, "--migration-gateway needs --migration ADDR:PORT");
  if (!a->migration)
    return 0;
  if (svm_net_split(a->migration, &addr, &port) < 0)
    return svm_error_prefix("--migration");
  if (svm_net_iface_of(addr, &i) < 0)
    return svm_error(EADDRNOTAVAIL, "--migration %s: no interface of this host has address "
                     "%s (ip addr add %s/PREFIX dev IFACE)", a->migration, i.addr, i.addr);
  if (a->migration_gw) {
    if (inet_pton(AF_INET, a->migration_gw, &gw) != 1)
      return svm_error(EINVAL, "--migration-gateway %s: not an IPv4 address", a->migration_gw);
    if (!svm_net_on_link(&i, gw))
      return svm_error(EINVAL, "--migration-gateway %s is not on %s's subnet %s/%u",
                       a->migration_gw, i.name, i.addr, i.prefix);
    if ((r = svm_net_gateway_install(&i, a->migration_gw)) < 0)
      return r;
    a->gw_installed = true;
    agent_log("migration gateway %s on %s: rule from %s lookup table %d", a->migration_gw,
              i.name, i.addr, SVM_NET_TABLE);
  }
  if (!a->have_creds) {
    r = svm_peer_creds_load(a->tls_dir, a->tls_psk, a->insecure, &a->creds);
    if (r < 0)
      return svm_error_prefix("--migration");
    a->have_creds = true;
  }
  a->mig_iface = i;
  r = svm_net_server_start(&i, port, a->creds.server, a->name, net_log, &a->mig_server);
  if (r < 0)
    return r;
  if (port == 0) {
    /* PORT 0: the kernel's choice, which peers learn through INFO */
    char *spec;
    if (asprintf(&spec, "%s:%u", i.addr, svm_net_server_port(a->mig_server)) < 0)
      return svm_error(ENOMEM, "out of memory");
    free(a->migration);
    a->migration = spec;
  }
  agent_log("migration interface %s: listening on %s (%s)", i.name, a->migration,
            a->creds.server ? nfc_tls_config_kind(a->creds.server) : "plaintext: --insecure");
  return 0;
}

void agent_net_stop(struct svm_agent *a)
{
  svm_net_server_stop(a->mig_server);
  a->mig_server = NULL;
  if (a->gw_installed)
    svm_net_gateway_remove(&a->mig_iface);
  a->gw_installed = false;
}

static int collect(struct svm_agent *a, const char *dsname, struct svm_pc_host *h)
{
  const struct svm_datastore *ds = dsname ? agent_find_ds(a, dsname) : NULL;

  return svm_pc_host_collect(h, a->name, a->mgmt, a->migration, a->migration_gw, dsname,
                             ds ? ds->dir : NULL);
}

int agent_precheck_info(void *opaque, const struct svm_peer_msg *req, struct svm_peer_msg *reply)
{
  struct svm_pc_host h;
  int r = collect(opaque, svm_peer_get(req, "datastore"), &h);

  if (r == 0)
    r = svm_pc_host_to_msg(&h, reply);
  svm_pc_host_clear(&h);
  return r;
}

/* What the VM needs on the destination: thick disks their size, thin ones what they use. */
static uint64_t vm_need(const struct agent_vm *vm, const char *prov)
{
  uint64_t need = 0;

  for (unsigned i = 0; i < vm->ndisks; i++) {
    const struct svm_desc_disk *dd = &vm->desc->disks[i];
    enum svm_desc_prov p = dd->provisioning;
    struct stat st;

    if (prov && strcmp(prov, "same") != 0)
      svm_desc_prov_parse(prov, &p);
    if (p != SVM_DESC_THIN)
      need += dd->size;
    else if (stat(vm->disks[i].path, &st) == 0)
      need += (uint64_t)st.st_blocks * 512;
  }
  return need;
}

int agent_precheck(struct svm_agent *a, const char *vmname, const char *dsname,
                   const char *host, const char *prov, bool bandwidth, bool cold,
                   struct svm_pc_report *rep)
{
  struct agent_vm *vm = agent_find_vm(a, vmname);
  struct svm_pc_host local, peer;
  struct svm_peer_msg *m = NULL;
  struct nfc_tls *t = NULL;
  char err[1024] = "", identity[256] = "", kind[16] = "";
  struct svm_pc_ctx c = { .local = &local, .creds = &a->creds, .vm = vmname,
                          .provisioning = prov ? prov : "same", .bandwidth = bandwidth };
  int errnum = 0, r;

  if (!vm)
    return svm_error(ENOENT, "host %s has no VM named %s", a->name, vmname);
  c.need = vm_need(vm, prov);
  if ((r = collect(a, host ? NULL : dsname, &local)) < 0)
    return r;
  if (host) {
    if (!a->have_creds) {
      snprintf(err, sizeof err, "this svmd has no credentials for the peer link (--tls-dir, "
               "--tls-psk or --insecure)");
      errnum = EACCES;
    } else if (!(m = malloc(sizeof *m))) {
      svm_pc_host_clear(&local);
      return svm_error(ENOMEM, "out of memory");
    } else if (svm_peer_dial(&a->creds, host, "control", a->name, NULL, m, &t) < 0 ||
               svm_peer_check_identity(t, svm_peer_get(m, "host")) < 0) {
      snprintf(err, sizeof err, "%s", svm_last_error());
      errnum = svm_last_errno();
    } else {
      snprintf(identity, sizeof identity, "%s", nfc_tls_peer_identity(t));
      snprintf(kind, sizeof kind, "%s", nfc_tls_kind(t));
      svm_peer_msg_init(m, SVM_PEER_INFO);
      svm_peer_msg_add(m, "datastore", "%s", dsname);
      if (svm_peer_call(t, m, SVM_PEER_CALL_MS) < 0 || svm_pc_host_from_msg(&peer, m) < 0) {
        snprintf(err, sizeof err, "%s", svm_last_error());
        errnum = svm_last_errno();
      } else {
        c.peer = &peer;
      }
    }
    if (t)
      svm_peer_hangup(t);
  }
  c.cold = cold || !host;     /* a move within this host does not use the migration network */
  svm_pc_run(&c, host, identity, kind, err, errnum, rep);
  free(m);
  if (c.peer)
    svm_pc_host_clear(&peer);
  svm_pc_host_clear(&local);
  return 0;
}

int agent_precheck_gate(struct svm_agent *a, const struct svm_ctl_request *r)
{
  const char *vm = svm_ctl_arg(r, "vm"), *ds = svm_ctl_arg(r, "datastore");
  const char *host = svm_ctl_arg(r, "host");
  struct svm_pc_report *rep;
  char msg[4096];
  size_t n = 0;
  int ret;

  if (!vm || !ds || !agent_find_vm(a, vm))
    return 0;     /* the move itself says what is wrong */
  rep = calloc(1, sizeof *rep);
  if (!rep)
    return svm_error(ENOMEM, "out of memory");
  ret = agent_precheck(a, vm, ds, host, svm_ctl_arg(r, "provisioning"), false, true, rep);
  if (ret == 0 && svm_pc_failed(rep)) {
    msg[0] = '\0';
    for (unsigned i = 0; i < rep->n; i++)
      if (rep->items[i].level == SVM_PC_ERROR && n < sizeof msg)
        n += (size_t)snprintf(msg + n, sizeof msg - n, "%s%s: %s; fix: %s", n ? " | " : "",
                              rep->items[i].check, rep->items[i].found, rep->items[i].fix);
    ret = svm_error(EHOSTUNREACH, "move of VM %s to %s failed: the prechecks found errors "
                    "(svmctl precheck tells more): %s", vm, host, msg);
    agent_log("%s", svm_last_error());
  }
  free(rep);
  return ret;
}
