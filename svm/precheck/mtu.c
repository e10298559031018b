/* Check 4: the path MTU, with don't-fragment probes (an 8972-byte payload for MTU 9000): both
 * interfaces' MTUs compared, then the path tried at the larger one. */
#include <errno.h>
#include <stdio.h>

#include "svm/precheck/precheck.h"

void svm_pc_check_mtu(struct svm_pc_ctx *c, struct svm_pc_report *r)
{
  const struct svm_pc_host *l = c->local, *p = c->peer;
  unsigned mtu = l->mig.mtu > p->mig.mtu ? l->mig.mtu : p->mig.mtu, rtt;
  const struct svm_pc_host *small = l->mig.mtu < p->mig.mtu ? l : p;
  size_t payload = mtu > 28 ? mtu - 28 : 0;   /* IPv4 and ICMP headers */
  char fix[768];
  int ok = -ETIMEDOUT;

  if (!c->net_ok)
    return;
  if (l->mig.mtu != p->mig.mtu) {
    const struct svm_pc_host *big = small == l ? p : l;
    snprintf(fix, sizeof fix, "set the same MTU on both migration interfaces: ip link set dev "
             "%s mtu %u on host %s (with jumbo frames on every switch between), or MTU %u on "
             "host %s's %s", small->mig.name, big->mig.mtu, small->name, small->mig.mtu,
             big->name, big->mig.name);
    svm_pc_add(r, "mtu", SVM_PC_ERROR, fix, "MTU mismatch: host %s %s MTU %u, host %s %s MTU "
               "%u", l->name, l->mig.name, l->mig.mtu, p->name, p->mig.name, p->mig.mtu);
    return;
  }
  if (!c->rtt_us)
    return;     /* no echo at all: the icmp check said so */
  for (int k = 0; k < 2 && ok < 0; k++)
    ok = svm_net_ping(&l->mig, p->mig.in, payload, SVM_PC_PROBE_MS, &rtt);
  if (ok < 0) {
    snprintf(fix, sizeof fix, "enable frames of %u bytes (jumbo frames) on every switch and "
             "router between, or lower both interfaces' MTU to what the path carries", mtu);
    svm_pc_add(r, "mtu", SVM_PC_ERROR, fix, "path MTU below %u: a %zu-byte don't-fragment "
               "probe from %s to %s got no answer", mtu, payload, l->mig.addr, p->mig.addr);
    return;
  }
  svm_pc_add(r, "mtu", SVM_PC_OK, NULL, "MTU %u on both; a %zu-byte don't-fragment probe to "
             "%s answered", mtu, payload, p->mig.addr);
}
