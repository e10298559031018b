/* Internal: the prechecks of a move - every failure the field knows about the migration
 * network, the destination datastore and the CPUs, found before anything moves, each with the
 * fix in the operator's words (DESIGN.md, Prechecks).
 *
 * Both hosts describe themselves in a struct svm_pc_host: the local one directly, the peer's
 * through the peer link (INFO). The checks (one file each) compare them and probe the
 * migration network from the local migration interface; each adds report items. */
#ifndef SVM_PRECHECK_H
#define SVM_PRECHECK_H

#include <stdbool.h>
#include <stdint.h>

#include "svm/net/net.h"
#include "svm/peer/peer.h"

enum svm_pc_level { SVM_PC_OK, SVM_PC_WARNING, SVM_PC_ERROR };

enum {
  SVM_PC_MAX_ITEMS = 48,
  SVM_PC_RTT_WARN_US = 100000,      /* a warning from 100 ms of round trip on */
  SVM_PC_RTT_MAX_US = 150000,       /* the limit for live moves */
  SVM_PC_PROBE_MS = 1000,           /* one ICMP echo or ARP probe */
};

struct svm_pc_item {
  char check[16];
  enum svm_pc_level level;
  char found[1024];
  char fix[768];
};

struct svm_pc_report {
  unsigned n;
  struct svm_pc_item items[SVM_PC_MAX_ITEMS];
};

/* One item: what was found (printf-like) and the fix in the operator's words (NULL for ok). */
void svm_pc_add(struct svm_pc_report *r, const char *check, enum svm_pc_level level,
                const char *fix, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
bool svm_pc_failed(const struct svm_pc_report *r);
/* The report as text lines or one JSON object (malloc'd). */
int svm_pc_format(const struct svm_pc_report *r, const char *vm, const char *peer, bool json,
                  char **out);

/* What a host says about itself. */
struct svm_pc_host {
  char name[64];
  bool has_mig;                     /* svmd --migration given */
  unsigned mig_port;
  bool mig_found;                   /* an interface holds the migration address */
  struct svm_net_iface mig;
  char gw[INET_ADDRSTRLEN];         /* --migration-gateway, "" none */
  bool mgmt_found;
  struct svm_net_iface mgmt;
  int dup;                          /* 1 duplicate, 0 unique, -1 not checked */
  char dup_mac[18];
  char dup_err[256];
  char ds[64];
  bool ds_found, ds_writable;
  uint64_t ds_free;
  char ds_err[256];
  char *cpu;                        /* /proc/cpuinfo flags, space-separated (malloc'd) */
};

/* This host. mgmt, migration: "ADDR:PORT" or NULL; ds_dir NULL: no such datastore. */
int svm_pc_host_collect(struct svm_pc_host *h, const char *name, const char *mgmt,
                        const char *migration, const char *gw, const char *ds_name,
                        const char *ds_dir);
void svm_pc_host_clear(struct svm_pc_host *h);
int svm_pc_host_to_msg(const struct svm_pc_host *h, struct svm_peer_msg *m);
int svm_pc_host_from_msg(struct svm_pc_host *h, const struct svm_peer_msg *m);

/* What the checks share: both hosts, and what the probes found on the way. */
struct svm_pc_ctx {
  const struct svm_pc_host *local, *peer;
  const struct svm_peer_creds *creds;
  const char *vm;
  uint64_t need;                    /* bytes the VM needs on the destination */
  const char *provisioning;
  bool net_ok;                      /* both migration interfaces usable: probe them */
  bool reach_ok;                    /* the peer's migration listener answered */
  unsigned rtt_us;                  /* 0: not measured */
  bool bandwidth;
  bool cold;                        /* for a cold move: the migration network only when this
                                       host has one (the move itself does not use it) */
};

/* The whole run: local and peer (NULL without --host). peer_err: why the peer link failed
 * ("" when peer is given). */
void svm_pc_run(struct svm_pc_ctx *c, const char *peer_link, const char *peer_identity,
                const char *peer_kind, const char *peer_err, int peer_errno,
                struct svm_pc_report *r);

/* The checks, in the order they run. */
void svm_pc_check_iface(struct svm_pc_ctx *c, struct svm_pc_report *r);
void svm_pc_check_dup(struct svm_pc_ctx *c, struct svm_pc_report *r);
void svm_pc_check_subnet(struct svm_pc_ctx *c, struct svm_pc_report *r);
void svm_pc_check_route(struct svm_pc_ctx *c, struct svm_pc_report *r);
void svm_pc_check_reach(struct svm_pc_ctx *c, struct svm_pc_report *r);
void svm_pc_check_rtt(struct svm_pc_ctx *c, struct svm_pc_report *r);
void svm_pc_check_mtu(struct svm_pc_ctx *c, struct svm_pc_report *r);
void svm_pc_check_vlan(struct svm_pc_ctx *c, struct svm_pc_report *r);
void svm_pc_check_datastore(struct svm_pc_ctx *c, struct svm_pc_report *r);
void svm_pc_check_cpu(struct svm_pc_ctx *c, struct svm_pc_report *r);
void svm_pc_check_bandwidth(struct svm_pc_ctx *c, struct svm_pc_report *r);

#endif
