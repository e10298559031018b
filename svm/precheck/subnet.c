/* Check 7: management and migration in one subnet - the case where vSphere sends migration
 * traffic out of its first VMkernel NIC. svmotion binds to the migration interface anyway;
 * a warning, with how to separate them. */
#include <arpa/inet.h>
#include <stdio.h>

#include "svm/precheck/precheck.h"

static void one(const struct svm_pc_host *h, struct svm_pc_report *r)
{
  char net[INET_ADDRSTRLEN], fix[512];
  struct in_addr n;

  if (!h->mig_found || !h->mgmt_found)
    return;
  if (!svm_net_on_link(&h->mig, h->mgmt.in) && !svm_net_on_link(&h->mgmt, h->mig.in)) {
    svm_pc_add(r, "subnet", SVM_PC_OK, NULL, "host %s: management (%s %s/%u) and migration "
               "(%s %s/%u) are on separate subnets", h->name, h->mgmt.name, h->mgmt.addr,
               h->mgmt.prefix, h->mig.name, h->mig.addr, h->mig.prefix);
    return;
  }
  n.s_addr = h->mig.in.s_addr & h->mig.mask.s_addr;
  inet_ntop(AF_INET, &n, net, sizeof net);
  snprintf(fix, sizeof fix, "svmotion still binds migration traffic to %s; to separate them, "
           "put host %s's migration interface on a subnet (or VLAN) of its own", h->mig.name,
           h->name);
  svm_pc_add(r, "subnet", SVM_PC_WARNING, fix, "host %s: management (%s %s) and migration "
             "(%s %s) share subnet %s/%u", h->name, h->mgmt.name, h->mgmt.addr, h->mig.name,
             h->mig.addr, net, h->mig.prefix);
}

void svm_pc_check_subnet(struct svm_pc_ctx *c, struct svm_pc_report *r)
{
  one(c->local, r);
  if (c->peer)
    one(c->peer, r);
}
