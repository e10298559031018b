/* svm-nfc: the NFC channel outside svmd, for tests and benchmarks.
 *
 *   svm-nfc recv [--port-file F] ADDR:PORT DIR        receive into DIR until SIGTERM
 *   svm-nfc send [--streams N] [--rate R] [--provisioning P] [--cut-after BYTES] [--json]
 *                ADDR:PORT SRC [NAME]                 put a file (or every file of a folder)
 *
 * TLS 1.3 with --tls-dir DIR (QEMU's x509 layout) or --tls-psk FILE (identity:hexkey lines),
 * plaintext only with --insecure. --cut-after drops every connection of the send once that many
 * bytes went on the wire (a link cut at a known point; sending again resumes).
 *
 * It lives under tests/ because it uses the engine's internal headers; tools/ use the public
 * API only. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <svmotion/cli.h>
#include <svmotion/convert.h>
#include <svmotion/error.h>
#include <svmotion/tls.h>

#include "common/error.h"
#include "nfc/tls.h"
#include "svm/copy/nfc.h"

enum { HANDSHAKE_MS = 10000 };

/* How long a read or write may wait for the socket: 60 s, or SVM_NFC_IO_TIMEOUT_MS (tests that
 * cut a link make the sender give up sooner). */
static int io_timeout_ms(void)
{
  const char *s = getenv("SVM_NFC_IO_TIMEOUT_MS");
  int v = s ? atoi(s) : 0;
  return v > 0 ? v : 60000;
}

static struct nfc_tls_config *tls_cfg;     /* NULL: --insecure */

/* --tls-dir, --tls-psk, --insecure: 1 when c was one of them, -1 on a bad one. */
static int tls_option(int c, enum nfc_tls_role role, bool *chosen)
{
  int r;

  switch (c) {
  case 'D': r = nfc_tls_config_x509(role, optarg, &tls_cfg); break;
  case 'P': r = nfc_tls_config_psk(role, optarg, &tls_cfg); break;
  case 'i': r = 0; break;
  default: return 0;
  }
  if (r < 0) {
    fprintf(stderr, "svm-nfc: %s\n", svm_last_error());
    return -1;
  }
  *chosen = true;
  return 1;
}

static const char usage_text[] =
  "Usage: svm-nfc recv [OPTIONS] ADDR:PORT DIR\n"
  "       svm-nfc send [OPTIONS] ADDR:PORT SRC [NAME]\n"
  "       svm-nfc get [OPTIONS] ADDR:PORT NAME DIR   fetch NAME from a receiver's folder\n"
  "       svm-nfc creds DIR HOST      test CA and certificates in DIR (x509 layout)\n"
  "Send files over svmotion's NFC channel, or receive them into DIR.\n"
  "\n"
  "both:\n"
  "  --tls-dir DIR        TLS 1.3 with x509 credentials in QEMU's layout\n"
  "  --tls-psk FILE       TLS 1.3 with a pre-shared key (identity:hexkey lines)\n"
  "  --insecure           plaintext TCP (one of these three is required)\n"
  "recv:\n"
  "  --port-file FILE     write the port listened on (PORT 0 = any free port)\n"
  "  --sync-mb N          make data durable every N MiB (default 64)\n"
  "get: --provisioning P, --json, and the TLS options\n"
  "send: SRC is a file (sent as NAME, default its base name) or a folder (every file)\n"
  "  --streams N          TCP streams per file (default 1, at most 16)\n"
  "  --rate RATE          bandwidth cap, bytes per second with a suffix (200M)\n"
  "  --provisioning P     thin, thick or eager-zeroed-thick on the receiver (default thin)\n"
  "  --cut-after BYTES    drop the connections after BYTES on the wire (tests)\n"
  "  --json               print the counters as one JSON object\n"
  "  --help, --version\n";

static int usage(int code)
{
  fputs(usage_text, code ? stderr : stdout);
  return code;
}

static int split_addr(const char *s, char *host, size_t cap, char *port, size_t pcap)
{
  const char *c = strrchr(s, ':');
  if (c == NULL || (size_t)(c - s) >= cap || strlen(c + 1) >= pcap)
    return -1;
  memcpy(host, s, (size_t)(c - s));
  host[c - s] = '\0';
  strcpy(port, c + 1);
  return 0;
}

/* ---- recv ---------------------------------------------------------------------------- */

struct conn_job {
  int fd, dirfd;
  char peer[64];
  struct nfc_recv_options o;
};

