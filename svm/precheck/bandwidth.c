/* svmctl precheck --bandwidth: a few seconds of bulk data over the migration network, TLS as a
 * move uses it, from the local migration interface to the peer's listener. */
#include <stdio.h>

#include <svmotion/cli.h>

#include "common/error.h"
#include "svm/precheck/precheck.h"

enum { BANDWIDTH_SECONDS = 3 };

void svm_pc_check_bandwidth(struct svm_pc_ctx *c, struct svm_pc_report *r)
{
  const struct svm_pc_host *l = c->local, *p = c->peer;
  unsigned long long bytes = 0;
  double secs = 0;
  char host[256], sz[32], rate[32];
  struct nfc_tls *t;
  int e;

  if (!c->bandwidth || !c->reach_ok)
    return;
  e = svm_net_dial(c->creds, &l->mig, p->mig.in, p->mig_port, "bandwidth", l->name, host,
                   sizeof host, &t);
  if (e == 0) {
    e = svm_net_bandwidth(t, BANDWIDTH_SECONDS, &bytes, &secs);
    svm_peer_hangup(t);
  }
  if (e < 0) {
    svm_pc_add(r, "bandwidth", SVM_PC_ERROR, "check the migration network's links and "
               "errors (ip -s link) on both hosts", "bandwidth probe from %s to %s:%u: %s",
               l->mig.addr, p->mig.addr, p->mig_port, svm_last_error());
    return;
  }
  svm_pc_add(r, "bandwidth", SVM_PC_OK, NULL, "%s/s from %s (%s) to %s over %s: %s in %.1f s",
             svm_size_format((uint64_t)(bytes / (secs > 0 ? secs : 1)), rate, sizeof rate),
             l->mig.addr, l->mig.name, p->mig.addr, nfc_tls_config_kind(c->creds->client),
             svm_size_format(bytes, sz, sizeof sz), secs);
}
