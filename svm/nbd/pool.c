/* The NBD server's threads, shared by every export of the process: one acceptor thread that
 * polls every listener, and a fixed number of I/O threads (worker.c) that carry the clients of
 * all exports. Exports register with the pool (a reference count: the first starts it, the
 * last stops it), so an agent with 32 disks runs the same threads as one with one disk:
 *
 *   1 acceptor + SVM_NBD_THREADS I/O threads (default: one per CPU, 2 to 8)
 *   + one short-lived thread per client while it is in its handshake (bounded per listener,
 *     NBD_LISTENER_MAX_*, and by the handshake deadline)
 *   + the kernel's io-wq workers of each I/O thread's ring (bounded by the kernel per ring).
 *
 * The pool's size is set when it starts (the first export's options, or SVM_NBD_THREADS) and
 * stays fixed while it runs.
 *
 * The acceptor runs the listeners' limits: a listener at its connection limit is not polled
 * (new connections wait in the kernel's backlog) until one of its clients leaves, and when
 * accept() runs out of descriptors (EMFILE, ENFILE) or memory it stops accepting for
 * ACCEPT_BACKOFF_MS and logs once a second at most, instead of retrying at once: the pending
 * connection keeps the listener readable, so retrying at once would spin. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "svm/nbd/internal.h"

enum { ACCEPT_BACKOFF_MS = 100, ACCEPT_BATCH = 16, MAX_THREADS = 64 };

struct nbds_pool nbds_pool = { .mu = PTHREAD_MUTEX_INITIALIZER, .acceptor_wake = -1 };
/* Starting and stopping the pool (refs): a lock of its own, since stopping joins threads that
 * take nbds_pool.mu. */
static pthread_mutex_t life_mu = PTHREAD_MUTEX_INITIALIZER;

/* How long an I/O thread keeps polling after activity before it sleeps (worker.c says why):
 * SVM_NBD_BUSY_POLL_US microseconds, 0 to sleep at once; 50 by default, about two wake-ups of a
 * virtual CPU, so an idle export costs nothing and a guest at depth 1 rarely waits for one. */
static uint64_t busy_poll_ns(void)
{
  const char *v = getenv("SVM_NBD_BUSY_POLL_US");
  char *end;
  unsigned long us;

  if (v == NULL || *v == '\0')
    return 50 * 1000;
  errno = 0;
  us = strtoul(v, &end, 10);
  if (errno || *end || us > 1000000)
    return 50 * 1000;
  return (uint64_t)us * 1000;
}

static unsigned pool_threads(const struct svm_export_opts *o)
{
  const char *v = getenv("SVM_NBD_THREADS");
  long n;

  if (v && *v) {
    char *end;
    errno = 0;
    n = strtol(v, &end, 10);
    if (errno == 0 && *end == '\0' && n >= 1 && n <= MAX_THREADS)
      return (unsigned)n;
  }
  if (o && o->threads)
    return o->threads > MAX_THREADS ? MAX_THREADS : o->threads;
  n = sysconf(_SC_NPROCESSORS_ONLN);
  if (n < NBD_DEFAULT_THREADS)
    n = NBD_DEFAULT_THREADS;
  return n > 8 ? 8 : (unsigned)n;
}

static void acceptor_wake_locked(void)
{
  uint64_t one = 1;
  if (nbds_pool.acceptor_wake >= 0 &&
      write(nbds_pool.acceptor_wake, &one, sizeof one) < 0) { /* already pending */ }
}

void nbds_pool_acceptor_wake(void)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&nbds_pool.mu);
  acceptor_wake_locked();
}

void nbds_client_gone(struct nbds_listener *l)
{
  struct svm_export *e = l->e;

  /* a listener at its limit is not polled: the acceptor must hear that it has room again */
  if (atomic_fetch_sub(&l->clients, 1) == l->max_clients)
    nbds_pool_acceptor_wake();
  nbds_export_client_gone(e);
}

/* Under the pool's lock: descriptors ran out (or memory). Stop accepting for a while and say
 * so, once a second at most. */