static void *serve_one(void *opaque)
{
  struct conn_job *j = opaque;
  struct nfc_conn *c;
  struct nfc_recv_counters n;
  struct nfc_tls *t;

  /* Authenticated before a byte of the protocol is read: a peer that fails is refused here. */
  if (nfc_tls_new(tls_cfg, j->fd, j->peer, NULL, &t) < 0 ||
      (nfc_tls_handshake(t, HANDSHAKE_MS) < 0 && (nfc_tls_free(t), true))) {
    fprintf(stderr, "svm-nfc recv: %s: refused: %s\n", j->peer, svm_last_error());
    close(j->fd);
    free(j);
    return NULL;
  }
  if (nfc_conn_new_tls(t, j->fd, io_timeout_ms(), &c) == 0) {
    if (svm_nfc_serve(c, j->dirfd, &j->o, &n) < 0)
      fprintf(stderr, "svm-nfc recv: %s\n", svm_last_error());
    nfc_conn_free(c);
  }
  free(j);
  return NULL;
}

static int do_recv(int argc, char **argv)
{
  const char *port_file = NULL;
  uint64_t sync_mb = 64;
  static const struct option opts[] = { { "port-file", 1, 0, 'p' }, { "sync-mb", 1, 0, 's' },
                                        { "insecure", 0, 0, 'i' }, { "tls-dir", 1, 0, 'D' },
                                        { "tls-psk", 1, 0, 'P' }, { "help", 0, 0, 'h' },
                                        { 0, 0, 0, 0 } };
  bool chosen = false;
  int c, t;

  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    if ((t = tls_option(c, NFC_TLS_SERVER, &chosen)) != 0) {
      if (t < 0)
        return 1;
      continue;
    }
    switch (c) {
    case 'p': port_file = optarg; break;
    case 's': sync_mb = strtoull(optarg, NULL, 10); break;
    case 'h': return usage(0);
    default: return usage(2);
    }
  }
  if (argc - optind != 2 || sync_mb == 0)
    return usage(2);
  if (!chosen) {
    fprintf(stderr, "svm-nfc recv: TLS credentials needed: --tls-dir DIR, --tls-psk FILE, or "
                    "--insecure for plaintext\n");
    return 2;
  }
  char host[256], port[32];
  if (split_addr(argv[optind], host, sizeof host, port, sizeof port) < 0)
    return usage(2);
  int dirfd = open(argv[optind + 1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0) {
    fprintf(stderr, "svm-nfc recv: %s: %s\n", argv[optind + 1], strerror(errno));
    return 1;
  }
  struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                            .ai_flags = AI_PASSIVE }, *ai;
  if (getaddrinfo(host, port, &hints, &ai) != 0) {
    fprintf(stderr, "svm-nfc recv: cannot resolve %s\n", argv[optind]);
    return 1;
  }
  int ls = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (ls < 0 || bind(ls, ai->ai_addr, ai->ai_addrlen) < 0 || listen(ls, 64) < 0) {
    fprintf(stderr, "svm-nfc recv: cannot listen on %s: %s\n", argv[optind], strerror(errno));
    return 1;
  }
  freeaddrinfo(ai);
  if (port_file != NULL) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(ls, (struct sockaddr *)&ss, &sl);
    unsigned p = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                : ((struct sockaddr_in *)&ss)->sin_port);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", port_file);
    FILE *f = fopen(tmp, "w");
    if (f == NULL || fprintf(f, "%u\n", p) < 0 || fclose(f) != 0 || rename(tmp, port_file) < 0) {
      fprintf(stderr, "svm-nfc recv: %s: %s\n", port_file, strerror(errno));
      return 1;
    }
  }
  for (;;) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = accept4(ls, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      fprintf(stderr, "svm-nfc recv: accept: %s\n", strerror(errno));
      return 1;
    }
    struct conn_job *j = calloc(1, sizeof *j);
    pthread_t th;
    if (j == NULL) {
      close(fd);
      continue;
    }
    j->fd = fd;
    j->dirfd = dirfd;
    j->o.sync_bytes = sync_mb << 20;
    char h[NI_MAXHOST] = "?", s[NI_MAXSERV] = "?";
    getnameinfo((struct sockaddr *)&ss, sl, h, sizeof h, s, sizeof s,
                NI_NUMERICHOST | NI_NUMERICSERV);
    snprintf(j->peer, sizeof j->peer, "%s:%s", h, s);
    if (pthread_create(&th, NULL, serve_one, j) != 0) {
      close(fd);
      free(j);
      continue;
    }
    pthread_detach(th);
  }
}

