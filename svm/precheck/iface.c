/* Check 1: the migration interface exists, is up and has its address, on both hosts. */
#include <stdio.h>

#include "svm/precheck/precheck.h"

static bool one(const struct svm_pc_host *h, struct svm_pc_report *r)
{
  char fix[768];

  if (!h->has_mig) {
    snprintf(fix, sizeof fix, "start svmd on host %s with --migration ADDR:PORT, ADDR being "
             "the address of its migration interface", h->name);
    svm_pc_add(r, "interface", SVM_PC_ERROR, fix,
               "host %s: svmd runs without a migration interface (--migration)", h->name);
    return false;
  }
  if (!h->mig_found) {
    snprintf(fix, sizeof fix, "add the address to host %s's migration interface (ip addr "
             "add %s/PREFIX dev IFACE), or start svmd there with the --migration address it "
             "has", h->name, h->mig.addr);
    svm_pc_add(r, "interface", SVM_PC_ERROR, fix,
               "host %s: no interface holds the migration address %s", h->name, h->mig.addr);
    return false;
  }
  if (!h->mig.up) {
    snprintf(fix, sizeof fix, "bring it up on host %s: ip link set dev %s up (and check its "
             "link: cable, switch port)", h->name, h->mig.name);
    svm_pc_add(r, "interface", SVM_PC_ERROR, fix,
               "host %s: migration interface %s (%s/%u) is down", h->name, h->mig.name,
               h->mig.addr, h->mig.prefix);
    return false;
  }
  svm_pc_add(r, "interface", SVM_PC_OK, NULL, "host %s: migration interface %s %s/%u up, MTU %u",
             h->name, h->mig.name, h->mig.addr, h->mig.prefix, h->mig.mtu);
  return true;
}

void svm_pc_check_iface(struct svm_pc_ctx *c, struct svm_pc_report *r)
{
  bool ok;

  if (c->cold && !c->local->has_mig) {
    c->net_ok = false;
    return;
  }
  ok = one(c->local, r);

  if (c->peer)
    ok = one(c->peer, r) && ok;
  c->net_ok = ok && c->peer;
}
