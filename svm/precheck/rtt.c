/* Check 6: the round trip against the 150 ms limit of live moves (a warning from 100 ms). */
#include <stdio.h>

#include "svm/precheck/precheck.h"

void svm_pc_check_rtt(struct svm_pc_ctx *c, struct svm_pc_report *r)
{
  double ms = c->rtt_us / 1000.0;

  if (!c->rtt_us)
    return;
  if (c->rtt_us >= SVM_PC_RTT_MAX_US)
    svm_pc_add(r, "rtt", SVM_PC_ERROR, "a live move needs a round trip under 150 ms: move "
               "the VM cold, or choose a closer host or a faster migration link",
               "round trip %.2f ms to %s: over the 150 ms limit of live moves", ms,
               c->peer->mig.addr);
  else if (c->rtt_us >= SVM_PC_RTT_WARN_US)
    svm_pc_add(r, "rtt", SVM_PC_WARNING, "expect long switchovers; a closer host or a faster "
               "migration link keeps it under 100 ms",
               "round trip %.2f ms to %s: close to the 150 ms limit of live moves", ms,
               c->peer->mig.addr);
  else
    svm_pc_add(r, "rtt", SVM_PC_OK, NULL, "round trip %.2f ms to %s (limit 150 ms)", ms,
               c->peer->mig.addr);
}