/* ---- send ---------------------------------------------------------------------------- */

struct target {
  char host[256], port[32];
  uint64_t cut_after;           /* 0: never */
  atomic_uint_fast64_t wire;    /* bytes written on every connection so far */
};

struct cut_fd {
  int fd;
  struct nfc_tls *tls;
  struct target *t;
};

static ssize_t cut_read(void *opaque, void *buf, size_t len)
{
  struct cut_fd *c = opaque;
  return nfc_tls_read_some(c->tls, buf, len, io_timeout_ms());
}

/* A link cut at a known point: once the limit is passed every connection is shut down. */
static ssize_t cut_write(void *opaque, const void *buf, size_t len)
{
  struct cut_fd *c = opaque;

  if (c->t->cut_after > 0) {
    uint64_t before = atomic_load(&c->t->wire);
    if (before >= c->t->cut_after) {
      shutdown(c->fd, SHUT_RDWR);
      return -ECONNRESET;
    }
    if (len > c->t->cut_after - before)
      len = c->t->cut_after - before;
  }
  int r = nfc_tls_write_full(c->tls, buf, len, io_timeout_ms());
  if (r < 0)
    return r;
  atomic_fetch_add(&c->t->wire, (uint64_t)len);
  return (ssize_t)len;
}

static void cut_close(void *opaque)
{
  struct cut_fd *c = opaque;
  nfc_tls_shutdown(c->tls);
  nfc_tls_free(c->tls);
  close(c->fd);
  free(c);
}

static void cut_abort(void *opaque)
{
  struct cut_fd *c = opaque;
  shutdown(c->fd, SHUT_RDWR);
}

static const struct nfc_transport_ops cut_ops = { "plain", cut_read, cut_write, cut_close,
                                                  cut_abort };

static int connect_tcp(void *opaque, unsigned stream, struct nfc_conn **out)
{
  struct target *t = opaque;
  struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
  int fd = -1, e = 0, one = 1;

  (void)stream;
  if ((e = getaddrinfo(t->host, t->port, &hints, &ai)) != 0)
    return svm_error(EHOSTUNREACH, "%s:%s: %s", t->host, t->port, gai_strerror(e));
  fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
    e = errno;
    freeaddrinfo(ai);
    if (fd >= 0)
      close(fd);
    return svm_error(e, "%s:%s: cannot connect: %s (is the receiver running?)", t->host,
                     t->port, strerror(e));
  }
  freeaddrinfo(ai);
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  char peer[300];
  snprintf(peer, sizeof peer, "%s:%s", t->host, t->port);
  struct nfc_tls *tls;
  if ((e = nfc_tls_new(tls_cfg, fd, peer, NULL, &tls)) < 0) {
    close(fd);
    return e;
  }
  if ((e = nfc_tls_handshake(tls, HANDSHAKE_MS)) < 0) {
    nfc_tls_free(tls);
    close(fd);
    return e;
  }
  struct cut_fd *c = malloc(sizeof *c);
  if (c == NULL) {
    nfc_tls_free(tls);
    close(fd);
    return svm_error(ENOMEM, "out of memory");
  }
  *c = (struct cut_fd){ fd, tls, t };
  return nfc_conn_new(&cut_ops, c, peer, out);
}

