/* Check 5: the VLAN IDs of both migration interfaces. */
#include <stdio.h>

#include "svm/precheck/precheck.h"

static const char *vlan_str(int id, char *buf, size_t len)
{
  if (id < 0)
    return "untagged";
  snprintf(buf, len, "VLAN %d", id);
  return buf;
}

void svm_pc_check_vlan(struct svm_pc_ctx *c, struct svm_pc_report *r)
{
  const struct svm_pc_host *l = c->local, *p = c->peer;
  char a[24], b[24], fix[512];

  if (!c->net_ok)
    return;
  if (l->mig.vlan != p->mig.vlan) {
    snprintf(fix, sizeof fix, "put both migration interfaces on the same VLAN (e.g. %s on "
             "host %s as on host %s)", vlan_str(l->mig.vlan, a, sizeof a), p->name, l->name);
    svm_pc_add(r, "vlan", SVM_PC_ERROR, fix, "VLAN IDs differ: host %s %s %s, host %s %s %s",
               l->name, l->mig.name, vlan_str(l->mig.vlan, a, sizeof a), p->name, p->mig.name,
               vlan_str(p->mig.vlan, b, sizeof b));
    return;
  }
  svm_pc_add(r, "vlan", SVM_PC_OK, NULL, "both migration interfaces %s",
             vlan_str(l->mig.vlan, a, sizeof a));
}
