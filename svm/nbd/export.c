/* An NBD export: its listeners (polled by the pool's acceptor, pool.c), handshake threads,
 * meta context providers, and pause / resume / swap / flush. Its clients run on the pool's
 * I/O threads (worker.c), shared with every other export.
 *
 * Pause protocol (Dekker style, all seq_cst atomics): a worker counts a request in `inflight`
 * and then checks `paused`; if set it uncounts it and leaves the request waiting. pause() sets
 * `paused` and then waits, under pause_mu, for `inflight` to reach zero; the worker that brings
 * it to zero while paused signals. Hence no request starts after pause() returns and every one
 * started before has been answered, which is what lets swap() replace the layer stack.
 * A pause that cannot drain by its deadline (a request parked in a layer) takes itself back:
 * the export runs on as if it had never been asked. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "svm/nbd/internal.h"

enum { HANDSHAKE_STACK = 256 * 1024, LISTEN_BACKLOG = 1024 };

/* ---- requests and pause ---- */

bool nbds_export_start_request(struct svm_export *e)
{
  atomic_fetch_add(&e->inflight, 1);
  if (atomic_load(&e->paused) > 0) {
    nbds_export_end_request(e);
    return false;
  }
  return true;
}

void nbds_export_end_request(struct svm_export *e)
{
  if (atomic_fetch_sub(&e->inflight, 1) == 1 && atomic_load(&e->paused) > 0) {
    pthread_mutex_lock(&e->pause_mu);
    pthread_cond_broadcast(&e->pause_cv);
    pthread_mutex_unlock(&e->pause_mu);
  }
}

/* Under e->mu (a client's end, not a request's): free() waits under it for the count to reach
 * zero and then frees e, so the last touch of e must be inside the lock. */
void nbds_export_client_gone(struct svm_export *e)
{
  pthread_mutex_lock(&e->mu);
  if (atomic_fetch_sub(&e->clients, 1) == 1 && atomic_load(&e->dropping))
    pthread_cond_broadcast(&e->hs_cv);
  pthread_mutex_unlock(&e->mu);
}

/* Under pause_mu: give one pause back; the last one lets the workers go on. */
static void unpause_locked(struct svm_export *e)
{
  if (atomic_fetch_sub(&e->paused, 1) == 1)
    nbds_pool_wake_all();
}

int svm_export_pause(struct svm_export *e, uint64_t timeout_ns)
{
  struct timespec deadline;
  uint64_t at;
  int r = 0;

  if (timeout_ns == 0)
    return svm_error(EINVAL, "export %s: pause without a deadline (give one: a request that "
                     "never completes would hang the caller)", e->name);
  at = nbds_now_ns() + (timeout_ns > UINT64_MAX / 2 ? UINT64_MAX / 2 : timeout_ns);
  deadline.tv_sec = (time_t)(at / 1000000000u);
  deadline.tv_nsec = (long)(at % 1000000000u);
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&e->pause_mu);
  if (atomic_fetch_add(&e->paused, 1) == 0)
    e->pause_start_ns = nbds_now_ns();
  /* Drained once `inflight` is seen at zero: a worker that counts a request after that sees
   * `paused` and takes it back. Looking again after the loop instead could catch one of those
   * transient counts and report a drained export as a timeout (a move given up for nothing). */
  while (atomic_load(&e->inflight) > 0) {
    if (r == ETIMEDOUT) {
      unpause_locked(e);
      return svm_error(ETIMEDOUT, "export %s: %ld request(s) still in flight after %llu ms: "
                       "not paused, the export runs on (try again, or find what holds the "
                       "requests)", e->name, atomic_load(&e->inflight),
                       (unsigned long long)(timeout_ns / 1000000));
    }
    r = pthread_cond_timedwait(&e->pause_cv, &e->pause_mu, &deadline);
  }
  return 0;
}

int svm_export_resume(struct svm_export *e, uint64_t *paused_ns)
{
  pthread_mutex_lock(&e->pause_mu);
  if (atomic_load(&e->paused) == 0) {
    pthread_mutex_unlock(&e->pause_mu);
    return svm_error(EINVAL, "export %s: resume without pause", e->name);
  }
  if (paused_ns)
    *paused_ns = nbds_now_ns() - e->pause_start_ns;
  unpause_locked(e);
  pthread_mutex_unlock(&e->pause_mu);
  return 0;
}

