/* The --migration listener and its client: TLS sessions on sockets bound to the migration
 * interface. The hot data of live moves will arrive here; today it serves the prechecks' probe
 * (HELLO channel=probe: who is there, over which TLS identity) and the bandwidth sink
 * (channel=bandwidth: chunks "u32 length, data" until a 0 length, then OK bytes=N).
 *
 * One connection at a time, every wait bounded: a probe is short, and a stuck client is cut
 * after SVM_PEER_HANDSHAKE_MS of silence. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "svm/net/net.h"
#include "svm/peer/peer.h"

enum { CHUNK = 256 << 10 };

struct svm_net_server {
  int lfd, stop_pipe[2];
  pthread_t thread;
  struct nfc_tls_config *tls;
  char self[256];
  void (*log)(const char *fmt, ...);
};

/* Buffers are allocated, not thread-local: static TLS is part of every thread's stack, and
 * the NBD server's threads have small ones. */
static int sink(struct nfc_tls *t, uint64_t *bytes)
{
  char *buf = malloc(CHUNK);
  uint8_t h[4];
  int r = 0;

  if (!buf)
    return svm_error(ENOMEM, "out of memory");

  for (;;) {
    uint32_t n;
    if ((r = nfc_tls_read_full(t, h, 4, SVM_PEER_HANDSHAKE_MS)) < 0)
      break;
    n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    if (n == 0)
      break;
    if (n > CHUNK) {
      r = svm_error(EPROTO, "bandwidth chunk of %" PRIu32 " bytes (at most %d)", n, CHUNK);
      break;
    }
    if ((r = nfc_tls_read_full(t, buf, n, SVM_PEER_HANDSHAKE_MS)) < 0)
      break;
    *bytes += n;
  }
  free(buf);
  return r;
}

static void serve(struct svm_net_server *s, int fd, const char *peer)
{
  struct svm_peer_msg *m = malloc(sizeof *m);
  struct nfc_tls *t = NULL;
  const char *ch, *host;
  bool bulk;
  uint64_t bytes = 0;
  int r;

  if (!m)
    return;
  r = nfc_tls_new(s->tls, fd, peer, NULL, &t);
  if (r == 0)
    r = nfc_tls_handshake(t, SVM_PEER_HANDSHAKE_MS);
  if (r == 0)
    r = svm_peer_recv(t, m, SVM_PEER_HANDSHAKE_MS);
  if (r == 0 && m->type != SVM_PEER_HELLO)
    r = svm_error(EPROTO, "the first message is not HELLO");
  if (r < 0) {
    s->log("migration %s refused: %s", peer, svm_last_error());
    goto out;
  }
  ch = svm_peer_get(m, "channel");
  host = svm_peer_get(m, "host");
  r = svm_peer_check_identity(t, host);
  if (r == 0 && (!ch || (strcmp(ch, "probe") && strcmp(ch, "bandwidth"))))
    r = svm_error(EPROTO, "HELLO with channel '%s' (probe or bandwidth)", ch ? ch : "");
  if (r < 0) {
    s->log("migration %s refused: %s", peer, svm_last_error());
    svm_peer_send_error(t, r, svm_last_error());
    goto out;
  }
  bulk = strcmp(ch, "bandwidth") == 0;      /* before m is reused */
  svm_peer_msg_init(m, SVM_PEER_OK);
  svm_peer_msg_add(m, "host", "%s", s->self);
  if (svm_peer_send(t, m, SVM_PEER_HANDSHAKE_MS) < 0 || !bulk)
    goto out;
  r = sink(t, &bytes);
  if (r < 0) {
    s->log("migration %s: bandwidth probe cut: %s", peer, svm_last_error());
    goto out;
  }
  svm_peer_msg_init(m, SVM_PEER_OK);
  svm_peer_msg_add(m, "bytes", "%" PRIu64, bytes);
  svm_peer_send(t, m, SVM_PEER_HANDSHAKE_MS);
  s->log("migration %s: bandwidth probe received %" PRIu64 " bytes", peer, bytes);
out:
  if (t) {
    nfc_tls_shutdown(t);
    nfc_tls_free(t);
  }
  free(m);
}

static void *accept_thread(void *arg)
{
  struct svm_net_server *s = arg;

  for (;;) {
    struct pollfd p[2] = { { .fd = s->lfd, .events = POLLIN },
                           { .fd = s->stop_pipe[0], .events = POLLIN } };
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    char peer[64], h[INET_ADDRSTRLEN];
    int fd;

    if (poll(p, 2, -1) < 0 && errno != EINTR)
      break;
    if (p[1].revents)
      break;
    if (!p[0].revents)
      continue;
    fd = accept4(s->lfd, (struct sockaddr *)&sa, &sl, SOCK_CLOEXEC);
    if (fd < 0)
      continue;
    inet_ntop(AF_INET, &sa.sin_addr, h, sizeof h);
    snprintf(peer, sizeof peer, "%s:%u", h, ntohs(sa.sin_port));
    serve(s, fd, peer);
    close(fd);
  }
  return NULL;
}