static double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int do_send(int argc, char **argv, bool get)
{
  static struct target t;
  struct svm_nfc_put_options o = { .connect = connect_tcp, .connect_opaque = &t };
  struct svm_nfc_put_counters n = { 0 };
  struct nfc_rate *rate = NULL;
  bool json = false;
  uint64_t v;
  int c, r;
  static const struct option opts[] = {
    { "streams", 1, 0, 's' }, { "rate", 1, 0, 'r' }, { "provisioning", 1, 0, 'p' },
    { "cut-after", 1, 0, 'c' }, { "json", 0, 0, 'j' }, { "insecure", 0, 0, 'i' },
    { "tls-dir", 1, 0, 'D' }, { "tls-psk", 1, 0, 'P' }, { "help", 0, 0, 'h' }, { 0, 0, 0, 0 } };
  bool chosen = false;
  int k;

  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    if ((k = tls_option(c, NFC_TLS_CLIENT, &chosen)) != 0) {
      if (k < 0)
        return 1;
      continue;
    }
    switch (c) {
    case 's':
      o.streams = (unsigned)strtoul(optarg, NULL, 10);
      if (o.streams < 1 || o.streams > SVM_NFC_MAX_STREAMS)
        return usage(2);
      break;
    case 'r':
      if (svm_size_parse(optarg, &v) < 0 || v == 0 || nfc_rate_new(v, &rate) < 0)
        return usage(2);
      o.rate = rate;
      break;
    case 'p':
      if (svm_provisioning_from_string(optarg, &o.provisioning) < 0)
        return usage(2);
      break;
    case 'c':
      if (svm_size_parse(optarg, &t.cut_after) < 0)
        return usage(2);
      break;
    case 'j': json = true; break;
    case 'h': return usage(0);
    default: return usage(2);
    }
  }
  if (argc - optind < 2 || argc - optind > 3 ||
      split_addr(argv[optind], t.host, sizeof t.host, t.port, sizeof t.port) < 0)
    return usage(2);
  if (!chosen) {
    fprintf(stderr, "svm-nfc send: TLS credentials needed: --tls-dir DIR, --tls-psk FILE, or "
                    "--insecure for plaintext\n");
    return 2;
  }
  if (get) {
    struct nfc_conn *conn;
    struct nfc_recv_counters rn = { 0 };
    if (argc - optind != 3) {
      nfc_tls_config_free(tls_cfg);
      return usage(2);
    }
    int dfd = open(argv[optind + 2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
      fprintf(stderr, "svm-nfc get: %s: %s\n", argv[optind + 2], strerror(errno));
      return 1;
    }
    double t0 = now_s();
    r = connect_tcp(&t, 0, &conn);
    if (r == 0) {
      r = svm_nfc_get(conn, argv[optind + 1], o.provisioning, dfd, NULL, &rn);
      nfc_conn_free(conn);
    }
    if (r < 0)
      fprintf(stderr, "svm-nfc get: %s\n", svm_last_error());
    if (json)
      printf("{\"ok\": %s, \"bytes_data\": %" PRIu64 ", \"bytes_zero\": %" PRIu64
             ", \"files\": %" PRIu64 ", \"seconds\": %.3f}\n", r < 0 ? "false" : "true",
             rn.bytes_data, rn.bytes_zero, rn.files, now_s() - t0);
    close(dfd);
    nfc_tls_config_free(tls_cfg);
    return r < 0 ? 1 : 0;
  }
  const char *src = argv[optind + 1];
  struct stat st;
  if (stat(src, &st) < 0) {
    fprintf(stderr, "svm-nfc send: %s: %s\n", src, strerror(errno));
    return 1;
  }
  double t0 = now_s();
  if (S_ISDIR(st.st_mode)) {
    r = svm_nfc_put_folder(src, &o, &n);
  } else {
    const char *name = argc - optind == 3 ? argv[optind + 2] : strrchr(src, '/');
    name = name == NULL ? src : name[0] == '/' ? name + 1 : name;
    r = svm_nfc_put_file(src, name, &o, &n);
  }
  double secs = now_s() - t0;
  if (r < 0)
    fprintf(stderr, "svm-nfc send: %s\n", svm_last_error());
  if (json)
    printf("{\"ok\": %s, \"bytes_wire\": %" PRIu64 ", \"bytes_data\": %" PRIu64
           ", \"bytes_zero\": %" PRIu64 ", \"bytes_resumed\": %" PRIu64 ", \"files\": %" PRIu64
           ", \"seconds\": %.3f}\n", r < 0 ? "false" : "true", n.bytes_wire, n.bytes_data,
           n.bytes_zero, n.bytes_resumed, n.files, secs);
  nfc_rate_free(rate);
  nfc_tls_config_free(tls_cfg);
  return r < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
  signal(SIGPIPE, SIG_IGN);
  if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
    printf("svm-nfc %s\n", SVM_VERSION);
    return 0;
  }
  if (argc >= 2 && strcmp(argv[1], "--help") == 0)
    return usage(0);
  if (argc >= 2 && strcmp(argv[1], "recv") == 0)
    return do_recv(argc - 1, argv + 1);
  if (argc >= 2 && strcmp(argv[1], "send") == 0)
    return do_send(argc - 1, argv + 1, false);
  if (argc >= 2 && strcmp(argv[1], "get") == 0)
    return do_send(argc - 1, argv + 1, true);
  if (argc == 4 && strcmp(argv[1], "creds") == 0) {   /* test credentials, as svmctl tls init */
    if (nfc_tls_make_credentials(argv[2], argv[3], NULL, 30) < 0) {
      fprintf(stderr, "svm-nfc creds: %s\n", svm_last_error());
      return 1;
    }
    return 0;
  }
  return usage(2);
}
