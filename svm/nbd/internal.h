/* Internal to the NBD server: export.c (the export: listeners, handshake threads, providers,
 * pause/resume/swap/flush), pool.c (the process-wide acceptor and I/O threads), handshake.c,
 * worker.c (an I/O thread), conn.c (a client's requests), reply.c (replies and BLOCK_STATUS),
 * log.c (escaped, rate-limited log lines). */
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
  /* Connections per listener (handshaking + connected). Each listener counts its own, so
   * clients of a TCP listener can never take the places of the local unix-socket guests. A
   * unix socket is the VM's own hypervisor plus local tools (nbdcopy opens 4, tests open a few
   * hundred); TCP is remote readers (backup, a migration peer). Past the limit, the listener is
   * not polled: new connections wait in the kernel's backlog until a client leaves. */
  NBD_LISTENER_MAX_UNIX = 256,
  NBD_LISTENER_MAX_TCP = 64,
  /* The whole handshake, and each request's header + payload once its first byte arrived,
   * must be in by these deadlines (SVM_NBD_HANDSHAKE_TIMEOUT_S, SVM_NBD_REQUEST_TIMEOUT_S). */
  NBD_HANDSHAKE_TIMEOUT_S = 30,
  NBD_REQUEST_TIMEOUT_S = 60,
  NBD_DEFAULT_THREADS = 2,      /* I/O threads of the process-wide pool (SVM_NBD_THREADS) */
  NBD_DEFAULT_DEPTH = 128,      /* requests started per thread */
  NBD_IN_SIZE = 128 * 1024,             /* per-client receive buffer */
  /* Per client: requests received and not yet fully answered, and the bytes they hold (READ
   * buffers, WRITE payloads, queued replies). A client at either cap is not read until it
   * takes its replies, so one that never reads them holds at most this much of the server.
   * 64 requests: twice a qd32 client's, and nbdcopy's default --requests, so neither ever
   * waits on it (qemu-nbd allows 16). 64 MiB: a qd32 client of 1 MiB requests with room to
   * spare, and always one request of the maximum size (32 MiB). */
  NBD_CONN_MAX_REQUESTS = 64,
  NBD_CONN_MAX_BYTES = 64 * 1024 * 1024,
  /* Log lines per client (and per listener for refusals): a burst, then one a second. */
  NBD_LOG_BURST = 10,
  /* An export going away whose clients still have requests in flight after this long says so
   * (svm_export_free): a hung datastore, named before svmd's --stop-timeout ends it. */
  NBD_DROP_WARN_S = 5,
};
/* svm_export_swap() without a pause of the caller's own waits this long for in-flight requests
 * (a parked request, e.g. on a hung destination, must not hang the caller for ever). */
#define NBD_SWAP_DRAIN_NS (60ull * 1000 * 1000 * 1000)

/* A meta context a connection selected; id = index in the connection's list. */
struct nbds_context {
  int provider;                 /* -1 = base:allocation, else index into e->providers */
  char *name;
};

struct nbds_listener;
struct nfc_tls;
struct nfc_tls_config;

/* What the handshake negotiated; handed over to the transmission phase. */
struct nbds_session {
  int fd;
  struct svm_export *e;
  struct nbds_listener *l;      /* it came through this one (its connection count) */
  uint64_t deadline_ns;         /* the handshake's, CLOCK_MONOTONIC */
  struct nfc_tls *tls;          /* after STARTTLS: all I/O goes through it (owned) */
  bool tls_required;            /* a TCP client of an export with TLS */
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
  size_t held;                      /* bytes counted in c->bytes while q lives */
};

/* Log rate limit: NBD_LOG_BURST lines, then one a second; the rest are counted and the next
 * line that passes says how many were left out. Not thread-safe: one owner thread. */
struct nbds_ratelimit {
  uint64_t window_ns;
  unsigned n;
  unsigned suppressed;
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
  unsigned nreqs;                   /* received, not yet fully answered (freed) */
  size_t bytes;                     /* their buffers and replies (nbds_req.held) */
  unsigned inflight;                /* started and not yet answered */
  unsigned errors_logged;
  uint64_t deadline_ns;             /* a partly received request must be in by then (0: none) */
  struct nbds_ratelimit rl;
  short rd_events, wr_events;       /* what reading / sending waits for (TLS may swap them) */
  bool eof;                         /* read no more: DISC or end of stream */
  bool dead;                        /* drop: no more output, close when idle */
};

/* An I/O thread of the process-wide pool (pool.c): its engine, its clients (of any export),
 * its poll() loop. */
struct nbds_worker {
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
  unsigned drop_seen;               /* nbds_pool.drop_gen last acted on */
  struct pollfd *pfd;
  unsigned pfd_cap;
  uint64_t busy_poll_ns;            /* how long to keep polling without sleeping (0: never) */
  uint64_t busy_until;              /* CLOCK_MONOTONIC ns: poll without sleeping until then */
};

