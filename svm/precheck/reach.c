/* Check 3 (and 9 on the migration network): the peer's migration listener answers from the
 * local migration address - TCP, then TLS with the peer's identity - and an ICMP echo comes
 * back (vmkping's job). The echoes also give the round trip for the RTT check. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "svm/precheck/precheck.h"

void svm_pc_check_reach(struct svm_pc_ctx *c, struct svm_pc_report *r)
{
  const struct svm_pc_host *l = c->local, *p = c->peer;
  unsigned best = 0, rtt;
  char fix[768], host[256];
  struct nfc_tls *t;
  int got = 0;

  if (!c->net_ok)
    return;
  if (svm_net_dial(c->creds, &l->mig, p->mig.in, p->mig_port, "probe", l->name, host,
                   sizeof host, &t) < 0) {
    snprintf(fix, sizeof fix, "check that svmd runs on host %s with --migration %s:%u, that "
             "the migration network connects %s and %s, and that no firewall drops TCP port "
             "%u", p->name, p->mig.addr, p->mig_port, l->mig.name, p->mig.name, p->mig_port);
    svm_pc_add(r, "tcp", SVM_PC_ERROR, fix, "no migration connection from %s (%s) to %s:%u: "
               "%s", l->mig.addr, l->mig.name, p->mig.addr, p->mig_port, svm_last_error());
  } else {
    svm_pc_add(r, "tcp", SVM_PC_OK, NULL, "%s (%s) -> %s:%u: host %s answered over %s", 
               l->mig.addr, l->mig.name, p->mig.addr, p->mig_port, host, nfc_tls_kind(t));
    svm_peer_hangup(t);
    c->reach_ok = true;
  }
  for (int k = 0; k < 3; k++)
    if (svm_net_ping(&l->mig, p->mig.in, 56, SVM_PC_PROBE_MS, &rtt) == 0) {
      best = got++ ? (rtt < best ? rtt : best) : rtt;
    }
  if (!got) {
    snprintf(fix, sizeof fix, "check the migration network between %s on host %s and %s on "
             "host %s (cabling, VLAN, firewall: ICMP echo must pass)", l->mig.name, l->name,
             p->mig.name, p->name);
    svm_pc_add(r, "icmp", SVM_PC_ERROR, fix, "no ICMP echo answer from %s to %s (3 tries)",
               p->mig.addr, l->mig.addr);
    return;
  }
  c->rtt_us = best ? best : 1;
  svm_pc_add(r, "icmp", SVM_PC_OK, NULL, "%s -> %s: %d of 3 echoes answered", l->mig.addr,
             p->mig.addr, got);
}
