/* Check 2: each migration address is unique on its segment (RFC 5227 ARP probe, made by each
 * host for its own address). */
#include <stdio.h>

#include "svm/precheck/precheck.h"

static void one(const struct svm_pc_host *h, struct svm_pc_report *r)
{
  char fix[768];

  if (!h->mig_found || !h->mig.up)
    return;
  if (h->dup == 1) {
    snprintf(fix, sizeof fix, "give the host with MAC %s or host %s another address: a "
             "migration address must be unique on the segment", h->dup_mac, h->name);
    svm_pc_add(r, "address", SVM_PC_ERROR, fix,
               "host %s: migration address %s on %s is also used by %s (ARP probe answered)",
               h->name, h->mig.addr, h->mig.name, h->dup_mac);
  } else if (h->dup == 0) {
    svm_pc_add(r, "address", SVM_PC_OK, NULL, "host %s: %s is unique on %s's segment (ARP "
               "probe unanswered)", h->name, h->mig.addr, h->mig.name);
  } else {
    svm_pc_add(r, "address", SVM_PC_WARNING, "run svmd as root (CAP_NET_RAW) to check it",
               "host %s: could not probe %s for duplicates: %s", h->name, h->mig.addr,
               h->dup_err);
  }
}

void svm_pc_check_dup(struct svm_pc_ctx *c, struct svm_pc_report *r)
{
  one(c->local, r);
  if (c->peer)
    one(c->peer, r);
}
