/* Internal to the agent (svm/agent*.c).
 *
 * Threads: control requests are served concurrently, one thread each (svm/control/server.h),
 * and moves run on job threads (move.c). `a->mu` guards the VM list, every field of every VM
 * and disk below, and the move table: short commands (vm list, status, cbt query) run
 * entirely under it. Long work runs outside it: a command takes a reference on its VM
 * (vm->refs) under the lock, drops the lock, works, and gives the reference back; a VM with
 * references or a move is never deleted (vm delete answers EBUSY). vm->op_mu serializes what
 * drains a VM's exports and acts on its trackers (a change ID, a move's switchover), so a
 * change ID never lands between a tracker's copy and its switch. Fields a switchover changes
 * (paths, dir, datastore, tracker) change with both op_mu and a->mu held.
 * Export I/O threads reach a disk only through the tracking layer (the tracker) and the meta
 * context provider (the agent_disk); a disk is freed only after its export has been freed
 * (which joins those threads). */
#ifndef SVM_AGENT_INTERNAL_H
#define SVM_AGENT_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <svmotion/agent.h>

#include "svm/control/proto.h"
#include "svm/agent/datastore.h"
#include "svm/agent/descriptor.h"
#include "svm/peer/peer.h"
#include "svm/net/net.h"

struct cbt;
struct svm_export;
struct svm_control;

struct agent_vm;

struct agent_disk {
  struct agent_vm *vm;
  unsigned index;
  char *path;             /* the disk file, absolute */
  char *ctk_path;
  char *export_name;      /* "VM/diskN" */
  char *sock_path;        /* STATE/nbd/VM-diskN.sock */
  char tcp_addr[64];      /* host part of export.tcp, "" when not exported over TCP */
  char tcp_port[16];      /* the bound port */
  bool tcp_tls;           /* TCP clients must use TLS (svmd --tls-dir): nbds:// */
  struct cbt *cbt;
  struct svm_export *export;
};

struct agent_move;

struct agent_vm {
  struct agent_vm *next;
  unsigned refs;          /* long operations using the VM outside a->mu (a host
                             move holds one while it runs) */
  struct agent_move *move;   /* its move, queued or running, else NULL */
  pthread_mutex_t op_mu;  /* see the top */
  const struct svm_datastore *ds;
  char *dir;              /* DS/VM */
  char *desc_path;        /* DS/VM/VM.svm */
  struct svm_desc *desc;
  unsigned ndisks;
  struct agent_disk *disks;
};

struct nfc_tls_config;
/* A VM found on a datastore that svmd does not serve (degraded.c). */
struct agent_degraded {
  struct agent_degraded *next;
  const struct svm_datastore *ds;
  char *name, *dir;
  char *reason;           /* the error that stopped it, naming the file */
};

struct svm_agent {
  char *name;
  char *state_dir;
  char *nbds_dir;
  char *mgmt, *migration, *tls_dir, *tls_psk;
  bool insecure;
  unsigned nfc_streams;           /* --nfc-streams */
  uint64_t nfc_rate;              /* --nfc-rate, bytes/s, 0: none */
  /* The peer link (peer.c) and host moves (hostmove.c) run on threads of their own: they take
   * mu (below) to touch the VM list or a VM. */
  struct svm_peer_creds creds;
  bool have_creds;
  struct svm_peer_server *peer;
  struct agent_hostmoves *hostmoves;
  struct nfc_tls_config *nbd_tls;   /* --tls-dir's server credentials: TCP exports' STARTTLS */
  gid_t group;            /* --group, or SVM_NO_GROUP */
  /* The migration network (precheck.c): --migration-gateway, the listener, the interface. */
  char *migration_gw;
  struct svm_net_server *mig_server;
  struct svm_net_iface mig_iface;
  bool gw_installed;
  size_t nds;
  struct svm_datastore *ds;
  struct agent_vm *vms;
  struct agent_degraded *degraded;
  int lock_fd;
  struct svm_control *control;
  pthread_mutex_t mu;     /* see the top */
  struct agent_name *creating;   /* names of VMs being created (outside the lock) */
  struct agent_moves *moves;     /* move.c */
};

struct agent_name {
  struct agent_name *next;
  char name[72];
};

void agent_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* agent.c: a reference on a VM for work outside a->mu (called with a->mu held) */
void agent_vm_ref(struct agent_vm *vm);
void agent_vm_unref(struct agent_vm *vm);

/* peer.c: svmd --mgmt and the destination of host moves */
int agent_peer_start(struct svm_agent *a);       /* credentials, stale staging folders, server */
void agent_peer_stop(struct svm_agent *a);
int agent_peer_clean_incoming(struct svm_agent *a);
uint64_t agent_ds_free(const struct svm_datastore *ds);
/* Remove a folder's regular files and the folder (ENOENT is success). */
int agent_remove_folder(const char *dir);

/* hostmove.c: cold moves to another host (the source side) */
struct agent_hostmoves;
int agent_hostmove_start(struct svm_agent *a, const struct svm_ctl_request *r, bool json,
                         char **out);             /* a->mu held */
/* Host moves are numbered from AGENT_HOSTMOVE_ID_BASE + 1 (datastore moves from 1): `status
 * id=N` tells them apart. */
