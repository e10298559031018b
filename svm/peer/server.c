/* The peer link's server: svmd's --mgmt listener. One thread accepts; each connection gets a
 * thread of its own that runs the TLS handshake, reads HELLO, and then either serves control
 * requests through a small state table or hands an NFC stream to ops->nfc_stream.
 *
 * Transfers: a PREPARE makes one (a random token naming the staging folder); NFC streams name
 * it in their HELLO. The control connection that prepared it owns it: COMMIT, ABORT, or the
 * end of that connection ends it. Before a transfer's folder is removed, its streams are cut
 * (shutdown) and waited for, so nothing writes into a folder being removed.
 *
 * Threads: s->mu guards the connection list and the transfer list. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "svm/peer/peer.h"

enum { MAX_STREAMS = 32 };     /* NFC streams of one transfer */

struct transfer {
  struct transfer *next;
  char token[SVM_PEER_TOKEN_LEN + 1];
  char dir[PATH_MAX];
  char owner[SVM_PEER_MAX_VALUE + 1];   /* the preparing peer's identity: streams must match */
  bool dead;                   /* ending: no new stream joins */
  int last_errno;              /* the last stream that failed: why (STATUS tells) */
  char last_error[512];
  unsigned nstreams;
  int fds[MAX_STREAMS];
};

struct conn {
  struct conn *next;
  struct svm_peer_server *s;
  pthread_t thread;
  int fd;
  bool done;                   /* the thread has finished: join it */
  char peer[128];
};

struct svm_peer_server {
  const struct svm_peer_ops *ops;
  struct nfc_tls_config *tls;
  int lfd;
  int stop_pipe[2];
  pthread_t accept_thread;
  char addr[128];
  pthread_mutex_t mu;
  pthread_cond_t cond;         /* a stream ended */
  struct conn *conns;
  unsigned nconns;
  struct transfer *transfers;
  bool stopping;
};

/* ---- transfers --------------------------------------------------------------------------- */

static struct transfer *transfer_find_locked(struct svm_peer_server *s, const char *token)
{
  for (struct transfer *x = s->transfers; x; x = x->next)
    if (strcmp(x->token, token) == 0)
      return x;
  return NULL;
}

/* Cut the transfer's streams, wait for them, unlink it. The caller frees it. */
static void transfer_end(struct svm_peer_server *s, struct transfer *x)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&s->mu);
  x->dead = true;
  for (unsigned i = 0; i < x->nstreams; i++)
    shutdown(x->fds[i], SHUT_RDWR);
  while (x->nstreams > 0)
    pthread_cond_wait(&s->cond, &s->mu);
  for (struct transfer **pp = &s->transfers; *pp; pp = &(*pp)->next)
    if (*pp == x) {
      *pp = x->next;
      break;
    }
}

/* ---- control connections: a state table ---------------------------------------------------- */

enum cstate { C_READY, C_PREPARED };

struct control {
  struct conn *c;
  struct nfc_tls *t;
  enum cstate state;
  char host[SVM_PEER_MAX_VALUE + 1];   /* the name the peer gave in HELLO */
  struct transfer *x;                   /* C_PREPARED */
  struct svm_peer_msg reply;
};

static const char *state_name(enum cstate st)
{
  return st == C_READY ? "ready" : "prepared";
}

static int do_prepare(struct control *k, struct svm_peer_msg *req)
{
  struct svm_peer_server *s = k->c->s;
  unsigned char rnd[SVM_PEER_TOKEN_LEN / 2];
  struct transfer *x = calloc(1, sizeof *x);
  int r;

  if (!x)
    return svm_error(ENOMEM, "out of memory");
  if (RAND_bytes(rnd, sizeof rnd) != 1) {
    free(x);
    return svm_error(EIO, "no random bytes for a transfer token");
  }
  for (size_t i = 0; i < sizeof rnd; i++)
    sprintf(x->token + 2 * i, "%02x", rnd[i]);
  snprintf(x->owner, sizeof x->owner, "%s", nfc_tls_peer_identity(k->t));
  r = s->ops->prepare(s->ops->opaque, k->c->peer, k->host, req, x->dir);
  if (r < 0) {
    free(x);
    return r;
  }
  pthread_mutex_lock(&s->mu);
  x->next = s->transfers;
  s->transfers = x;
  pthread_mutex_unlock(&s->mu);
  k->x = x;
  k->state = C_PREPARED;
  svm_peer_msg_add(&k->reply, "token", "%s", x->token);
  return 0;
}

