/* Check 8: a routed migration network needs a gateway of its own (--migration-gateway), or
 * migration traffic would follow the management default route - or none. */
#include <stdio.h>

#include "svm/precheck/precheck.h"

static bool one(const struct svm_pc_host *h, const struct svm_pc_host *other,
                struct svm_pc_report *r)
{
  char fix[768];

  if (svm_net_on_link(&h->mig, other->mig.in)) {
    svm_pc_add(r, "route", SVM_PC_OK, NULL, "host %s: %s is on %s's subnet (no router)",
               h->name, other->mig.addr, h->mig.name);
    return true;
  }
  if (!h->gw[0]) {
    snprintf(fix, sizeof fix, "start svmd on host %s with --migration-gateway GW, GW being "
             "the router of its migration network on %s", h->name, h->mig.name);
    svm_pc_add(r, "route", SVM_PC_ERROR, fix, "host %s: migration peer %s is not on %s's "
               "subnet %s/%u and no migration gateway is set", h->name, other->mig.addr,
               h->mig.name, h->mig.addr, h->mig.prefix);
    return false;
  }
  svm_pc_add(r, "route", SVM_PC_OK, NULL, "host %s: %s is routed through migration gateway "
             "%s on %s", h->name, other->mig.addr, h->gw, h->mig.name);
  return true;
}

void svm_pc_check_route(struct svm_pc_ctx *c, struct svm_pc_report *r)
{
  if (!c->net_ok)
    return;
  bool ok = one(c->local, c->peer, r);

  /* without a route the probes would only repeat this error */
  c->net_ok = one(c->peer, c->local, r) && ok;
}