static void accept_failed_locked(int err)
{
  unsigned suppressed;

  nbds_pool.backoff_until = nbds_now_ns() + ACCEPT_BACKOFF_MS * 1000000ull;
  nbds_pool.emfile_count++;
  nbds_pool.emfile_rl.n = NBD_LOG_BURST;      /* no burst: one line a second */
  if (nbds_ratelimit_ok(&nbds_pool.emfile_rl, &suppressed))
    nbds_log_client("(new)", "accept: %s: not accepting for %d ms%s (raise the open files "
                    "limit, ulimit -n, or lower the number of clients)", strerror(err),
                    ACCEPT_BACKOFF_MS, suppressed ? " (and more times since the last line)"
                                                  : "");
}

/* Under the pool's lock: take the connections waiting on l, up to its limit. */
static void accept_on_locked(struct nbds_listener *l)
{
  for (unsigned i = 0; i < ACCEPT_BATCH; i++) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd;

    if (atomic_load(&l->clients) >= l->max_clients)
      return;
    fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS)
        accept_failed_locked(errno);
      return;                       /* EAGAIN, or a connection that died in the backlog */
    }
    nbds_accept_client(l, fd, ss.ss_family == AF_INET || ss.ss_family == AF_INET6);
  }
}

static void *acceptor_main(void *arg)
{
  struct pollfd *pfd = NULL;
  unsigned cap = 0;

  (void)arg;
  for (;;) {
    unsigned n = 1;
    int timeout = -1;
    uint64_t now;

    pthread_mutex_lock(&nbds_pool.mu);
    if (nbds_pool.stopping) {
      pthread_mutex_unlock(&nbds_pool.mu);
      break;
    }
    if (cap < nbds_pool.nls + 1) {
      struct pollfd *p = reallocarray(pfd, nbds_pool.nls + 1, sizeof *p);
      if (p) {
        pfd = p;
        cap = nbds_pool.nls + 1;
      } else if (pfd == NULL) {
        pthread_mutex_unlock(&nbds_pool.mu);
        usleep(ACCEPT_BACKOFF_MS * 1000);       /* out of memory: try again later */
        continue;
      }
    }
    pfd[0] = (struct pollfd){ .fd = nbds_pool.acceptor_wake, .events = POLLIN };
    now = nbds_now_ns();
    if (now < nbds_pool.backoff_until) {
      timeout = (int)((nbds_pool.backoff_until - now) / 1000000) + 1;
    } else {
      for (unsigned i = 0; i < nbds_pool.nls && n < cap; i++) {
        struct nbds_listener *l = nbds_pool.ls[i];
        if (atomic_load(&l->clients) < l->max_clients)
          pfd[n++] = (struct pollfd){ .fd = l->fd, .events = POLLIN };
      }
    }
    pthread_mutex_unlock(&nbds_pool.mu);

    if (poll(pfd, n, timeout) < 0)
      continue;
    if (pfd[0].revents & POLLIN) {
      uint64_t v;
      if (read(pfd[0].fd, &v, sizeof v) < 0) { /* a wake-up only */ }
    }
    pthread_mutex_lock(&nbds_pool.mu);
    for (unsigned i = 1; i < n && nbds_now_ns() >= nbds_pool.backoff_until; i++) {
      if (!(pfd[i].revents & POLLIN))
        continue;
      /* still registered? (an export may have gone meanwhile; its fd number may be reused,
       * in which case it is another listener's and ready all the same) */
      for (unsigned j = 0; j < nbds_pool.nls; j++)
        if (nbds_pool.ls[j]->fd == pfd[i].fd) {
          accept_on_locked(nbds_pool.ls[j]);
          break;
        }
    }
    pthread_mutex_unlock(&nbds_pool.mu);
  }
  free(pfd);
  return NULL;
}

int nbds_pool_add_listener(struct nbds_listener *l)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&nbds_pool.mu);
  if (nbds_pool.nls == nbds_pool.ls_cap) {
    unsigned cap = nbds_pool.ls_cap * 2 + 8;
    struct nbds_listener **n = reallocarray(nbds_pool.ls, cap, sizeof *n);
    if (n == NULL)
      return svm_error(ENOMEM, "out of memory");
    nbds_pool.ls = n;
    nbds_pool.ls_cap = cap;
  }
  nbds_pool.ls[nbds_pool.nls++] = l;
  acceptor_wake_locked();
  return 0;
}