static int check_token(struct control *k, const struct svm_peer_msg *req)
{
  const char *token = svm_peer_get(req, "token");

  if (!token || strcmp(token, k->x->token) != 0)
    return svm_error(EINVAL, "%s names another transfer than this connection prepared",
                     svm_peer_type_name(req->type));
  return 0;
}

/* End the prepared transfer: its streams stop, then the folder goes unless committed. */
static void finish_transfer(struct control *k, bool committed)
{
  struct svm_peer_server *s = k->c->s;

  transfer_end(s, k->x);
  if (!committed)
    s->ops->abort(s->ops->opaque, k->c->peer, k->x->dir);
  free(k->x);
  k->x = NULL;
  k->state = C_READY;
}

static int do_commit(struct control *k, struct svm_peer_msg *req)
{
  struct svm_peer_server *s = k->c->s;
  int r = check_token(k, req);

  if (r < 0)
    return r;
  /* Streams are over by now (the source sends COMMIT after every file is durable); one still
   * open would be a confused peer: cut it before the folder changes hands. */
  pthread_mutex_lock(&s->mu);
  k->x->dead = true;
  pthread_mutex_unlock(&s->mu);
  transfer_end(s, k->x);
  r = s->ops->commit(s->ops->opaque, k->c->peer, k->x->dir, req);
  if (r < 0) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", svm_last_error());
    s->ops->abort(s->ops->opaque, k->c->peer, k->x->dir);
    svm_error(svm_last_errno() ? svm_last_errno() : EIO, "%s", msg);
  }
  free(k->x);
  k->x = NULL;
  k->state = C_READY;
  return r;
}

static int do_abort(struct control *k, struct svm_peer_msg *req)
{
  int r = check_token(k, req);

  if (r < 0)
    return r;
  finish_transfer(k, false);
  return 0;
}

static int do_status(struct control *k, struct svm_peer_msg *req)
{
  struct svm_peer_server *s = k->c->s;
  int r = check_token(k, req);

  if (r < 0)
    return r;
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&s->mu);
  if (k->x->last_errno) {
    svm_peer_msg_add(&k->reply, "errno", "%d", k->x->last_errno);
    svm_peer_msg_add(&k->reply, "message", "%s", k->x->last_error);
  }
  return 0;
}

static int do_info(struct control *k, struct svm_peer_msg *req)
{
  const struct svm_peer_ops *ops = k->c->s->ops;

  if (!ops->info)
    return svm_error(EOPNOTSUPP, "this host does not answer prechecks");
  return ops->info(ops->opaque, req, &k->reply);
}

static const struct transition {
  enum cstate state;
  uint8_t type;
  int (*fn)(struct control *k, struct svm_peer_msg *req);
} transitions[] = {
  { C_READY, SVM_PEER_PREPARE, do_prepare },
  { C_PREPARED, SVM_PEER_COMMIT, do_commit },
  { C_PREPARED, SVM_PEER_ABORT, do_abort },
  { C_PREPARED, SVM_PEER_STATUS, do_status },
  { C_READY, SVM_PEER_INFO, do_info },
};

