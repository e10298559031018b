/* The agent's control socket server (see server.h).
 *
 * One thread per client, at most CONTROL_MAX_CLIENTS at once: a client that sends half a
 * request, or never reads its answer, holds only its own thread (until its deadline), and a
 * long command (an eager-zeroed create, a drain) holds only its caller's. Past the cap a
 * client is answered EBUSY at once rather than queued behind the others. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "svm/control/peercred.h"
#include "svm/control/server.h"

enum {
  CONTROL_IO_TIMEOUT_S = 5,          /* the whole request, and each send of the answer */
  CONTROL_MAX_CLIENTS = 64,
  CONTROL_THREAD_STACK = 256 * 1024,
};

struct svm_control {
  int fd;
  char *path;
  pthread_mutex_t mu;
  pthread_cond_t cv;                 /* signalled when a client thread ends */
  unsigned nclients;                 /* client threads running, under mu */
  gid_t group;              /* may connect besides root and our user; SVM_NO_GROUP: none */
};

void svm_control_set_group(struct svm_control *c, gid_t group)
{
  c->group = group;
}

int svm_control_open(const char *path, struct svm_control **out)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  struct svm_control *c;
  CLEANUP_CLOSE int fd = -1;

  *out = NULL;
  if (strlen(path) >= sizeof sa.sun_path)
    return svm_error(ENAMETOOLONG, "%s: socket path too long (use a shorter --state)", path);
  strcpy(sa.sun_path, path);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return svm_error(errno, "socket: %s", strerror(errno));
  unlink(path);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 16) < 0)
    return svm_error(errno, "%s: %s", path, strerror(errno));
  c = calloc(1, sizeof *c);
  if (!c || !(c->path = strdup(path))) {
    free(c);
    unlink(path);
    return svm_error(ENOMEM, "out of memory");
  }
  c->fd = TAKE_FD(fd);
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  c->group = SVM_NO_GROUP;
  *out = c;
  return 0;
}

void svm_control_close(struct svm_control *c)
{
  if (!c)
    return;
  close(c->fd);
  unlink(c->path);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  free(c->path);
  free(c);
}

static void send_all(int fd, const char *p, size_t n)
{
  while (n) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return;       /* the client went away; nothing to tell it */
    p += w;
    n -= (size_t)w;
  }
}

static void reply_err(int fd, int errnum, const char *msg)
{
  char *out;
  size_t len;

  if (svm_ctl_response_err(errnum, msg, &out, &len) == 0) {
    send_all(fd, out, len);
    free(out);
  }
}

static int64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Read one line (bounded) within one deadline for the whole request, however slowly its bytes
 * trickle in; 1 = got it (without '\n' in *len), 0 = reply already sent. */
static int read_request(int fd, char *buf, size_t cap, size_t *len)
{
  int64_t deadline = now_ms() + CONTROL_IO_TIMEOUT_S * 1000;
  size_t got = 0;

  for (;;) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int64_t left = deadline - now_ms();
    int pr = left > 0 ? poll(&p, 1, (int)left) : 0;
    if (pr < 0 && errno == EINTR)
      continue;
    if (pr == 0) {
      reply_err(fd, ETIMEDOUT, "no complete request within the time limit");
      return 0;
    }
    ssize_t n = recv(fd, buf + got, cap - got, MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
      continue;
    if (n < 0)
      return 0;
    if (n == 0) {
      if (got)
        reply_err(fd, EINVAL, "request does not end with a newline");
      return 0;
    }
    char *nl = memchr(buf + got, '\n', (size_t)n);
    got += (size_t)n;
    if (nl) {
      if ((size_t)(nl - buf) + 1 != got) {
        reply_err(fd, EINVAL, "one request per connection: bytes after the request's newline");
        return 0;
      }
      *len = (size_t)(nl - buf);
      return 1;
    }
    if (got == cap) {
      char msg[80];
      snprintf(msg, sizeof msg, "request longer than %d bytes", SVM_CTL_MAX_REQUEST);
      reply_err(fd, EMSGSIZE, msg);
      return 0;
    }
  }
}

