/* Sockets bound to the migration interface: its device (SO_BINDTODEVICE, so that the route
 * lookup only considers that interface) and its address. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/error.h"
#include "svm/net/net.h"

static int bound_socket(const struct svm_net_iface *i, int type, int proto, unsigned port)
{
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr = i->in,
                            .sin_port = htons((uint16_t)port) };
  int fd = socket(AF_INET, type | SOCK_CLOEXEC, proto), one = 1, e;

  if (fd < 0)
    return svm_error(errno, "socket: %s", strerror(errno));
  if (setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, i->name, (socklen_t)strlen(i->name)) < 0) {
    e = errno;
    close(fd);
    return svm_error(e, "binding to interface %s: %s (svmd needs CAP_NET_RAW)", i->name,
                     strerror(e));
  }
  if (type == SOCK_STREAM)
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    e = errno;
    close(fd);
    return svm_error(e, "bind %s:%u on %s: %s", i->addr, port, i->name, strerror(e));
  }
  return fd;
}

int svm_net_bound_socket(const struct svm_net_iface *i, int type, int proto)
{
  return bound_socket(i, type, proto, 0);
}

int svm_net_listen(const struct svm_net_iface *i, unsigned port)
{
  int fd = bound_socket(i, SOCK_STREAM, 0, port);

  if (fd >= 0 && listen(fd, 16) < 0) {
    int e = errno;
    close(fd);
    return svm_error(e, "listen %s:%u: %s", i->addr, port, strerror(e));
  }
  return fd;
}

int svm_net_connect(const struct svm_net_iface *i, struct in_addr dst, unsigned port,
                    int timeout_ms)
{
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr = dst,
                            .sin_port = htons((uint16_t)port) };
  char d[INET_ADDRSTRLEN];
  int fd = bound_socket(i, SOCK_STREAM | SOCK_NONBLOCK, 0, 0), err = 0, one = 1;
  struct pollfd p = { .fd = fd, .events = POLLOUT };
  socklen_t sl = sizeof err;

  if (fd < 0)
    return fd;
  inet_ntop(AF_INET, &dst, d, sizeof d);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    if (errno != EINPROGRESS)
      err = errno;
    else if (poll(&p, 1, timeout_ms) != 1)
      err = ETIMEDOUT;
    else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0)
      err = errno;
  }
  if (err) {
    close(fd);
    return svm_error(err, "connect from %s (%s) to %s:%u: %s", i->addr, i->name, d, port,
                     strerror(err));
  }
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}