static void serve_control(struct control *k, struct svm_peer_msg *req)
{
  const struct svm_peer_ops *ops = k->c->s->ops;
  int r;

  svm_peer_msg_init(&k->reply, SVM_PEER_OK);
  if ((r = ops->hello(ops->opaque, &k->reply)) < 0 || (r = svm_peer_send(k->t, &k->reply,
                                                                       SVM_PEER_CALL_MS)) < 0) {
    ops->log("peer %s: %s", k->c->peer, svm_last_error());
    return;
  }
  for (;;) {
    const struct transition *tr = NULL;

    /* No deadline between requests: a control connection waits idle while NFC streams carry
     * the files. TCP keepalive notices a peer that is gone. */
    r = svm_peer_recv(k->t, req, -1);
    if (r == -ENODATA)
      break;
    if (r < 0) {
      ops->log("peer %s (host %s): %s; closing the connection", k->c->peer, k->host,
               svm_last_error());
      break;
    }
    for (size_t i = 0; i < sizeof transitions / sizeof transitions[0]; i++)
      if (transitions[i].state == k->state && transitions[i].type == req->type)
        tr = &transitions[i];
    svm_peer_msg_init(&k->reply, SVM_PEER_OK);
    const char *seq = svm_peer_get(req, "seq");
    char seqbuf[SVM_PEER_MAX_VALUE + 1] = "";
    if (seq) {
      snprintf(seqbuf, sizeof seqbuf, "%s", seq);
      svm_peer_msg_add(&k->reply, "seq", "%s", seq);
    }
    if (!tr)
      r = svm_error(EPROTO, "%s is not expected when the connection is %s",
                    svm_peer_type_name(req->type), state_name(k->state));
    else
      r = tr->fn(k, req);
    if (r < 0) {
      ops->log("peer %s (host %s): %s refused: %s", k->c->peer, k->host,
               svm_peer_type_name(req->type), svm_last_error());
      svm_peer_send_error_seq(k->t, r, svm_last_error(), seq ? seqbuf : NULL);
      continue;
    }
    if (svm_peer_send(k->t, &k->reply, SVM_PEER_CALL_MS) < 0) {
      ops->log("peer %s: %s", k->c->peer, svm_last_error());
      break;
    }
  }
  if (k->state == C_PREPARED) {
    ops->log("peer %s (host %s): connection ended with a transfer prepared: removing %s",
             k->c->peer, k->host, k->x->dir);
    finish_transfer(k, false);
  }
}

/* ---- NFC streams ----------------------------------------------------------------------- */

static void serve_nfc(struct conn *c, struct nfc_tls *t, const struct svm_peer_msg *hello)
{
  struct svm_peer_server *s = c->s;
  const char *token = svm_peer_get(hello, "token");
  struct transfer *x;
  char dir[PATH_MAX];
  int r;

  pthread_mutex_lock(&s->mu);
  x = token ? transfer_find_locked(s, token) : NULL;
  /* Only the peer that prepared the transfer (the same certificate or PSK identity) may feed
   * it: a token alone is not enough. */
  if (x && !x->dead && x->nstreams < MAX_STREAMS &&
      strcmp(x->owner, nfc_tls_peer_identity(t)) == 0) {
    x->fds[x->nstreams++] = c->fd;
    snprintf(dir, sizeof dir, "%s", x->dir);
  } else {
    x = NULL;
  }
  pthread_mutex_unlock(&s->mu);
  if (!x) {
    s->ops->log("peer %s: NFC stream refused: %s", c->peer,
                token ? "no such transfer in progress for this peer (or too many streams)"
                      : "no transfer token");
    svm_peer_send_error(t, EACCES, "no such transfer in progress on this host");
    return;
  }
  struct svm_peer_msg *ok = malloc(sizeof *ok);
  if (ok) {
    svm_peer_msg_init(ok, SVM_PEER_OK);
    r = svm_peer_send(t, ok, SVM_PEER_HANDSHAKE_MS);
    free(ok);
    if (r == 0) {
      r = s->ops->nfc_stream(s->ops->opaque, t, dir);
      if (r < 0) {
        s->ops->log("peer %s: NFC stream into %s ended: %s", c->peer, dir, svm_last_error());
        pthread_mutex_lock(&s->mu);
        x->last_errno = -r;
        snprintf(x->last_error, sizeof x->last_error, "%s", svm_last_error());
        pthread_mutex_unlock(&s->mu);
      }
    }
  }
  pthread_mutex_lock(&s->mu);
  for (unsigned i = 0; i < x->nstreams; i++)
    if (x->fds[i] == c->fd) {
      x->fds[i] = x->fds[--x->nstreams];
      break;
    }
  pthread_cond_broadcast(&s->cond);
  pthread_mutex_unlock(&s->mu);
}

/* ---- connections ------------------------------------------------------------------------- */

