/* The client side of the control socket (include/svmotion/client.h). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <svmotion/client.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "svm/control/proto.h"

struct svm_client {
  char *path;
  char *state_dir;
  int fd;            /* connected, not yet used; -1 after a call */
};

static int connect_sock(struct svm_client *c)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  CLEANUP_CLOSE int fd = -1;

  if (strlen(c->path) >= sizeof sa.sun_path)
    return svm_error(ENAMETOOLONG, "%s: socket path too long (use a shorter --state)", c->path);
  strcpy(sa.sun_path, c->path);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return svm_error(errno, "socket: %s", strerror(errno));
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int e = errno;
    if (e == ENOENT || e == ECONNREFUSED)
      return svm_error(e, "the agent svmd is not running for state directory %s (%s: %s); "
                       "start it with: svmd --name HOST --state %s --datastore NAME=DIR",
                       c->state_dir, c->path, strerror(e), c->state_dir);
    if (e == EACCES)
      return svm_error(e, "%s: %s (svmd lets only root, its own user and the members of its "
                       "--group talk to it)", c->path, strerror(e));
    return svm_error(e, "%s: %s", c->path, strerror(e));
  }
  c->fd = TAKE_FD(fd);
  return 0;
}

int svm_client_connect(const char *state_dir, struct svm_client **out)
{
  struct svm_client *c = calloc(1, sizeof *c);
  int r;

  *out = NULL;
  if (!c)
    return svm_error(ENOMEM, "out of memory");
  c->fd = -1;
  c->state_dir = strdup(state_dir);
  if (!c->state_dir || asprintf(&c->path, "%s/control.sock", state_dir) < 0) {
    c->path = NULL;
    r = svm_error(ENOMEM, "out of memory");
  } else {
    r = connect_sock(c);
  }
  if (r < 0) {
    svm_client_close(c);
    return r;
  }
  *out = c;
  return 0;
}

void svm_client_close(struct svm_client *c)
{
  if (!c)
    return;
  if (c->fd >= 0)
    close(c->fd);
  free(c->path);
  free(c->state_dir);
  free(c);
}

static int send_all(int fd, const char *p, size_t n)
{
  while (n) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0)
      return -errno;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* The answer up to its newline (bounded): *out holds *outlen bytes, the last one '\n'. */
static int read_response(struct svm_client *c, char **out, size_t *outlen)
{
  CLEANUP_FREE char *resp = NULL;
  size_t len = 0, cap = 0;

  for (;;) {
    if (len + 4096 + 1 > cap) {
      size_t ncap = cap ? cap * 2 : 8192;
      char *n = realloc(resp, ncap);
      if (!n)
        return svm_error(ENOMEM, "out of memory");
      resp = n;
      cap = ncap;
    }
    ssize_t got = recv(c->fd, resp + len, cap - len - 1, 0);
    if (got < 0 && errno == EINTR)
      continue;
    if (got < 0)
      return svm_error(errno, "%s: reading the response: %s", c->path, strerror(errno));
    if (got == 0)
      break;
    len += (size_t)got;
    if (len > (size_t)SVM_CTL_MAX_RESPONSE + 1)
      return svm_error(EPROTO, "%s: response longer than %d bytes", c->path,
                       SVM_CTL_MAX_RESPONSE);
    if (memchr(resp + len - (size_t)got, '\n', (size_t)got))
      break;
  }
  if (len == 0 || resp[len - 1] != '\n')
    return svm_error(EPROTO, "%s: svmd closed the connection without a complete answer (did it "
                     "crash? see its log)", c->path);
  *out = TAKE_PTR(resp);
  *outlen = len;
  return 0;
}

/* One request and its answer on the connection, which is closed after (one per connection). */
static int exchange(struct svm_client *c, const char *verb, size_t nargs,
                    const char *const *keys, const char *const *values, char **payload)
{
  CLEANUP_FREE char *req = NULL;
  CLEANUP_FREE char *resp = NULL;
  size_t reqlen, len = 0;
  int r;

  r = svm_ctl_request_format(verb, nargs, keys, values, &req, &reqlen);
  if (r < 0)
    return r;
  r = send_all(c->fd, req, reqlen);
  if (r < 0)
    return svm_error(-r, "%s: sending the request: %s", c->path, strerror(-r));
  shutdown(c->fd, SHUT_WR);
  r = read_response(c, &resp, &len);
  if (r < 0)
    return r;
  return svm_ctl_response_parse(resp, len - 1, payload);
}

int svm_client_call(struct svm_client *c, const char *verb, size_t nargs,
                    const char *const *keys, const char *const *values, char **payload)
{
  int r;

  *payload = NULL;
  if (c->fd < 0) {
    r = connect_sock(c);
    if (r < 0)
      return r;
  }
  r = exchange(c, verb, nargs, keys, values, payload);
  close(c->fd);
  c->fd = -1;
  return r;
}
