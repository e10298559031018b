/* svmctl precheck VM --datastore DS [--host ADDR:PORT] [--bandwidth] [--json]: svmd runs the
 * prechecks (svm/precheck) with the peer's agent over the peer link; this prints the report
 * and exits 1 when a check is an error. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <svmotion/client.h>

#include "tools/svmctl/svmctl.h"

static const char precheck_help[] =
  "Usage: svmctl precheck VM --datastore DS [--host ADDR:PORT]\n"
  "                       [--provisioning same|thin|thick|eager-zeroed-thick]\n"
  "                       [--bandwidth] [--json]\n"
  "Checks, before a move of VM to datastore DS (of the agent at ADDR:PORT, its svmd --mgmt),\n"
  "everything that is known to make moves fail: the migration interfaces of both hosts\n"
  "(present, up, addressed, unique on the segment), reachability over the migration network\n"
  "(TCP and TLS to the peer's --migration listener, ICMP echo), round trip (150 ms limit,\n"
  "warning from 100 ms), path MTU (don't-fragment probes), VLAN IDs, management and migration\n"
  "sharing a subnet, a routed migration network without --migration-gateway, the peer's TLS\n"
  "identity, free space and writability of the datastore, CPU compatibility.\n"
  "One line per check: ok, warning or error, what was found, and the fix. --bandwidth also\n"
  "sends a few seconds of TLS traffic over the migration network and reports the rate.\n"
  "Exit codes: 0 no error (warnings allowed), 1 a check failed, 2 usage error.\n";

int svmctl_precheck(const char *state, int argc, char **argv)
{
  const char *vm = NULL, *ds = NULL, *host = NULL, *prov = NULL;
  const char *keys[7], *vals[7];
  bool json = false, bw = false;
  struct svm_client *c;
  char *payload = NULL;
  size_t k = 0;
  int r;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char **slot = strcmp(a, "--datastore") == 0      ? &ds
                        : strcmp(a, "--host") == 0         ? &host
                        : strcmp(a, "--provisioning") == 0 ? &prov
                                                           : NULL;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(precheck_help, stdout);
      return 0;
    } else if (strcmp(a, "--json") == 0) {
      json = true;
    } else if (strcmp(a, "--bandwidth") == 0) {
      bw = true;
    } else if (slot) {
      if (i + 1 >= argc) {
        fprintf(stderr, "svmctl: precheck: option '%s' needs a value (see svmctl precheck "
                "--help)\n", a);
        return 2;
      }
      *slot = argv[++i];
    } else if (a[0] == '-' || vm) {
      fprintf(stderr, "svmctl: precheck: unexpected argument '%s' (see svmctl precheck "
              "--help)\n", a);
      return 2;
    } else {
      vm = a;
    }
  }
  if (!vm || !ds) {
    fprintf(stderr, "svmctl: precheck: %s (see svmctl precheck --help)\n",
            !vm ? "expects a VM name" : "needs --datastore DS");
    return 2;
  }
  if (!state || !*state) {
    fprintf(stderr, "svmctl: no state directory: give --state DIR or set SVM_STATE\n");
    return 2;
  }
  keys[k] = "vm", vals[k++] = vm;
  keys[k] = "datastore", vals[k++] = ds;
  if (host)
    keys[k] = "host", vals[k++] = host;
  if (prov)
    keys[k] = "provisioning", vals[k++] = prov;
  if (bw)
    keys[k] = "bandwidth", vals[k++] = "1";
  keys[k] = "format", vals[k++] = json ? "json" : "text";
  /* The probes take a few seconds (the bandwidth probe three more): say so on a terminal. */
  if (isatty(STDERR_FILENO))
    fprintf(stderr, "svmctl: checking the move of VM %s%s%s (a few seconds%s)...\n", vm,
            host ? " to " : "", host ? host : "", bw ? ", 3 more for --bandwidth" : "");
  r = svm_client_connect(state, &c);
  if (r == 0) {
    r = svm_client_call(c, "precheck", k, keys, vals, &payload);
    svm_client_close(c);
  }
  if (r < 0) {
    fprintf(stderr, "svmctl: %s\n", svm_last_error());
    return 1;
  }
  fputs(payload, stdout);
  if (json)
    fputc('\n', stdout);
  /* an error line: "error   ..." first on a line of text, "result": "error" in JSON */
  r = json ? strstr(payload, "\"result\": \"error\"") != NULL
           : strncmp(payload, "error ", 6) == 0 || strstr(payload, "\nerror ") != NULL;
  free(payload);
  return r ? 1 : 0;
}