static void *conn_thread(void *arg)
{
  struct conn *c = arg;
  struct svm_peer_server *s = c->s;
  struct control *k = calloc(1, sizeof *k);
  struct svm_peer_msg *hello = malloc(sizeof *hello);
  struct nfc_tls *t = NULL;
  const char *channel;
  int r;

  if (!k || !hello) {
    s->ops->log("peer %s: out of memory", c->peer);
    goto out;
  }
  r = nfc_tls_new(s->tls, c->fd, c->peer, NULL, &t);
  if (r == 0)
    r = nfc_tls_handshake(t, SVM_PEER_HANDSHAKE_MS);
  if (r < 0) {
    s->ops->log("peer %s refused: %s", c->peer, svm_last_error());
    goto out;
  }
  r = svm_peer_recv(t, hello, SVM_PEER_HANDSHAKE_MS);
  if (r == 0 && hello->type != SVM_PEER_HELLO)
    r = svm_error(EPROTO, "the first message is %s, not HELLO", svm_peer_type_name(hello->type));
  if (r < 0) {
    s->ops->log("peer %s (identity '%s') refused: %s", c->peer, nfc_tls_peer_identity(t),
                r == -ENODATA ? "closed the connection before HELLO" : svm_last_error());
    if (r != -ENODATA)
      svm_peer_send_error(t, r, svm_last_error());
    goto out;
  }
  channel = svm_peer_get(hello, "channel");
  if (channel && strcmp(channel, "nfc") == 0) {
    serve_nfc(c, t, hello);
    goto out;
  }
  k->c = c;
  k->t = t;
  snprintf(k->host, sizeof k->host, "%s", svm_peer_get(hello, "host") ? svm_peer_get(hello, "host")
                                                                       : "");
  if (!channel || strcmp(channel, "control") != 0)
    r = svm_error(EPROTO, "HELLO with channel '%s' (control or nfc)", channel ? channel : "");
  else if (!k->host[0])
    r = svm_error(EPROTO, "HELLO without a host name");
  else
    r = svm_peer_check_identity(t, k->host);
  if (r < 0) {
    s->ops->log("peer %s refused: %s", c->peer, svm_last_error());
    svm_peer_send_error(t, r, svm_last_error());
    goto out;
  }
  s->ops->log("peer %s: host %s (%s%s%s) connected", c->peer, k->host, nfc_tls_kind(t),
              nfc_tls_peer_identity(t)[0] ? ", identity " : "", nfc_tls_peer_identity(t));
  serve_control(k, hello);

out:
  if (t) {
    nfc_tls_shutdown(t);
    nfc_tls_free(t);
  }
  free(hello);
  free(k);
  pthread_mutex_lock(&s->mu);
  close(c->fd);
  c->fd = -1;
  c->done = true;
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

/* Join the threads of finished connections. */
static void reap(struct svm_peer_server *s, bool all)
{
  for (;;) {
    struct conn *done = NULL;

    pthread_mutex_lock(&s->mu);
    for (struct conn **pp = &s->conns; *pp; pp = &(*pp)->next)
      if ((*pp)->done || all) {
        done = *pp;
        *pp = done->next;
        s->nconns--;
        break;
      }
    pthread_mutex_unlock(&s->mu);
    if (!done)
      return;
    pthread_join(done->thread, NULL);
    free(done);
  }
}

static void accept_one(struct svm_peer_server *s)
{
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  char host[NI_MAXHOST] = "?", port[NI_MAXSERV] = "?";
  struct conn *c;
  int fd = accept4(s->lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
  int one = 1;

  if (fd < 0)
    return;
  getnameinfo((struct sockaddr *)&ss, sl, host, sizeof host, port, sizeof port,
              NI_NUMERICHOST | NI_NUMERICSERV);
  reap(s, false);
  c = calloc(1, sizeof *c);
  pthread_mutex_lock(&s->mu);
  if (!c || s->nconns >= SVM_PEER_MAX_CONNS) {
    pthread_mutex_unlock(&s->mu);
    s->ops->log("peer %s:%s refused: %s", host, port,
                c ? "too many peer connections" : "out of memory");
    free(c);
    close(fd);
    return;
  }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  c->s = s;
  c->fd = fd;
  snprintf(c->peer, sizeof c->peer, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port);
  if (pthread_create(&c->thread, NULL, conn_thread, c) != 0) {
    pthread_mutex_unlock(&s->mu);
    s->ops->log("peer %s refused: cannot start a thread", c->peer);
    close(fd);
    free(c);
    return;
  }
  c->next = s->conns;
  s->conns = c;
  s->nconns++;
  pthread_mutex_unlock(&s->mu);
}

static void *accept_thread(void *arg)
{
  struct svm_peer_server *s = arg;

  for (;;) {
    struct pollfd p[2] = { { .fd = s->lfd, .events = POLLIN },
                           { .fd = s->stop_pipe[0], .events = POLLIN } };
    if (poll(p, 2, 1000) < 0 && errno != EINTR)
      break;
    if (p[1].revents)
      break;
    if (p[0].revents)
      accept_one(s);
    else
      reap(s, false);
  }
  return NULL;
}

static int listen_on(struct svm_peer_server *s, const char *spec)
{
  struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                            .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
  char host[256], port[16], h[NI_MAXHOST], p[NI_MAXSERV];
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  struct addrinfo *res;
  const char *colon = strrchr(spec, ':');
  size_t n;
  int fd, one = 1, r;

  if (!colon || !colon[1] || (n = (size_t)(colon - spec)) >= sizeof host ||
      strlen(colon + 1) >= sizeof port)
    return svm_error(EINVAL, "--mgmt %s: expected ADDR:PORT", spec);
  memcpy(host, spec, n);
  host[n] = '\0';
  if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
    memmove(host, host + 1, n - 2);
    host[n - 2] = '\0';
  }
  strcpy(port, colon + 1);
  r = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
  if (r != 0)
    return svm_error(EINVAL, "--mgmt %s: %s", spec, gai_strerror(r));
  fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, 0);
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 64) < 0) {
    int e = errno;
    freeaddrinfo(res);
    if (fd >= 0)
      close(fd);
    return svm_error(e, "--mgmt %s: %s", spec, strerror(e));
  }
  freeaddrinfo(res);
  getsockname(fd, (struct sockaddr *)&ss, &sl);
  getnameinfo((struct sockaddr *)&ss, sl, h, sizeof h, p, sizeof p,
              NI_NUMERICHOST | NI_NUMERICSERV);
  snprintf(s->addr, sizeof s->addr, strchr(h, ':') ? "[%s]:%s" : "%s:%s", h, p);
  s->lfd = fd;
  return 0;
}