enum { AGENT_HOSTMOVE_ID_BASE = 1000000 };
/* Cancel VM's running host move: its record in *out; -ENOENT (no message) when none runs. */
int agent_hostmove_cancel(struct svm_agent *a, const char *vm, bool json, char **out);
/* The moves as JSON objects (comma-separated, *first tracks the comma) or text lines. */
void agent_hostmove_status(struct svm_agent *a, bool json, FILE *f, bool *first);
int agent_hostmove_show(struct svm_agent *a, unsigned id, bool json, char **out);
void agent_hostmoves_stop(struct svm_agent *a);  /* a->mu not held */
bool agent_hostmove_running(struct svm_agent *a, const char *vm);   /* a->mu held */
/* Explicit modes whatever the umask: a directory on the way to a socket 0700, a socket 0600;
 * with --group 0710 and 0660, group G. */
int agent_set_access(struct svm_agent *a, const char *path, bool dir);

/* precheck.c: the migration listener, the prechecks, the peer link's INFO */
struct svm_pc_report;
int agent_net_start(struct svm_agent *a);
void agent_net_stop(struct svm_agent *a);
int agent_precheck_info(void *opaque, const struct svm_peer_msg *req, struct svm_peer_msg *reply);
/* A report for VM to datastore DS (of host ADDR:PORT, or here when host is NULL). cold: for a
 * cold move (the migration network checked only when this host has one). */
int agent_precheck(struct svm_agent *a, const char *vm, const char *ds, const char *host,
                   const char *prov, bool bandwidth, bool cold, struct svm_pc_report *rep);

/* The prechecks before a move (migrate): -errno naming every error and its fix. */
int agent_precheck_gate(struct svm_agent *a, const struct svm_ctl_request *r);

/* vm.c */
struct agent_vm *agent_find_vm(struct svm_agent *a, const char *name);
const struct svm_datastore *agent_find_ds(struct svm_agent *a, const char *name);
/* Take over a parsed descriptor: open the disks' trackers and exports. On failure nothing of
 * the VM stays open and desc is freed. */
int agent_vm_open(struct svm_agent *a, const struct svm_datastore *ds, const char *dir,
                  const char *desc_path, struct svm_desc *desc, struct agent_vm **out);
void agent_vm_close(struct agent_vm *vm);
/* Takes a->mu itself (the files are made outside it); on success *out carries a reference. */
int agent_vm_create(struct svm_agent *a, const struct svm_ctl_request *r, struct agent_vm **out);
int agent_vm_delete(struct svm_agent *a, const char *name);
/* Unlink the VM from the agent's list (a->mu held); it stays allocated. */
void agent_vm_unlink(struct svm_agent *a, struct agent_vm *vm);

/* confine.c: `name` inside the folder `dir`, not following a symbolic link, never opening it
 * (so a FIFO or a device cannot block or react): 0 for a regular file (its stat in *st when
 * st is not NULL), 0 for a missing one when may_be_missing, else an error naming DIR/NAME and
 * what it is ("is a FIFO, not a regular file", "is a symbolic link"). */
struct stat;
int agent_check_file(const char *dir, const char *name, bool may_be_missing, struct stat *st);

/* degraded.c */
void agent_degraded_add(struct svm_agent *a, const struct svm_datastore *ds, const char *dir,
                        const char *name, const char *reason);
struct agent_degraded *agent_degraded_find(struct svm_agent *a, const char *name);
void agent_degraded_free_all(struct svm_agent *a);
void agent_degraded_json(FILE *f, const struct agent_degraded *g);
void agent_degraded_text(FILE *f, const struct agent_degraded *g);

/* disk.c: the disk's tracker and export */
int agent_disk_start(struct svm_agent *a, struct agent_disk *d);
void agent_disk_stop(struct agent_disk *d);
/* NBD clients connected to the disk's export now (0 when it is not exported). */
uint64_t agent_disk_clients(struct agent_disk *d);
int agent_cbt_changeid(struct agent_disk *d, bool json, char **out);
/* One page of the answer: at most `limit` extents from byte `cursor` on (proto.h). */
int agent_cbt_query(struct agent_disk *d, const char *since, uint64_t cursor, size_t limit,
                    bool json, char **out);
/* The disk's CBT state for vm list/show: writes JSON members ("granularity": ..., ...) */
void agent_disk_cbt_json(struct agent_disk *d, FILE *f);

/* move.c: live moves between datastores (svm/migrate), their queue and the crash journal */
int agent_moves_init(struct svm_agent *a);       /* before the scan: resolves crashed moves */
void agent_moves_stop(struct svm_agent *a);      /* cancels and joins every move */
int agent_move_start(struct svm_agent *a, const struct svm_ctl_request *r, bool json,
                     char **out);                 /* a->mu held */
int agent_move_cancel(struct svm_agent *a, const char *vm, bool json, char **out);
/* wait_ms: with id, answer once that move has ended or after wait_ms (0: at once) */
int agent_move_status(struct svm_agent *a, const char *id, uint64_t wait_ms, bool json,
                      char **out);

/* json.c: answers as JSON or text */
int agent_out_vm_list(struct svm_agent *a, bool json, char **out);
int agent_out_vm(struct svm_agent *a, struct agent_vm *vm, bool json, char **out);
int agent_out_degraded(const struct agent_degraded *g, bool json, char **out);
void agent_json_str(FILE *f, const char *s);

#endif