void nbds_pool_remove_listeners(struct svm_export *e)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&nbds_pool.mu);
  for (unsigned i = 0; i < nbds_pool.nls;) {
    if (nbds_pool.ls[i]->e == e) {
      nbds_pool.ls[i] = nbds_pool.ls[--nbds_pool.nls];
      continue;
    }
    i++;
  }
  acceptor_wake_locked();
}

struct nbds_worker *nbds_pool_pick(void)
{
  /* the export holds a reference: the workers stay while it asks */
  return nbds_pool.workers[atomic_fetch_add(&nbds_pool.next_worker, 1) % nbds_pool.nworkers];
}

void nbds_pool_wake_all(void)
{
  for (unsigned i = 0; i < nbds_pool.nworkers; i++)
    nbds_worker_wake(nbds_pool.workers[i]);
}

/* Under life_mu, refs 0: stop the threads (every export is gone, and so are its clients). */
static void pool_stop(void)
{
  pthread_mutex_lock(&nbds_pool.mu);
  if (nbds_pool.acceptor_wake >= 0) {
    nbds_pool.stopping = true;
    acceptor_wake_locked();
    pthread_mutex_unlock(&nbds_pool.mu);
    pthread_join(nbds_pool.acceptor, NULL);
    pthread_mutex_lock(&nbds_pool.mu);
    close(nbds_pool.acceptor_wake);
    nbds_pool.acceptor_wake = -1;
    nbds_pool.stopping = false;
  }
  pthread_mutex_unlock(&nbds_pool.mu);
  for (unsigned i = 0; nbds_pool.workers && i < nbds_pool.nworkers; i++)
    nbds_worker_stop(nbds_pool.workers[i]);
  free(nbds_pool.workers);
  nbds_pool.workers = NULL;
  nbds_pool.nworkers = 0;
  pthread_mutex_lock(&nbds_pool.mu);
  free(nbds_pool.ls);
  nbds_pool.ls = NULL;
  nbds_pool.nls = nbds_pool.ls_cap = 0;
  nbds_pool.backoff_until = 0;
  pthread_mutex_unlock(&nbds_pool.mu);
}

int nbds_pool_get(const struct svm_export_opts *o)
{
  unsigned n, depth;
  uint64_t bp;
  bool acceptor = false;
  int r;

  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&life_mu);
  if (nbds_pool.refs > 0) {
    nbds_pool.refs++;
    return 0;
  }
  n = pool_threads(o);
  depth = o && o->queue_depth ? o->queue_depth : NBD_DEFAULT_DEPTH;
  if (depth > 1024)
    depth = 1024;
  bp = busy_poll_ns();
  nbds_pool.workers = calloc(n, sizeof *nbds_pool.workers);
  if (nbds_pool.workers == NULL) {
    r = svm_error(ENOMEM, "out of memory");
    goto fail;
  }
  for (nbds_pool.nworkers = 0; nbds_pool.nworkers < n; nbds_pool.nworkers++) {
    r = nbds_worker_new(depth, bp, &nbds_pool.workers[nbds_pool.nworkers]);
    if (r < 0)
      goto fail;
  }
  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&nbds_pool.mu);
    nbds_pool.acceptor_wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (nbds_pool.acceptor_wake < 0) {
      r = svm_error(errno, "NBD server: eventfd: %s", strerror(errno));
    } else {
      r = pthread_create(&nbds_pool.acceptor, NULL, acceptor_main, NULL);
      if (r != 0) {
        close(nbds_pool.acceptor_wake);
        nbds_pool.acceptor_wake = -1;
        r = svm_error(r, "NBD server: cannot start the acceptor thread: %s", strerror(r));
      } else {
        acceptor = true;
      }
    }
  }
  if (!acceptor)
    goto fail;
  nbds_pool.refs = 1;
  return 0;

fail:
  pool_stop();
  return r;
}

void nbds_pool_put(void)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&life_mu);
  if (--nbds_pool.refs == 0)
    pool_stop();
}