int svm_peer_server_start(const char *listen, struct nfc_tls_config *tls,
                          const struct svm_peer_ops *ops, struct svm_peer_server **out)
{
  struct svm_peer_server *s = calloc(1, sizeof *s);
  int r;

  if (!s)
    return svm_error(ENOMEM, "out of memory");
  s->ops = ops;
  s->tls = tls;
  s->lfd = -1;
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cond, NULL);
  if (pipe2(s->stop_pipe, O_CLOEXEC) < 0) {
    free(s);
    return svm_error(errno, "pipe: %s", strerror(errno));
  }
  r = listen_on(s, listen);
  if (r == 0 && pthread_create(&s->accept_thread, NULL, accept_thread, s) != 0)
    r = svm_error(EAGAIN, "cannot start the peer link's thread");
  if (r < 0) {
    if (s->lfd >= 0)
      close(s->lfd);
    close(s->stop_pipe[0]);
    close(s->stop_pipe[1]);
    free(s);
    return r;
  }
  *out = s;
  return 0;
}

const char *svm_peer_server_addr(const struct svm_peer_server *s)
{
  return s->addr;
}

void svm_peer_server_stop(struct svm_peer_server *s)
{
  if (!s)
    return;
  if (write(s->stop_pipe[1], "x", 1) < 0) {
    /* the thread also wakes every second; it sees nothing, though: shutdown the listener */
    shutdown(s->lfd, SHUT_RDWR);
  }
  pthread_join(s->accept_thread, NULL);
  close(s->lfd);
  pthread_mutex_lock(&s->mu);
  s->stopping = true;
  for (struct conn *c = s->conns; c; c = c->next)
    if (c->fd >= 0)
      shutdown(c->fd, SHUT_RDWR);
  pthread_mutex_unlock(&s->mu);
  reap(s, true);
  close(s->stop_pipe[0]);
  close(s->stop_pipe[1]);
  pthread_cond_destroy(&s->cond);
  pthread_mutex_destroy(&s->mu);
  free(s);
}