int svm_export_swap(struct svm_export *e, struct svm_layer *new_top, struct svm_layer **old_top,
                    uint64_t *paused_ns)
{
  struct svm_layer *cur = atomic_load(&e->top);
  int r;

  *old_top = NULL;
  if (svm_layer_size(new_top) != e->size)
    return svm_error(EINVAL, "export %s: cannot switch to %s: size %llu, the disk has %llu",
                     e->name, svm_layer_path(new_top),
                     (unsigned long long)svm_layer_size(new_top), (unsigned long long)e->size);
  if (new_top->readonly != cur->readonly)
    return svm_error(EINVAL, "export %s: cannot switch to %s: %s, the disk is %s", e->name,
                     svm_layer_path(new_top), new_top->readonly ? "read-only" : "writable",
                     cur->readonly ? "read-only" : "writable");
  r = svm_export_pause(e, NBD_SWAP_DRAIN_NS);
  if (r < 0)
    return svm_error_prefix("export %s: cannot switch to %s", e->name, svm_layer_path(new_top));
  pthread_mutex_lock(&e->swap_mu);
  *old_top = atomic_exchange(&e->top, new_top);
  pthread_mutex_unlock(&e->swap_mu);
  return svm_export_resume(e, paused_ns);
}

/* Not a request: it must work while the caller holds a pause (a move pauses, flushes the
 * destination, swaps, resumes). swap_mu keeps a swap from handing the stack back, to be freed,
 * while it is being flushed. */
int svm_export_flush(struct svm_export *e)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&e->swap_mu);
  return svm_layer_flush_sync(atomic_load(&e->top));
}

int svm_export_add_meta_provider(struct svm_export *e, const struct svm_meta_provider *p)
{
  unsigned n;

  if (p == NULL || p->prefix == NULL || p->prefix[0] == '\0' || p->resolve == NULL ||
      p->extents == NULL)
    return svm_error(EINVAL, "export %s: meta context provider without prefix or callbacks",
                     e->name);
  if (strncmp(p->prefix, "base:", 5) == 0)
    return svm_error(EINVAL, "export %s: the base: namespace is the server's own", e->name);
  pthread_mutex_lock(&e->mu);
  n = atomic_load(&e->nproviders);
  if (n == NBD_MAX_PROVIDERS) {
    pthread_mutex_unlock(&e->mu);
    return svm_error(ENOSPC, "export %s: at most %d meta context providers", e->name,
                     NBD_MAX_PROVIDERS);
  }
  e->provider_prefix[n] = strdup(p->prefix);
  if (e->provider_prefix[n] == NULL) {
    pthread_mutex_unlock(&e->mu);
    return svm_error(ENOMEM, "out of memory");
  }
  e->providers[n] = *p;
  e->providers[n].prefix = e->provider_prefix[n];
  atomic_store_explicit(&e->nproviders, n + 1, memory_order_release);
  pthread_mutex_unlock(&e->mu);
  return 0;
}

void svm_export_get_stats(struct svm_export *e, struct svm_export_stats *st)
{
  st->clients_now = atomic_load(&e->clients);
  st->clients_total = atomic_load(&e->st_clients_total);
  st->requests = atomic_load(&e->st_requests);
  st->errors = atomic_load(&e->st_errors);
}

/* ---- clients ---- */

struct hs_arg {
  struct nbds_session s;
  unsigned slot;
};

/* A failed handshake: one line, rate-limited per listener (a client may connect and fail as
 * fast as it likes). */
static void log_failed(struct nbds_listener *l, const char *peer, const char *why)
{
  unsigned suppressed;
  bool ok;

  pthread_mutex_lock(&nbds_pool.mu);
  ok = nbds_ratelimit_ok(&l->rl, &suppressed);
  pthread_mutex_unlock(&nbds_pool.mu);
  if (!ok)
    return;
  if (suppressed)
    nbds_log_client(peer, "%s (%u lines about clients of this socket left out before)", why,
                    suppressed);
  else
    nbds_log_client(peer, "%s", why);
}

