/* An I/O thread of the process-wide pool (pool.c): it runs its own engine (svm/io/io.h) and a
 * poll() loop over its clients' sockets (clients of any export), its wake-up eventfd and the
 * engine's eventfd, which also wakes it for completions that a layer posts from another
 * thread (svm_io_post: a change-tracking first mark).
 *
 * Thread model: a connection belongs to one worker and is touched only by that thread; the
 * export's counters are atomics. An export going away bumps nbds_pool.drop_gen: each worker
 * then drops that export's clients (one atomic load per loop turn when nothing goes away). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "nfc/tls.h"
#include "svm/nbd/internal.h"

static bool take_incoming(struct nbds_worker *w)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&w->mu);
  for (unsigned i = 0; i < w->nincoming; i++) {
    struct nbds_session *s = &w->incoming[i];
    struct nbds_conn *c = NULL;

    if (w->nconns == w->conns_cap) {
      unsigned cap = w->conns_cap * 2 + 8;
      struct nbds_conn **n = reallocarray(w->conns, cap, sizeof *n);
      if (n != NULL) {
        w->conns = n;
        w->conns_cap = cap;
      }
    }
    if (w->nconns < w->conns_cap)
      c = nbds_conn_new(w, s);
    if (c == NULL) {
      nbds_log_client(s->peer, "out of memory: dropping the client");
      nbds_session_end_tls(s);
      close(s->fd);
      nbds_session_clear(s);
      nbds_client_gone(s->l);
      continue;
    }
    w->conns[w->nconns++] = c;
  }
  w->nincoming = 0;
  return w->stop;
}

/* Start what the clients sent, run what completed, send replies, drop finished clients.
 * Returns true when a request waits for room on this worker. */
static bool worker_turn(struct nbds_worker *w)
{
  bool spin = false;
  unsigned gen = atomic_load_explicit(&nbds_pool.drop_gen, memory_order_acquire);

  if (gen != w->drop_seen) {
    /* an export is going away: its clients go now (they close once their I/O is done) */
    w->drop_seen = gen;
    for (unsigned i = 0; i < w->nconns; i++)
      if (atomic_load(&w->conns[i]->e->dropping))
        nbds_conn_drop(w->conns[i]);
  }
  for (unsigned i = 0; i < w->nconns; i++)
    spin |= nbds_conn_process(w->conns[i]);
  svm_io_reap(w->io, 0);            /* submit, and run what completed or was posted */
  for (unsigned i = 0; i < w->nconns;) {
    struct nbds_conn *c = w->conns[i];
    nbds_conn_send(c);
    if (nbds_conn_finished(c)) {
      nbds_conn_free(c);
      w->conns[i] = w->conns[--w->nconns];
      continue;
    }
    i++;
  }
  return spin;
}