/* A listening socket of an export, polled by the pool's acceptor. */
struct nbds_listener {
  struct svm_export *e;
  int fd;
  char *path;                       /* unix socket to unlink at the end, or NULL */
  bool tcp;
  unsigned max_clients;
  atomic_uint clients;              /* handshaking + connected through it */
  struct nbds_ratelimit rl;         /* refusals and failed handshakes (under nbds_pool.mu) */
};

/* The process-wide pool: I/O threads and one acceptor shared by every export, so the thread
 * count does not grow with the number of disks. Started by the first export, stopped with
 * the last (a reference count); its size is fixed while it runs. */
struct nbds_pool {
  pthread_mutex_t mu;               /* refs, listeners, the acceptor's state */
  unsigned refs;
  unsigned nworkers;
  struct nbds_worker **workers;
  atomic_uint next_worker;
  atomic_uint drop_gen;             /* bumped when an export's clients must go (its free) */
  pthread_t acceptor;
  int acceptor_wake;                /* eventfd */
  bool stopping;
  struct nbds_listener **ls;
  unsigned nls, ls_cap;
  uint64_t backoff_until;           /* accept() ran out of descriptors: not before then */
  struct nbds_ratelimit emfile_rl;
  uint64_t emfile_count;
};
extern struct nbds_pool nbds_pool;

struct svm_export {
  char *name;
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

  /* listeners and handshakes */
  pthread_mutex_t mu;           /* listeners, handshakes, client count */
  struct nbds_listener *ls[NBD_MAX_LISTENERS];
  unsigned nlisteners;
  bool stopping;                /* free() has begun: no new clients */
  atomic_bool dropping;         /* free(): the workers drop this export's clients */
  unsigned handshaking;         /* threads in a handshake */
  int hs_fds[NBD_MAX_CLIENTS];  /* their sockets, shut down on free */
  pthread_cond_t hs_cv;         /* handshaking or clients went down */
  atomic_uint clients;          /* handshaking + connected */
  uint64_t handshake_timeout_ns, request_timeout_ns;
  struct nfc_tls_config *tls;   /* STARTTLS credentials, or NULL */

  atomic_ulong st_clients_total, st_requests, st_errors;
};

uint64_t nbds_now_ns(void);

/* One log line for a client: "PROG: nbd: client PEER: message", control characters (which
 * may come from the network: export names, context names) escaped. */
void nbds_log_client(const char *peer, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Rate limit: true when a line may be logged now (*suppressed: lines left out before it). */
bool nbds_ratelimit_ok(struct nbds_ratelimit *rl, unsigned *suppressed);
/* Escape control characters and non-ASCII bytes of s into out (\xNN), always terminated. */
void nbds_escape(const char *s, char *out, size_t len);

/* handshake.c: run the whole handshake on a blocking socket. Returns 1 when transmission
 * starts (session filled), 0 when the client ended it cleanly (ABORT, or a LIST-only visit),
 * negative errno with svm_error set when the client must be dropped. */
int nbds_handshake(struct svm_export *e, struct nbds_session *s);
void nbds_session_clear(struct nbds_session *s);
/* End a session's TLS, if any (close_notify, best effort), and free it. */
void nbds_session_end_tls(struct nbds_session *s);
/* Transmission flags the export advertises to this session. */
uint16_t nbds_export_tflags(const struct svm_export *e, bool structured);

/* worker.c: the I/O threads. */
int nbds_worker_new(unsigned depth, uint64_t busy_poll_ns, struct nbds_worker **out);
void nbds_worker_stop(struct nbds_worker *w);       /* joins, drops its clients */
/* Hand over a client after its handshake (takes ownership of the session's fd/contexts). */
int nbds_worker_add(struct nbds_worker *w, struct nbds_session *s);
void nbds_worker_wake(struct nbds_worker *w);

/* pool.c: the process-wide threads. */
int nbds_pool_get(const struct svm_export_opts *o);   /* a reference; starts it */
void nbds_pool_put(void);
struct nbds_worker *nbds_pool_pick(void);             /* the worker for a new client */
void nbds_pool_wake_all(void);
int nbds_pool_add_listener(struct nbds_listener *l);
void nbds_pool_remove_listeners(struct svm_export *e);  /* the acceptor no longer sees them */
void nbds_pool_acceptor_wake(void);
/* A client of l is gone (handshake failed or connection closed). */
void nbds_client_gone(struct nbds_listener *l);

/* conn.c: a client's requests, on its worker's thread. */
struct nbds_conn *nbds_conn_new(struct nbds_worker *w, const struct nbds_session *s);
/* Drop without an error (the export is going away): stop, close when idle. */
void nbds_conn_drop(struct nbds_conn *c);
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
/* A new connection on l: its handshake thread (called by the acceptor, under nbds_pool.mu;
 * takes fd over). */
void nbds_accept_client(struct nbds_listener *l, int fd, bool tcp);

#endif
