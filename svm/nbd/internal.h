/* Internal to the NBD server (export.c, nbd-handshake.c, nbd-conn.c). */
#ifndef SVM_NBD_INTERNAL_H
#define SVM_NBD_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "svm/nbd/export.h"
#include "svm/nbd/proto.h"

enum {
  NBD_MAX_PROVIDERS = 8,
  NBD_MAX_CONTEXTS = 16,        /* selected per connection */
  NBD_MAX_CLIENTS = 1024,       /* per export, handshaking or connected */
  NBD_MAX_LISTENERS = 8,
  NBD_HANDSHAKE_TIMEOUT_S = 30,
  NBD_DEFAULT_THREADS = 2,
  NBD_DEFAULT_DEPTH = 128,      /* requests started per thread */
  /* Slow write hooks (CBT first marks) run here, many at once, so that they share one
   * fdatasync: the more that wait together, the bigger the batch. 64 measured 38k IOPS against
   * 32k for 16 on 4 KiB random writes at iodepth 32 to fresh tracking (bench/nbd.sh). */
  NBD_HOOK_THREADS = 64,
};
/* A hook call slower than this sends the thread's hooks to the hook threads for a while. */
#define NBD_HOOK_SLOW_NS (100 * 1000ull)
#define NBD_HOOK_OFFLOAD_NS (20 * 1000 * 1000ull)

/* A meta context a connection selected; id = index in the connection's list. */
struct nbds_context {
  int provider;                 /* -1 = base:allocation, else index into e->providers */
  char *name;
};

/* What the handshake negotiated; handed over to the transmission phase. */
struct nbds_session {
  int fd;
  char peer[64];
  bool structured;
  unsigned ncontexts;
  struct nbds_context contexts[NBD_MAX_CONTEXTS];
};

struct nbds_worker;
struct nbds_req;

struct svm_export {
  char *name;
  unsigned nthreads, depth;
  _Atomic(struct svm_layer *) top;
  uint64_t size;

  /* write hook: changed only while paused */
  svm_write_hook hook;
  void *hook_opaque;

  /* providers: append-only, count published with release order */
  struct svm_meta_provider providers[NBD_MAX_PROVIDERS];
  char *provider_prefix[NBD_MAX_PROVIDERS];
  atomic_uint nproviders;

  /* pause/drain */
  atomic_int paused;            /* nesting depth */
  atomic_long inflight;         /* requests started and not yet answered */
  pthread_mutex_t pause_mu;
  pthread_cond_t pause_cv;
  uint64_t pause_start_ns;

  /* listeners and the acceptor */
  pthread_mutex_t mu;           /* listeners, handshakes, client count */
  int lfd[NBD_MAX_LISTENERS];
  char *lpath[NBD_MAX_LISTENERS];  /* unix socket to unlink at the end, or NULL */
  unsigned nlisteners;
  int acceptor_wake;            /* eventfd */
  pthread_t acceptor;
  bool stopping;
  unsigned handshaking;         /* threads in a handshake */
  int hs_fds[NBD_MAX_CLIENTS];  /* their sockets, shut down on free */
  pthread_cond_t hs_cv;
  atomic_uint clients;          /* handshaking + connected */
  unsigned next_worker;
  struct nbds_worker **workers;

  /* hook threads: a queue of requests whose hook is to run */
  pthread_mutex_t hook_mu;
  pthread_cond_t hook_cv;
  struct nbds_req *hook_head, *hook_tail;
  bool hook_stop, hook_started;
  unsigned nhook_threads;
  pthread_t hook_threads[NBD_HOOK_THREADS];

  atomic_ulong st_clients_total, st_requests, st_errors;
};

uint64_t nbds_now_ns(void);

/* One log line for a client: "PROG: nbd: client PEER: message". */
void nbds_log_client(const char *peer, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* nbd-handshake.c: run the whole handshake on a blocking socket. Returns 1 when transmission
 * starts (session filled), 0 when the client ended it cleanly (ABORT, or a LIST-only visit),
 * negative errno with svm_error set when the client must be dropped. */
int nbds_handshake(struct svm_export *e, struct nbds_session *s);
void nbds_session_clear(struct nbds_session *s);
/* Transmission flags the export advertises to this session. */
uint16_t nbds_export_tflags(const struct svm_export *e, bool structured);

/* nbd-conn.c: the I/O threads. */
int nbds_worker_new(struct svm_export *e, struct nbds_worker **out);
void nbds_worker_stop(struct nbds_worker *w);       /* joins, drops its clients */
/* Hand over a client after its handshake (takes ownership of the session's fd/contexts). */
int nbds_worker_add(struct nbds_worker *w, struct nbds_session *s);
void nbds_worker_wake(struct nbds_worker *w);

/* Hook threads (export.c queues, runs the hook, calls nbds_hook_done, nbd-conn.c). */
void nbds_hook_queue(struct svm_export *e, struct nbds_req *q);
void nbds_hook_done(struct nbds_req *q);
/* Run the hook for a queued request (nbd-conn.c knows the request's layout). */
void nbds_hook_run(struct svm_export *e, struct nbds_req *q);
struct nbds_req *nbds_hook_next(struct nbds_req *q);
void nbds_hook_set_next(struct nbds_req *q, struct nbds_req *next);

/* Export-side helpers used by connections. */
bool nbds_export_start_request(struct svm_export *e);   /* false: paused, retry later */
void nbds_export_end_request(struct svm_export *e);
void nbds_export_client_gone(struct svm_export *e);

#endif
