/* The agent's control socket server (see server.h). */
#include <errno.h>
#include <poll.h>
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

enum { CONTROL_IO_TIMEOUT_S = 5 };

struct svm_control {
  int fd;
  char *path;
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

/* Read one line (bounded); 1 = got it (without '\n' in *len), 0 = reply already sent. */
static int read_request(int fd, char *buf, size_t cap, size_t *len)
{
  size_t got = 0;

  for (;;) {
    ssize_t n = recv(fd, buf + got, cap - got, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        reply_err(fd, ETIMEDOUT, "no complete request within the time limit");
      return 0;
    }
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

  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
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

int svm_control_serve(struct svm_control *c, int stop_fd, svm_control_handler h, void *opaque)
{
  CLEANUP_FREE char *buf = malloc(SVM_CTL_MAX_REQUEST + 1);

  if (!buf)
    return svm_error(ENOMEM, "out of memory");
  for (;;) {
    struct pollfd p[2] = { { .fd = c->fd, .events = POLLIN }, { .fd = stop_fd, .events = POLLIN } };
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      return svm_error(errno, "poll: %s", strerror(errno));
    }
    if (p[1].revents)
      break;
    if (p[0].revents & POLLIN) {
      int fd = accept4(c->fd, NULL, NULL, SOCK_CLOEXEC);
      if (fd < 0)
        continue;
      if (svm_control_peer_check(fd, c->group) == 0)
        serve_one(fd, buf, h, opaque);
      else
        reply_err(fd, EACCES, svm_last_error());
      drain(fd, buf);
      close(fd);
    }
  }
  return 0;
}