static void *handshake_main(void *arg)
{
  struct hs_arg *a = arg;
  struct nbds_session *s = &a->s;
  struct svm_export *e = s->e;
  int r = nbds_handshake(e, s);
  bool handed = false;

  if (r > 0) {
    pthread_mutex_lock(&e->mu);
    e->hs_fds[a->slot] = -1;       /* the worker owns it now: free must not shut it down */
    pthread_mutex_unlock(&e->mu);
    r = nbds_worker_add(nbds_pool_pick(), s);
    if (r == 0)
      handed = true;
  }
  if (!handed) {
    if (r < 0) {
      log_failed(s->l, s->peer, svm_last_error());
      atomic_fetch_add(&e->st_errors, 1);
    }
    nbds_session_clear(s);
    nbds_session_end_tls(s);
    pthread_mutex_lock(&e->mu);
    e->hs_fds[a->slot] = -1;
    pthread_mutex_unlock(&e->mu);
    close(s->fd);
    nbds_client_gone(s->l);
  }
  free(a);
  pthread_mutex_lock(&e->mu);
  e->handshaking--;
  pthread_cond_broadcast(&e->hs_cv);
  pthread_mutex_unlock(&e->mu);      /* the last touch of e: free() may go ahead */
  return NULL;
}

static void peer_name(int fd, bool tcp, unsigned long n, char *buf, size_t len)
{
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  char host[48], port[8];

  if (tcp && getpeername(fd, (struct sockaddr *)&ss, &sl) == 0 &&
      getnameinfo((struct sockaddr *)&ss, sl, host, sizeof host, port, sizeof port,
                  NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
    snprintf(buf, len, "%.47s:%.7s", host, port);
    return;
  }
  snprintf(buf, len, "unix#%lu", n);
}

/* Refused before its handshake began: nothing of it is counted yet. */
static void refuse(struct nbds_listener *l, int fd, const char *peer, const char *why)
{
  unsigned suppressed;

  close(fd);
  if (nbds_ratelimit_ok(&l->rl, &suppressed))      /* under nbds_pool.mu */
    nbds_log_client(peer, "refused: %s", why);
}

void nbds_accept_client(struct nbds_listener *l, int fd, bool tcp)
{
  struct svm_export *e = l->e;
  struct hs_arg *a;
  pthread_attr_t attr;
  pthread_t t;
  unsigned slot;
  unsigned long n;
  int r, one = 1;

  n = atomic_fetch_add(&e->st_clients_total, 1) + 1;
  a = calloc(1, sizeof *a);
  if (a == NULL) {
    close(fd);
    return;
  }
  a->s.fd = fd;
  a->s.e = e;
  a->s.l = l;
  a->s.tls_required = tcp && e->tls != NULL;
  peer_name(fd, tcp, n, a->s.peer, sizeof a->s.peer);
  if (tcp)
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  pthread_mutex_lock(&e->mu);
  for (slot = 0; slot < NBD_MAX_CLIENTS && e->hs_fds[slot] != -1; slot++)
    ;
  if (e->stopping || slot == NBD_MAX_CLIENTS || atomic_load(&e->clients) >= NBD_MAX_CLIENTS) {
    pthread_mutex_unlock(&e->mu);
    refuse(l, fd, a->s.peer, e->stopping ? "the export is closing" : "too many clients");
    free(a);
    return;
  }
  e->hs_fds[slot] = fd;
  a->slot = slot;
  a->s.deadline_ns = nbds_now_ns() + e->handshake_timeout_ns;
  e->handshaking++;
  atomic_fetch_add(&e->clients, 1);
  atomic_fetch_add(&l->clients, 1);
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, HANDSHAKE_STACK);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  r = pthread_create(&t, &attr, handshake_main, a);
  pthread_attr_destroy(&attr);
  if (r != 0) {
    e->hs_fds[slot] = -1;
    e->handshaking--;
    atomic_fetch_sub(&e->clients, 1);
    atomic_fetch_sub(&l->clients, 1);   /* not nbds_client_gone: the acceptor holds the lock */
    pthread_mutex_unlock(&e->mu);
    refuse(l, fd, a->s.peer, strerror(r));
    free(a);
    return;
  }
  pthread_mutex_unlock(&e->mu);
}

/* ---- listeners ---- */

void svm_export_set_tls(struct svm_export *e, struct nfc_tls_config *cfg)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&e->mu);
  e->tls = cfg;
}

