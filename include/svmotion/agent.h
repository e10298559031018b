/* svmotion — the host agent (svmd) as a library: datastores, VMs, one NBD export per disk with
 * changed-block tracking on the write path, and the control socket STATE/control.sock that
 * svmctl talks to (include/svmotion/client.h).
 *
 *   svm_agent_start(&cfg, &a);   lock STATE, scan the datastores, export every VM's disks,
 *                                open the control socket
 *   svm_agent_run(a, stop_fd);   serve control requests until stop_fd is readable
 *   svm_agent_stop(a);           close exports and trackers, remove the sockets, unlock
 */
#ifndef SVMOTION_AGENT_H
#define SVMOTION_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <svmotion/error.h>

#ifdef __cplusplus
extern "C" {
#endif

struct svm_agent;

struct svm_agent_config {
  const char *name;               /* host name (--name) */
  const char *state_dir;          /* --state: control.sock, nbd/, svmd.lock */
  size_t ndatastores;
  const char *const *datastores;  /* "NAME=DIR" each */
  const char *mgmt;               /* --mgmt ADDR:PORT: the peer link's listener */
  const char *migration;          /* --migration ADDR:PORT: the migration listener, bound */
  const char *migration_gw;       /* --migration-gateway GW: policy routing for migration */
  const char *tls_dir;            /* --tls-dir DIR: x509 credentials, QEMU layout (the peer
                                   * link, TCP exports' TLS) */
  const char *tls_psk;            /* --tls-psk FILE: identity:hexkey lines instead of tls_dir */
  bool insecure;                  /* --insecure: plaintext peer link and TCP exports (tests) */
  unsigned nfc_streams;           /* --nfc-streams N: TCP streams per file (0: 1) */
  uint64_t nfc_rate;              /* --nfc-rate: bytes/s cap of NFC copies (0: none) */
  const char *group;              /* --group G: G may use the control and NBD sockets too
                                   * (0660 sockets, 0710 directories of group G); NULL: only
                                   * root and svmd's own user (0600 sockets, 0700 dirs) */
};

int svm_agent_start(const struct svm_agent_config *cfg, struct svm_agent **out);
int svm_agent_run(struct svm_agent *a, int stop_fd);
void svm_agent_stop(struct svm_agent *a);

#ifdef __cplusplus
}
#endif
#endif
