/* Internal to svm/agent: a live move between the agent's datastores, shared by the job
 * (move.c: the flow on its thread) and the table (moves.c: queue, limits, requests, status,
 * crash resolution). Every field is under a->mu unless said otherwise (internal.h). */
#ifndef SVM_AGENT_MOVE_H
#define SVM_AGENT_MOVE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "svm/agent/internal.h"
#include "svm/migrate/migrate.h"

enum {
  MOVES_KEPT = 16,                  /* finished moves that status still shows */
  STATUS_WAIT_MAX_MS = 1000,        /* the longest a status request waits for a move to end */
};
#define SWITCH_PAUSE_NS (5ull * 1000 * 1000 * 1000)   /* the longest drain at switchover */

enum move_state { MOVE_QUEUED, MOVE_RUNNING, MOVE_DONE, MOVE_FAILED, MOVE_CANCELLED };
extern const char *const agent_move_state_names[];

struct agent_move {
  struct agent_move *next;
  struct svm_agent *a;
  unsigned id;
  char vm[72];
  struct agent_vm *vmp;             /* referenced while queued or running */
  const struct svm_datastore *src_ds, *dst_ds;
  bool prov_same;
  enum svm_desc_prov prov;          /* when !prov_same */
  uint64_t rate;
  enum move_state state;
  const char *phase;
  bool cancel;                      /* asked; the job thread acts on it */
  bool copying;                     /* the mirrors are alive: status may ask them */
  unsigned ndisks;
  struct svm_move_disk *disks;
  uint64_t size;                    /* of all disks */
  uint64_t queued_ns, start_ns, end_ns;
  double downtime_ms;
  double drain_ms, switch_ms, commit_ms;   /* what the pause was spent on, for the log */
  uint64_t copy_ns, switch_ns;      /* when the copy and the switchover began, for the log */
  char error[1024];
};

struct agent_moves {
  char *dir;                        /* STATE/moves */
  struct agent_move *list;          /* in the order asked for */
  unsigned next_id;
  unsigned threads;                 /* job threads running */
  pthread_cond_t cv;                /* signalled when one ends */
  bool stopping;
  atomic_bool retire_stop;          /* svmd stops: old folders are left to the next start */
};

/* move.c */
void *agent_move_thread(void *opaque);      /* the job, started by the table */
uint64_t agent_move_now_ns(void);
void agent_move_free(struct agent_move *m);

/* moves.c: start what the limits allow, forget old finished moves (a->mu held) */
void agent_moves_schedule_locked(struct svm_agent *a);

#endif
