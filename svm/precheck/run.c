/* The prechecks in order: the interfaces first (the probes need them), then the network, the
 * destination datastore, the CPUs. A peer link that failed is itself the first error (its
 * TLS identity is check 9); the checks that need the peer are then left out. */
#include <errno.h>
#include <stdio.h>

#include "svm/precheck/precheck.h"

static void check_tls(struct svm_pc_ctx *c, const char *link, const char *identity,
                      const char *kind, const char *err, int errnum, struct svm_pc_report *r)
{
  char fix[768];

  if (!err || !err[0]) {
    svm_pc_add(r, "tls", SVM_PC_OK, NULL, "peer link to %s: host %s, %s%s%s", link,
               c->peer->name, kind, identity[0] ? " identity " : " (no identity: --insecure)",
               identity);
    return;
  }
  if (errnum == ECONNREFUSED || errnum == ETIMEDOUT || errnum == EHOSTUNREACH ||
      errnum == ENETUNREACH)
    snprintf(fix, sizeof fix, "check that svmd runs on that host with --mgmt %s and that the "
             "management network reaches it", link);
  else
    snprintf(fix, sizeof fix, "give both hosts credentials of one CA (svmctl tls init --dir "
             "DIR --host NAME --ca CA-DIR) or the same --tls-psk file, and --host the name or "
             "address the peer's certificate carries");
  svm_pc_add(r, "tls", SVM_PC_ERROR, fix, "no peer link to %s: %s", link, err);
}

void svm_pc_run(struct svm_pc_ctx *c, const char *peer_link, const char *peer_identity,
                const char *peer_kind, const char *peer_err, int peer_errno,
                struct svm_pc_report *r)
{
  if (peer_link)
    check_tls(c, peer_link, peer_identity, peer_kind, peer_err, peer_errno, r);
  if (peer_link && !c->peer)
    return;
  svm_pc_check_iface(c, r);
  svm_pc_check_dup(c, r);
  svm_pc_check_subnet(c, r);
  svm_pc_check_route(c, r);
  svm_pc_check_vlan(c, r);
  svm_pc_check_reach(c, r);
  svm_pc_check_rtt(c, r);
  svm_pc_check_mtu(c, r);
  svm_pc_check_datastore(c, r);
  svm_pc_check_cpu(c, r);
  svm_pc_check_bandwidth(c, r);
}