/* Takes the socket over, also on failure. */
static int add_listener(struct svm_export *e, int fd_owned, const char *path, bool tcp)
{
  CLEANUP_CLOSE int fd = fd_owned;
  struct nbds_listener *l;
  int fl = fcntl(fd, F_GETFL), r;

  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
    return svm_error(errno, "export %s: fcntl: %s", e->name, strerror(errno));
  l = calloc(1, sizeof *l);
  if (l == NULL || (path && (l->path = strdup(path)) == NULL)) {
    free(l);
    return svm_error(ENOMEM, "out of memory");
  }
  l->e = e;
  l->tcp = tcp;
  l->max_clients = tcp ? NBD_LISTENER_MAX_TCP : NBD_LISTENER_MAX_UNIX;
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&e->mu);
    if (e->nlisteners == NBD_MAX_LISTENERS) {
      free(l->path);
      free(l);
      return svm_error(ENOSPC, "export %s: at most %d listeners", e->name, NBD_MAX_LISTENERS);
    }
    l->fd = TAKE_FD(fd);
    e->ls[e->nlisteners++] = l;
  }
  r = nbds_pool_add_listener(l);
  return r;                         /* on failure, free() closes it with the others */
}

/* A socket nobody answers on is stale (a previous agent died): remove it. */
static int remove_stale_socket(const struct sockaddr_un *sa, const char *path)
{
  CLEANUP_CLOSE int fd = -1;
  struct stat st;

  if (lstat(path, &st) < 0)
    return 0;
  if (!S_ISSOCK(st.st_mode))
    return svm_error(EEXIST, "%s: exists and is not a socket; remove it or choose another "
                     "path", path);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return svm_error(errno, "socket: %s", strerror(errno));
  if (connect(fd, (const struct sockaddr *)sa, sizeof *sa) == 0)
    return svm_error(EADDRINUSE, "%s: another server is listening on this socket", path);
  if (unlink(path) < 0 && errno != ENOENT)
    return svm_error(errno, "%s: cannot remove the stale socket: %s", path, strerror(errno));
  return 0;
}

int svm_export_listen_unix(struct svm_export *e, const char *path)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  CLEANUP_CLOSE int fd = -1;
  int r;

  if (strlen(path) >= sizeof sa.sun_path)
    return svm_error(ENAMETOOLONG, "%s: socket path longer than %zu bytes; use a shorter "
                     "state directory", path, sizeof sa.sun_path - 1);
  strcpy(sa.sun_path, path);
  r = remove_stale_socket(&sa, path);
  if (r < 0)
    return r;
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return svm_error(errno, "socket: %s", strerror(errno));
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, LISTEN_BACKLOG) < 0)
    return svm_error(errno, "%s: cannot listen: %s", path, strerror(errno));
  return add_listener(e, TAKE_FD(fd), path, false);
}

int svm_export_listen_tcp(struct svm_export *e, const char *addr, const char *port,
                          char *bound_port, size_t len)
{
  struct addrinfo hints = { .ai_flags = AI_PASSIVE, .ai_socktype = SOCK_STREAM }, *res, *ai;
  int fd = -1, err = 0, one = 1;

  err = getaddrinfo(addr && *addr ? addr : NULL, port, &hints, &res);
  if (err != 0)
    return svm_error(EINVAL, "%s:%s: cannot resolve: %s", addr ? addr : "*", port,
                     gai_strerror(err));
  for (ai = res; ai; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, LISTEN_BACKLOG) == 0)
      break;
    err = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0)
    return svm_error(err, "%s:%s: cannot listen: %s", addr ? addr : "*", port, strerror(err));
  if (bound_port && len > 0) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char host[NI_MAXHOST];
    bound_port[0] = '\0';
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
      getnameinfo((struct sockaddr *)&ss, sl, host, sizeof host, bound_port, len,
                  NI_NUMERICHOST | NI_NUMERICSERV);
  }
  return add_listener(e, fd, NULL, true);
}

/* ---- life cycle ---- */

/* A deadline in seconds from the environment (tests shorten them), else the default. */
static uint64_t timeout_ns(const char *var, unsigned dflt)
{
  const char *v = getenv(var);
  char *end;
  unsigned long n;

  if (v && *v) {
    errno = 0;
    n = strtoul(v, &end, 10);
    if (errno == 0 && *end == '\0' && n >= 1 && n <= 3600)
      return (uint64_t)n * 1000000000u;
  }
  return (uint64_t)dflt * 1000000000u;
}

int svm_export_new(const struct svm_export_opts *o, struct svm_layer *top,
                   struct svm_export **out)
{
  struct svm_export *e;
  const char *name = o && o->name ? o->name : "";
  int r;