static uint64_t mono_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Busy polling for a short while after activity: a thread that sleeps in poll() is woken by an
 * interrupt to its CPU when the client's next request arrives, which on a virtual machine costs
 * tens of microseconds (a virtual IPI); at queue depth 1 that wake-up is most of the round trip.
 * So after each event the worker keeps polling without sleeping for busy_poll_ns (the kernel's
 * net.core.busy_poll idea, and SPDK's); an idle export sleeps as before. */
static int poll_timeout(struct nbds_worker *w, bool spin)
{
  if (spin && w->active < w->max_active)
    return 0;
  if (w->busy_poll_ns && mono_ns() < w->busy_until)
    return 0;
  return -1;
}

static void drain_eventfd(int fd)
{
  uint64_t v;
  if (read(fd, &v, sizeof v) < 0) { /* nothing pending: it was a wake-up */ }
}

/* Wait for sockets, wake-ups and completions (without waiting when `spin`), then read and
 * write what is ready. */
static void worker_poll(struct nbds_worker *w, bool spin)
{
  unsigned np = 0;
  uint64_t deadline = 0;            /* the earliest of the clients' request deadlines */
  bool tls_pending = false;         /* a TLS client has decrypted bytes waiting: no sleep */
  int timeout;

  if (w->pfd_cap < w->nconns + 2) {
    struct pollfd *p = reallocarray(w->pfd, w->nconns + 2 + 16, sizeof *p);
    if (p == NULL) {
      usleep(10000);                /* out of memory: try again shortly */
      return;
    }
    w->pfd = p;
    w->pfd_cap = w->nconns + 2 + 16;
  }
  w->pfd[np++] = (struct pollfd){ .fd = w->wake, .events = POLLIN };
  /* The engine's eventfd only while requests are out (in the engine, or at a layer's thread,
   * which posts them back): completions that happened inline were run above, and waking up
   * for their signal would cost a poll and a read. */
  w->pfd[np++] = (struct pollfd){ .fd = w->active ? svm_io_event_fd(w->io) : -1,
                                  .events = POLLIN };
  for (unsigned i = 0; i < w->nconns; i++) {
    struct nbds_conn *c = w->conns[i];
    short ev = 0;
    if (nbds_conn_wants_input(c)) {
      ev |= c->rd_events;
      if (c->s.tls && nfc_tls_pending(c->s.tls) > 0)
        tls_pending = true;
    }
    if (c->out_head && !c->dead)
      ev |= c->wr_events;
    /* dead clients with I/O still in the engine: not polled (fd -1) */
    w->pfd[np++] = (struct pollfd){ .fd = c->dead ? -1 : c->s.fd, .events = ev };
    if (c->deadline_ns && !c->dead && (deadline == 0 || c->deadline_ns < deadline))
      deadline = c->deadline_ns;
  }
  timeout = tls_pending ? 0 : poll_timeout(w, spin);
  if (timeout < 0 && deadline) {
    uint64_t now = mono_ns();
    timeout = now >= deadline ? 0 : (int)((deadline - now) / 1000000) + 1;
  }
  int n = poll(w->pfd, np, timeout);
  if (n < 0 && errno != EINTR)
    usleep(1000);
  if (n > 0 && w->busy_poll_ns)
    w->busy_until = mono_ns() + w->busy_poll_ns;
  if (w->pfd[0].revents & POLLIN)
    drain_eventfd(w->wake);
  if (w->pfd[1].revents & POLLIN)
    drain_eventfd(w->pfd[1].fd);    /* the next turn's reap collects */
  uint64_t now = deadline ? mono_ns() : 0;
  for (unsigned i = 0; i < w->nconns; i++) {
    struct nbds_conn *c = w->conns[i];
    short re = w->pfd[i + 2].revents;
    if (c->s.tls) {
      /* TLS: a read may wait for POLLOUT and a send for POLLIN (TLS's own records), and
       * decrypted bytes may wait with the socket quiet */
      if ((re & (POLLIN | POLLOUT)) ||
          (tls_pending && nbds_conn_wants_input(c) && nfc_tls_pending(c->s.tls) > 0)) {
        if (nbds_conn_wants_input(c))
          nbds_conn_read(c);
        if (c->out_head && !c->dead)
          nbds_conn_send(c);
      } else if (re & (POLLERR | POLLHUP | POLLNVAL)) {
        nbds_conn_kill(c, "connection lost");
      }
    } else {
      if (re & POLLIN)
        nbds_conn_read(c);
      else if (re & (POLLERR | POLLHUP | POLLNVAL))
        nbds_conn_kill(c, "connection lost");
      if ((re & POLLOUT) && !c->dead)
        nbds_conn_send(c);
    }
    if (now && c->deadline_ns && now >= c->deadline_ns)
      nbds_conn_kill(c, "request timed out: its header or payload did not arrive within %llu "
                     "s: dropping the client",
                     (unsigned long long)(c->e->request_timeout_ns / 1000000000u));
  }
}

/* Stopping: drop every client, but let every started request finish first, since engine
 * callbacks and posted completions refer to them. */
static void worker_drain(struct nbds_worker *w)
{
  for (unsigned i = 0; i < w->nconns; i++)
    w->conns[i]->dead = true;
  while (w->active > 0) {
    if (svm_io_in_flight(w->io) > 0) {
      if (svm_io_reap(w->io, 1) < 0)
        break;
    } else {
      /* out at a layer's thread: wait for its post */
      struct pollfd p = { .fd = svm_io_event_fd(w->io), .events = POLLIN };
      if (poll(&p, 1, -1) > 0)
        drain_eventfd(p.fd);
      svm_io_reap(w->io, 0);
    }
  }
  for (unsigned i = 0; i < w->nconns; i++)
    nbds_conn_free(w->conns[i]);
  w->nconns = 0;
}

static void *worker_main(void *arg)
{
  struct nbds_worker *w = arg;

  while (!take_incoming(w))
    worker_poll(w, worker_turn(w));
  worker_drain(w);
  return NULL;
}

int nbds_worker_new(unsigned depth, uint64_t busy_poll_ns, struct nbds_worker **out)
{
  struct nbds_worker *w = calloc(1, sizeof *w);
  int r;

  *out = NULL;
  if (w == NULL)
    return svm_error(ENOMEM, "out of memory");
  w->max_active = depth;
  w->busy_poll_ns = busy_poll_ns;
  w->drop_seen = atomic_load(&nbds_pool.drop_gen);
  w->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (w->wake < 0) {
    r = svm_error(errno, "eventfd: %s", strerror(errno));
    free(w);
    return r;
  }
  /* Twice the requests we start: a chained step (FUA sync, zero fallback) is queued from a
   * completion callback and must always find room. */
  r = svm_io_new(SVM_IO_AUTO, 2 * depth, &w->io);
  if (r < 0) {
    close(w->wake);
    free(w);
    return r;
  }
  pthread_mutex_init(&w->mu, NULL);
  r = pthread_create(&w->thread, NULL, worker_main, w);
  if (r != 0) {
    svm_io_free(w->io);
    close(w->wake);
    pthread_mutex_destroy(&w->mu);
    free(w);
    return svm_error(r, "cannot start an NBD I/O thread: %s", strerror(r));
  }
  *out = w;
  return 0;
}

void nbds_worker_wake(struct nbds_worker *w)
{
  uint64_t one = 1;
  if (write(w->wake, &one, sizeof one) < 0) { /* counter full: already woken */ }
}

void nbds_worker_stop(struct nbds_worker *w)
{
  if (w == NULL)
    return;
  pthread_mutex_lock(&w->mu);
  w->stop = true;
  pthread_mutex_unlock(&w->mu);
  nbds_worker_wake(w);
  pthread_join(w->thread, NULL);
  /* sessions handed over but never taken */
  for (unsigned i = 0; i < w->nincoming; i++) {
    nbds_session_end_tls(&w->incoming[i]);
    close(w->incoming[i].fd);
    nbds_session_clear(&w->incoming[i]);
    nbds_client_gone(w->incoming[i].l);
  }
  svm_io_free(w->io);
  close(w->wake);
  pthread_mutex_destroy(&w->mu);
  free(w->incoming);
  free(w->conns);
  free(w->pfd);
  free(w);
}

int nbds_worker_add(struct nbds_worker *w, struct nbds_session *s)
{
  int fl = fcntl(s->fd, F_GETFL);

  if (fl < 0 || fcntl(s->fd, F_SETFL, fl | O_NONBLOCK) < 0)
    return svm_error(errno, "fcntl: %s", strerror(errno));
  pthread_mutex_lock(&w->mu);
  if (w->stop) {
    pthread_mutex_unlock(&w->mu);
    return svm_error(ESHUTDOWN, "export is shutting down");
  }
  if (w->nincoming == w->incoming_cap) {
    unsigned cap = w->incoming_cap * 2 + 8;
    struct nbds_session *n = reallocarray(w->incoming, cap, sizeof *n);
    if (n == NULL) {
      pthread_mutex_unlock(&w->mu);
      return svm_error(ENOMEM, "out of memory");
    }
    w->incoming = n;
    w->incoming_cap = cap;
  }
  w->incoming[w->nincoming++] = *s;
  pthread_mutex_unlock(&w->mu);
  nbds_worker_wake(w);
  return 0;
}