static void serve_one(int fd, char *buf, svm_control_handler h, void *opaque)
{
  struct timeval tv = { .tv_sec = CONTROL_IO_TIMEOUT_S };
  struct svm_ctl_request req;
  CLEANUP_FREE char *payload = NULL;
  CLEANUP_FREE char *out = NULL;
  size_t len;
  int r;

  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (read_request(fd, buf, SVM_CTL_MAX_REQUEST + 1, &len) != 1)
    return;
  svm_error_clear();
  r = svm_ctl_request_parse(buf, len, &req);
  if (r < 0) {
    reply_err(fd, -r, svm_last_error());
    return;
  }
  svm_error_clear();
  r = h(opaque, &req, &payload);
  svm_ctl_request_clear(&req);
  if (r == 0)
    r = svm_ctl_response_ok(payload ? payload : "", &out, &len);
  if (r < 0)
    reply_err(fd, -r, svm_last_error());
  else
    send_all(fd, out, len);
}

/* Before closing, read what the client may still be sending (bounded in bytes and time): a
 * unix socket closed with unread data resets the connection, and the client would lose the
 * answer (an error for a request that was too long, say). */
static void drain(int fd, char *buf)
{
  struct timeval tv = { .tv_sec = 1 };
  size_t total = 0;

  shutdown(fd, SHUT_WR);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  while (total < 4 * (size_t)SVM_CTL_MAX_REQUEST) {
    ssize_t n = recv(fd, buf, SVM_CTL_MAX_REQUEST, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    total += (size_t)n;
  }
}

struct client {
  struct svm_control *c;
  int fd;
  svm_control_handler h;
  void *opaque;
};

static void *client_thread(void *arg)
{
  struct client *cl = arg;
  struct svm_control *c = cl->c;
  char *buf = malloc(SVM_CTL_MAX_REQUEST + 1);

  if (buf) {
    if (svm_control_peer_check(cl->fd, c->group) == 0)
      serve_one(cl->fd, buf, cl->h, cl->opaque);
    else
      reply_err(cl->fd, EACCES, svm_last_error());
    drain(cl->fd, buf);
  } else {
    reply_err(cl->fd, ENOMEM, "out of memory");
  }
  close(cl->fd);
  free(buf);
  free(cl);
  pthread_mutex_lock(&c->mu);
  c->nclients--;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

/* Hand a new connection to a thread of its own, or answer EBUSY past the cap. */
static void start_client(struct svm_control *c, int fd, svm_control_handler h, void *opaque)
{
  struct client *cl = malloc(sizeof *cl);
  pthread_attr_t attr;
  pthread_t t;
  bool full;

  pthread_mutex_lock(&c->mu);
  full = c->nclients >= CONTROL_MAX_CLIENTS;
  if (!full && cl)
    c->nclients++;
  pthread_mutex_unlock(&c->mu);
  if (full || !cl) {
    char msg[128];
    snprintf(msg, sizeof msg, "svmd is serving %d control clients already; try again",
             CONTROL_MAX_CLIENTS);
    reply_err(fd, full ? EBUSY : ENOMEM, full ? msg : "out of memory");
    close(fd);
    free(cl);
    return;
  }
  *cl = (struct client){ .c = c, .fd = fd, .h = h, .opaque = opaque };
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, CONTROL_THREAD_STACK);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  if (pthread_create(&t, &attr, client_thread, cl) != 0) {
    reply_err(fd, EAGAIN, "svmd could not start a thread for this request; try again");
    close(fd);
    free(cl);
    pthread_mutex_lock(&c->mu);
    c->nclients--;
    pthread_mutex_unlock(&c->mu);
  }
  pthread_attr_destroy(&attr);
}

int svm_control_serve(struct svm_control *c, int stop_fd, svm_control_handler h, void *opaque)
{
  int ret = 0;

  for (;;) {
    struct pollfd p[2] = { { .fd = c->fd, .events = POLLIN }, { .fd = stop_fd, .events = POLLIN } };
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      ret = svm_error(errno, "poll: %s", strerror(errno));
      break;
    }
    if (p[1].revents)
      break;
    if (p[0].revents & POLLIN) {
      int fd = accept4(c->fd, NULL, NULL, SOCK_CLOEXEC);
      if (fd >= 0)
        start_client(c, fd, h, opaque);
    }
  }
  /* the handler's state goes away after we return: wait for the requests being served */
  pthread_mutex_lock(&c->mu);
  while (c->nclients)
    pthread_cond_wait(&c->cv, &c->mu);
  pthread_mutex_unlock(&c->mu);
  return ret;
}