  *out = NULL;
  if (top == NULL)
    return svm_error(EINVAL, "export %s: no disk", name);
  if (strlen(name) > NBD_MAX_STRING)
    return svm_error(EINVAL, "export name longer than %d bytes", NBD_MAX_STRING);
  e = calloc(1, sizeof *e);
  if (e == NULL || (e->name = strdup(name)) == NULL) {
    free(e);
    return svm_error(ENOMEM, "out of memory");
  }
  r = nbds_pool_get(o);
  if (r < 0) {
    free(e->name);
    free(e);
    return r;
  }
  e->handshake_timeout_ns = timeout_ns("SVM_NBD_HANDSHAKE_TIMEOUT_S", NBD_HANDSHAKE_TIMEOUT_S);
  e->request_timeout_ns = timeout_ns("SVM_NBD_REQUEST_TIMEOUT_S", NBD_REQUEST_TIMEOUT_S);
  atomic_store(&e->top, top);
  e->size = svm_layer_size(top);
  for (unsigned i = 0; i < NBD_MAX_CLIENTS; i++)
    e->hs_fds[i] = -1;
  pthread_mutex_init(&e->mu, NULL);
  pthread_mutex_init(&e->pause_mu, NULL);
  {
    /* the pause deadline is on the monotonic clock, as nbds_now_ns() */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&e->pause_cv, &ca);
    pthread_condattr_destroy(&ca);
  }
  pthread_cond_init(&e->hs_cv, NULL);
  pthread_mutex_init(&e->swap_mu, NULL);
  *out = e;
  return 0;
}

/* Until the export's last client is gone. A request that never completes (a hung datastore)
 * holds this for ever: say which export waits, once, so that whoever stops svmd (its
 * --stop-timeout) sees why. */
static void wait_clients_gone(struct svm_export *e)
{
  struct timespec at;
  bool said = false;

  clock_gettime(CLOCK_REALTIME, &at);            /* hs_cv's clock */
  at.tv_sec += NBD_DROP_WARN_S;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&e->mu);
  while (atomic_load(&e->clients) > 0) {
    if (said) {
      pthread_cond_wait(&e->hs_cv, &e->mu);
    } else if (pthread_cond_timedwait(&e->hs_cv, &e->mu, &at) == ETIMEDOUT) {
      said = true;
      fprintf(stderr, "svmd: export %s: %ld guest request(s) still in flight after %d s; "
              "waiting for them to complete before closing the disk (check its datastore's "
              "storage)\n", e->name, (long)atomic_load(&e->inflight), NBD_DROP_WARN_S);
    }
  }
}

void svm_export_free(struct svm_export *e)
{
  if (e == NULL)
    return;
  /* No new clients: the acceptor forgets the listeners (it accepts under the pool's lock, so
   * once this returns it touches them no more), then handshakes are cut short. */
  nbds_pool_remove_listeners(e);
  pthread_mutex_lock(&e->mu);
  e->stopping = true;
  for (unsigned i = 0; i < NBD_MAX_CLIENTS; i++)
    if (e->hs_fds[i] >= 0)
      shutdown(e->hs_fds[i], SHUT_RDWR);
  while (e->handshaking > 0)
    pthread_cond_wait(&e->hs_cv, &e->mu);
  pthread_mutex_unlock(&e->mu);

  /* Connected clients live on the shared I/O threads: ask them to drop this export's, and
   * wait until the last is gone (each closes once its started requests have completed, since
   * the engine's callbacks refer to them and to the layer stack). */
  atomic_store(&e->dropping, true);
  atomic_fetch_add_explicit(&nbds_pool.drop_gen, 1, memory_order_release);
  nbds_pool_wake_all();
  wait_clients_gone(e);

  pthread_mutex_destroy(&e->swap_mu);
  for (unsigned i = 0; i < e->nlisteners; i++) {
    close(e->ls[i]->fd);
    if (e->ls[i]->path)
      unlink(e->ls[i]->path);
    free(e->ls[i]->path);
    free(e->ls[i]);
  }
  for (unsigned i = 0; i < NBD_MAX_PROVIDERS; i++)
    free(e->provider_prefix[i]);
  svm_layer_free(atomic_load(&e->top));
  pthread_mutex_destroy(&e->mu);
  pthread_mutex_destroy(&e->pause_mu);
  pthread_cond_destroy(&e->pause_cv);
  pthread_cond_destroy(&e->hs_cv);
  free(e->name);
  free(e);
  nbds_pool_put();
}
