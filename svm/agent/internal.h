/* Internal to the agent (svm/agent*.c).
 *
 * Threads: the VM list and every field below are changed only by the thread running
 * svm_agent_run (control requests are served one at a time). Export I/O threads reach a disk
 * only through the tracking layer (the tracker) and the meta context provider (the agent_disk);
 * a disk is freed only after its export has been freed (which joins those threads). */
#ifndef SVM_AGENT_INTERNAL_H
#define SVM_AGENT_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <svmotion/agent.h>

#include "svm/control/proto.h"
#include "svm/agent/datastore.h"
#include "svm/agent/descriptor.h"

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

struct agent_vm {
  struct agent_vm *next;
  const struct svm_datastore *ds;
  char *dir;              /* DS/VM */
  char *desc_path;        /* DS/VM/VM.svm */
  struct svm_desc *desc;
  unsigned ndisks;
  struct agent_disk *disks;
};

struct nfc_tls_config;

struct svm_agent {
  char *name;
  char *state_dir;
  char *nbds_dir;
  char *mgmt, *migration, *tls_dir;
  bool insecure;
  struct nfc_tls_config *nbd_tls;   /* --tls-dir's server credentials: TCP exports' STARTTLS */
  size_t nds;
  struct svm_datastore *ds;
  struct agent_vm *vms;
  int lock_fd;
  struct svm_control *control;
};

void agent_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* vm.c */
struct agent_vm *agent_find_vm(struct svm_agent *a, const char *name);
const struct svm_datastore *agent_find_ds(struct svm_agent *a, const char *name);
/* Take over a parsed descriptor: open the disks' trackers and exports. On failure nothing of
 * the VM stays open and desc is freed. */
int agent_vm_open(struct svm_agent *a, const struct svm_datastore *ds, const char *dir,
                  const char *desc_path, struct svm_desc *desc, struct agent_vm **out);
void agent_vm_close(struct agent_vm *vm);
int agent_vm_create(struct svm_agent *a, const struct svm_ctl_request *r, struct agent_vm **out);
int agent_vm_delete(struct svm_agent *a, const char *name);

/* disk.c: the disk's tracker and export */
int agent_disk_start(struct svm_agent *a, struct agent_disk *d);
void agent_disk_stop(struct agent_disk *d);
int agent_cbt_changeid(struct agent_disk *d, bool json, char **out);
int agent_cbt_query(struct agent_disk *d, const char *since, bool json, char **out);
/* The disk's CBT state for vm list/show: writes JSON members ("granularity": ..., ...) */
void agent_disk_cbt_json(struct agent_disk *d, FILE *f);

/* json.c: answers as JSON or text */
int agent_out_vm_list(struct svm_agent *a, bool json, char **out);
int agent_out_vm(struct svm_agent *a, struct agent_vm *vm, bool json, char **out);
void agent_json_str(FILE *f, const char *s);

#endif
