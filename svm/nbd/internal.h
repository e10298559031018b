/* Internal to the NBD server: export.c (the export: listeners, the acceptor, handshake
 * threads, providers, pause/resume/swap/flush), handshake.c, worker.c (the I/O threads),
 * conn.c (a client's requests), reply.c (replies and BLOCK_STATUS). */
#ifndef SVM_NBD_INTERNAL_H
#define SVM_NBD_INTERNAL_H

#include <pthread.h>
#include <poll.h>
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
  NBD_IN_SIZE = 128 * 1024,             /* per-client receive buffer */
  NBD_CONN_MAX_INFLIGHT = 128,          /* started, unanswered requests per client */
  NBD_CONN_MAX_OUT = 64 * 1024 * 1024,  /* queued reply bytes before we stop reading */
};
/* svm_export_swap() without a pause of the caller's own waits this long for in-flight requests
 * (a parked request, e.g. on a hung destination, must not hang the caller for ever). */
#define NBD_SWAP_DRAIN_NS (60ull * 1000 * 1000 * 1000)

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

struct nbds_conn;
struct nbds_worker;

/* A request, from its header to its reply. */
struct nbds_req {
  struct nbds_req *next;            /* out queue */
  struct nbds_conn *c;
  struct svm_layer *top;            /* the stack it runs on (fixed while it is in flight) */
  struct nbds_request r;
  uint32_t err;                     /* NBD error decided before running (validation) */
  uint32_t got;                     /* WRITE payload bytes received */
  uint8_t hdr[32];
  size_t hdrlen;
  void *buf;                        /* READ data, WRITE payload, BLOCK_STATUS chunks */
  size_t buflen;                    /* bytes of buf that go out in the reply */
  size_t sent;                      /* of hdr + buf */
};

/* A client in the transmission phase; touched only by its worker's thread. */
struct nbds_conn {
  struct nbds_worker *w;
  struct svm_export *e;
  struct nbds_session s;
  struct nbds_limits lim;
  uint8_t *in;
  size_t in_start, in_end;
  struct nbds_req *rd;              /* WRITE whose payload is arriving */
  struct nbds_req *ready;           /* complete, waiting for room or for resume */
  struct nbds_req *out_head, *out_tail;
  size_t out_bytes;
  unsigned inflight;
  unsigned errors_logged;
  bool eof;                         /* read no more: DISC or end of stream */
  bool dead;                        /* drop: no more output, close when idle */
};

/* An I/O thread: its engine, its clients, its poll() loop. */
struct nbds_worker {
  struct svm_export *e;
  struct svm_io *io;
  pthread_t thread;
  int wake;                         /* eventfd */
  pthread_mutex_t mu;
  struct nbds_session *incoming;    /* handed over by handshake threads */
  unsigned nincoming, incoming_cap;
  bool stop;
  struct nbds_conn **conns;
  unsigned nconns, conns_cap;
  unsigned active, max_active;      /* requests started and not yet answered */
  struct pollfd *pfd;
  unsigned pfd_cap;
  uint64_t busy_poll_ns;            /* how long to keep polling without sleeping (0: never) */
  uint64_t busy_until;              /* CLOCK_MONOTONIC ns: poll without sleeping until then */
};

struct svm_export {
  char *name;
  unsigned nthreads, depth;
  uint64_t busy_poll_ns;        /* see worker.c: SVM_NBD_BUSY_POLL_US, default 50 us */
  _Atomic(struct svm_layer *) top;
  uint64_t size;

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
  pthread_mutex_t swap_mu;      /* the stack's exchange, against svm_export_flush */

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

  atomic_ulong st_clients_total, st_requests, st_errors;
};

uint64_t nbds_now_ns(void);

/* One log line for a client: "PROG: nbd: client PEER: message". */
void nbds_log_client(const char *peer, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* handshake.c: run the whole handshake on a blocking socket. Returns 1 when transmission
 * starts (session filled), 0 when the client ended it cleanly (ABORT, or a LIST-only visit),
 * negative errno with svm_error set when the client must be dropped. */
int nbds_handshake(struct svm_export *e, struct nbds_session *s);
void nbds_session_clear(struct nbds_session *s);
/* Transmission flags the export advertises to this session. */
uint16_t nbds_export_tflags(const struct svm_export *e, bool structured);

/* worker.c: the I/O threads. */
int nbds_worker_new(struct svm_export *e, struct nbds_worker **out);
void nbds_worker_stop(struct nbds_worker *w);       /* joins, drops its clients */
/* Hand over a client after its handshake (takes ownership of the session's fd/contexts). */
int nbds_worker_add(struct nbds_worker *w, struct nbds_session *s);
void nbds_worker_wake(struct nbds_worker *w);

/* conn.c: a client's requests, on its worker's thread. */
struct nbds_conn *nbds_conn_new(struct nbds_worker *w, const struct nbds_session *s);
/* Parse and start what the receive buffer holds; true when a request waits for room. */
bool nbds_conn_process(struct nbds_conn *c);
bool nbds_conn_wants_input(const struct nbds_conn *c);
void nbds_conn_read(struct nbds_conn *c);
bool nbds_conn_finished(const struct nbds_conn *c);   /* nothing of it in flight any more */
void nbds_conn_free(struct nbds_conn *c);
void nbds_conn_log(struct nbds_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Fatal for this client only: log once, stop reading and writing, close when idle. */
void nbds_conn_kill(struct nbds_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* reply.c: answers. */
void nbds_req_free(struct nbds_req *q);
void nbds_reply_error(struct nbds_conn *c, struct nbds_req *q, uint32_t err);
/* The I/O of a started request completed (or failed to start): answer it (an svm_io_cb). */
void nbds_req_done(void *opaque, int64_t res);
/* Fill q's BLOCK_STATUS reply chunks for every context the client selected. */
int nbds_block_status(struct nbds_conn *c, struct svm_layer *top, struct nbds_req *q);
void nbds_conn_send(struct nbds_conn *c);             /* queued replies, one sendmsg() */

/* export.c: helpers used by connections and listeners. */
bool nbds_export_start_request(struct svm_export *e);   /* false: paused, retry later */
void nbds_export_end_request(struct svm_export *e);
void nbds_export_client_gone(struct svm_export *e);

#endif