int svm_net_server_start(const struct svm_net_iface *i, unsigned port,
                         struct nfc_tls_config *tls, const char *self,
                         void (*log)(const char *fmt, ...), struct svm_net_server **out)
{
  struct svm_net_server *s = calloc(1, sizeof *s);

  if (!s)
    return svm_error(ENOMEM, "out of memory");
  s->tls = tls;
  s->log = log;
  snprintf(s->self, sizeof s->self, "%s", self);
  s->lfd = svm_net_listen(i, port);
  if (s->lfd < 0) {
    free(s);
    return svm_error_prefix("--migration %s:%u", i->addr, port);
  }
  if (pipe2(s->stop_pipe, O_CLOEXEC) < 0 ||
      pthread_create(&s->thread, NULL, accept_thread, s) != 0) {
    close(s->lfd);
    free(s);
    return svm_error(EAGAIN, "cannot start the migration listener");
  }
  *out = s;
  return 0;
}

unsigned svm_net_server_port(const struct svm_net_server *s)
{
  struct sockaddr_in sa;
  socklen_t sl = sizeof sa;

  if (getsockname(s->lfd, (struct sockaddr *)&sa, &sl) < 0)
    return 0;
  return ntohs(sa.sin_port);
}

void svm_net_server_stop(struct svm_net_server *s)
{
  if (!s)
    return;
  if (write(s->stop_pipe[1], "x", 1) < 0)
    shutdown(s->lfd, SHUT_RDWR);
  pthread_join(s->thread, NULL);
  close(s->lfd);
  close(s->stop_pipe[0]);
  close(s->stop_pipe[1]);
  free(s);
}

int svm_net_dial(const struct svm_peer_creds *creds, const struct svm_net_iface *i,
                 struct in_addr dst, unsigned port, const char *channel, const char *self,
                 char *peer_host, size_t peer_host_len, struct nfc_tls **out)
{
  struct svm_peer_msg *m = malloc(sizeof *m);
  char label[64], ip[INET_ADDRSTRLEN];
  struct nfc_tls *t = NULL;
  int fd, r;

  *out = NULL;
  if (!m)
    return svm_error(ENOMEM, "out of memory");
  inet_ntop(AF_INET, &dst, ip, sizeof ip);
  snprintf(label, sizeof label, "%s:%u", ip, port);
  fd = svm_net_connect(i, dst, port, SVM_PEER_HANDSHAKE_MS);
  if (fd < 0) {
    free(m);
    return fd;
  }
  r = nfc_tls_new(creds->client, fd, label, NULL, &t);
  if (r < 0) {
    close(fd);
    free(m);
    return r;
  }
  r = nfc_tls_handshake(t, SVM_PEER_HANDSHAKE_MS);
  if (r == 0) {
    svm_peer_msg_init(m, SVM_PEER_HELLO);
    svm_peer_msg_add(m, "channel", "%s", channel);
    svm_peer_msg_add(m, "host", "%s", self);
    r = svm_peer_call(t, m, SVM_PEER_HANDSHAKE_MS);
  }
  if (r == 0) {
    const char *h = svm_peer_get(m, "host");
    snprintf(peer_host, peer_host_len, "%s", h ? h : "");
    r = svm_peer_check_identity(t, peer_host);
  }
  free(m);
  if (r < 0) {
    svm_peer_hangup(t);
    return r;
  }
  *out = t;
  return 0;
}

static double now_s(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int svm_net_bandwidth(struct nfc_tls *t, unsigned seconds, unsigned long long *bytes,
                      double *elapsed)
{
  uint8_t *buf = malloc(4 + CHUNK);
  struct svm_peer_msg *m;
  double t0 = now_s();
  uint64_t got = 0;
  int r = 0;

  if (!buf)
    return svm_error(ENOMEM, "out of memory");
  /* incompressible enough: TLS does not compress anyway, but keep it honest */
  for (size_t k = 4; k < 4 + CHUNK; k++)
    buf[k] = (uint8_t)(k * 2654435761u >> 13);
  buf[0] = (uint8_t)(CHUNK >> 24), buf[1] = (uint8_t)(CHUNK >> 16);
  buf[2] = (uint8_t)(CHUNK >> 8), buf[3] = (uint8_t)CHUNK;
  while (r == 0 && now_s() - t0 < seconds)
    r = nfc_tls_write_full(t, buf, 4 + CHUNK, SVM_PEER_HANDSHAKE_MS);
  if (r == 0) {
    memset(buf, 0, 4);
    r = nfc_tls_write_full(t, buf, 4, SVM_PEER_HANDSHAKE_MS);
  }
  free(buf);
  if (r < 0)
    return r;
  m = malloc(sizeof *m);
  if (!m)
    return svm_error(ENOMEM, "out of memory");
  r = svm_peer_recv(t, m, SVM_PEER_HANDSHAKE_MS);
  if (r == 0 && m->type != SVM_PEER_OK)
    r = svm_error(EPROTO, "the bandwidth probe's answer is %s", svm_peer_type_name(m->type));
  if (r == 0)
    r = svm_peer_get_u64(m, "bytes", &got);
  free(m);
  *elapsed = now_s() - t0;
  *bytes = got;
  return r;
}
