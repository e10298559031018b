/* The TLS module over a socketpair, with credentials made at test time by
 * nfc_tls_make_credentials (svmctl tls init): mutual x509, PSK, and every refusal the peer
 * link relies on (another CA, an expired certificate, no certificate, a plaintext peer, a
 * wrong key, a wrong host name), the non-blocking calls and pending bytes, and a bulk transfer
 * between two threads with the blocking calls. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "nfc/tls.h"

static char root[] = "/tmp/test-tls.XXXXXX";
static char dir_a[600], dir_b[600], dir_other[600], dir_expired[600], psk_good[600],
    psk_bad[600], psk_other_id[600];

static void put(const char *path, const char *text)
{
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static int setup(void **state)
{
  (void)state;
  assert_non_null(mkdtemp(root));
  snprintf(dir_a, sizeof dir_a, "%s/a", root);
  snprintf(dir_b, sizeof dir_b, "%s/b", root);
  snprintf(dir_other, sizeof dir_other, "%s/other", root);
  snprintf(dir_expired, sizeof dir_expired, "%s/expired", root);
  /* hostA makes the CA; hostB and the expired host reuse it; "other" has its own CA. */
  assert_int_equal(nfc_tls_make_credentials(dir_a, "hostA", NULL, 30), 0);
  assert_int_equal(nfc_tls_make_credentials(dir_b, "hostB", dir_a, 30), 0);
  assert_int_equal(nfc_tls_make_credentials(dir_other, "hostB", NULL, 30), 0);
  assert_int_equal(nfc_tls_make_credentials(dir_expired, "hostB", dir_a, -2), 0);
  snprintf(psk_good, sizeof psk_good, "%s/good.psk", root);
  snprintf(psk_bad, sizeof psk_bad, "%s/bad.psk", root);
  snprintf(psk_other_id, sizeof psk_other_id, "%s/other.psk", root);
  put(psk_good, "# comment\n"
                "alice:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"
                "bob:ffeeddccbbaa99887766554433221100\n");
  put(psk_bad, "alice:10112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n");
  put(psk_other_id, "mallory:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n");
  return 0;
}

static int teardown(void **state)
{
  char cmd[700];
  (void)state;
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  return system(cmd) == 0 ? 0 : -1;
}

struct pair {
  int fd[2];
  struct nfc_tls_config *ccfg, *scfg;
  struct nfc_tls *c, *s;
  int rc, rs;
  char cmsg[1024], smsg[1024];
};

static void pair_open(struct pair *p, struct nfc_tls_config *ccfg, struct nfc_tls_config *scfg,
                      const char *expect)
{
  memset(p, 0, sizeof *p);
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, p->fd), 0);
  p->ccfg = ccfg;
  p->scfg = scfg;
  assert_int_equal(nfc_tls_new(ccfg, p->fd[0], "server-end", expect, &p->c), 0);
  assert_int_equal(nfc_tls_new(scfg, p->fd[1], "client-end", NULL, &p->s), 0);
}

/* Both handshakes, one non-blocking step at a time in this thread; each side's message is
 * kept the moment it fails. */
static void pair_handshake(struct pair *p)
{
  int i;

  p->rc = p->rs = -EAGAIN;
  for (i = 0; i < 200 && (p->rc == -EAGAIN || p->rs == -EAGAIN); i++) {
    if (p->rc == -EAGAIN && (p->rc = nfc_tls_handshake_step(p->c)) < 0 && p->rc != -EAGAIN)
      snprintf(p->cmsg, sizeof p->cmsg, "%s", svm_last_error());
    if (p->rs == -EAGAIN && (p->rs = nfc_tls_handshake_step(p->s)) < 0 && p->rs != -EAGAIN)
      snprintf(p->smsg, sizeof p->smsg, "%s", svm_last_error());
    if (p->rc < 0 && p->rc != -EAGAIN)
      break;
    if (p->rs < 0 && p->rs != -EAGAIN)
      break;
  }
}

/* TLS 1.3: a client finishes before the server has judged its certificate; the refusal
 * reaches it on its first read. */
static int client_read_after(struct pair *p)
{
  char b;
  ssize_t n;
  int i;

  for (i = 0; i < 50; i++) {
    n = nfc_tls_read(p->c, &b, 1);
    if (n != -EAGAIN) {
      snprintf(p->cmsg, sizeof p->cmsg, "%s", svm_last_error());
      return n == 0 ? -ECONNRESET : (int)n;
    }
    struct pollfd pfd = { .fd = p->fd[0], .events = nfc_tls_want(p->c) };
    if (poll(&pfd, 1, 2000) <= 0)
      return -ETIMEDOUT;
  }
  return -EAGAIN;
}

static void pair_close(struct pair *p)
{
  nfc_tls_free(p->c);
  nfc_tls_free(p->s);
  close(p->fd[0]);
  close(p->fd[1]);
  nfc_tls_config_free(p->ccfg);
  nfc_tls_config_free(p->scfg);
}

static struct nfc_tls_config *x509(enum nfc_tls_role role, const char *dir)
{
  struct nfc_tls_config *cfg = NULL;
  assert_int_equal(nfc_tls_config_x509(role, dir, &cfg), 0);
  return cfg;
}

static struct nfc_tls_config *psk(enum nfc_tls_role role, const char *file)
{
  struct nfc_tls_config *cfg = NULL;
  assert_int_equal(nfc_tls_config_psk(role, file, &cfg), 0);
  return cfg;
}

static void credentials_layout(void **state)
{
  static const struct { const char *name; mode_t mode; } files[] = {
    { "ca-cert.pem", 0644 },     { "ca-key.pem", 0600 },     { "server-cert.pem", 0644 },
    { "server-key.pem", 0600 },  { "client-cert.pem", 0644 }, { "client-key.pem", 0600 },
  };
  char path[700];
  struct stat st;
  size_t i;
  (void)state;

  for (i = 0; i < sizeof files / sizeof files[0]; i++) {
    snprintf(path, sizeof path, "%s/%s", dir_a, files[i].name);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, files[i].mode);
  }
  /* A host made with --ca gets the CA's certificate, never its key. */
  snprintf(path, sizeof path, "%s/ca-key.pem", dir_b);
  assert_int_equal(access(path, F_OK), -1);
  snprintf(path, sizeof path, "%s/ca-cert.pem", dir_b);
  assert_int_equal(access(path, F_OK), 0);
  assert_int_equal(stat(dir_b, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0700);
  /* Refusals: a bad host name, a CA directory without a key. */
  snprintf(path, sizeof path, "%s/x", root);
  assert_int_equal(nfc_tls_make_credentials(path, "a/b", NULL, 1), -EINVAL);
  assert_int_equal(nfc_tls_make_credentials(path, "hostC", dir_b, 1), -ENOENT);
  assert_non_null(strstr(svm_last_error(), "ca-key.pem"));
}

static void x509_mutual(void **state)
{
  struct pair p;
  char buf[16];
  ssize_t n;
  (void)state;

  pair_open(&p, x509(NFC_TLS_CLIENT, dir_a), x509(NFC_TLS_SERVER, dir_b), "hostB");
  pair_handshake(&p);
  assert_int_equal(p.rc, 0);
  assert_int_equal(p.rs, 0);
  assert_string_equal(nfc_tls_peer_identity(p.c), "hostB");
  assert_string_equal(nfc_tls_peer_identity(p.s), "hostA");
  assert_false(nfc_tls_is_plaintext(p.c));
  assert_string_equal(nfc_tls_config_kind(p.ccfg), "x509");

  /* Non-blocking: nothing to read yet, then a small message; pending counts what SSL holds. */
  assert_int_equal(nfc_tls_read(p.s, buf, sizeof buf), -EAGAIN);
  assert_int_equal(nfc_tls_want(p.s), POLLIN);
  assert_int_equal(nfc_tls_write(p.c, "hello world", 11), 11);
  n = nfc_tls_read(p.s, buf, 5);
  assert_int_equal(n, 5);
  assert_memory_equal(buf, "hello", 5);
  assert_int_equal(nfc_tls_pending(p.s), 6);
  assert_int_equal(nfc_tls_read_full(p.s, buf, 6, 1000), 0);
  assert_memory_equal(buf, " world", 6);
  assert_int_equal(nfc_tls_pending(p.s), 0);

  /* close_notify: the end of stream reads as 0. */
  nfc_tls_shutdown(p.c);
  assert_int_equal(nfc_tls_read_some(p.s, buf, sizeof buf, 1000), 0);
  pair_close(&p);
}

static void x509_host_name(void **state)
{
  struct pair p;
  (void)state;

  pair_open(&p, x509(NFC_TLS_CLIENT, dir_a), x509(NFC_TLS_SERVER, dir_b), "hostC");
  pair_handshake(&p);
  assert_int_equal(p.rc, -EACCES);
  assert_non_null(strstr(p.cmsg, "server-end"));
  assert_non_null(strstr(p.cmsg, "hostname mismatch"));
  pair_close(&p);
}

static void x509_other_ca(void **state)
{
  struct pair p;
  (void)state;

  /* A client from another CA: it cannot verify the server (it trusts only its own CA) and
   * says so; the server logs the alert. */
  pair_open(&p, x509(NFC_TLS_CLIENT, dir_other), x509(NFC_TLS_SERVER, dir_a), NULL);
  pair_handshake(&p);
  assert_int_equal(p.rc, -EACCES);
  assert_non_null(strstr(p.cmsg, "another CA"));
  assert_int_equal(p.rs, -EACCES);
  assert_non_null(strstr(p.smsg, "client-end"));
  assert_non_null(strstr(p.smsg, "unknown ca"));
  pair_close(&p);

  /* A server from another CA: the client refuses it. */
  pair_open(&p, x509(NFC_TLS_CLIENT, dir_a), x509(NFC_TLS_SERVER, dir_other), NULL);
  pair_handshake(&p);
  assert_int_equal(p.rc, -EACCES);
  assert_non_null(strstr(p.cmsg, "peer certificate refused"));
  assert_non_null(strstr(p.cmsg, "another CA"));
  pair_close(&p);
}

static void x509_expired(void **state)
{
  struct pair p;
  (void)state;

  pair_open(&p, x509(NFC_TLS_CLIENT, dir_expired), x509(NFC_TLS_SERVER, dir_a), NULL);
  pair_handshake(&p);
  assert_int_equal(p.rs, -EACCES);
  assert_non_null(strstr(p.smsg, "certificate has expired"));
  if (p.rc == 0)
    assert_int_equal(client_read_after(&p), -EACCES);
  else
    assert_int_equal(p.rc, -EACCES);
  assert_non_null(strstr(p.cmsg, "expired"));
  pair_close(&p);
}

static void x509_no_client_cert(void **state)
{
  struct pair p;
  (void)state;

  /* A PSK client has no certificate to show an x509 server. */
  pair_open(&p, psk(NFC_TLS_CLIENT, psk_good), x509(NFC_TLS_SERVER, dir_a), NULL);
  pair_handshake(&p);
  assert_int_equal(p.rs, -EACCES);
  assert_true(p.rc < 0 || client_read_after(&p) < 0);
  pair_close(&p);
}

static void plaintext_refused(void **state)
{
  struct pair p;
  int r;
  (void)state;

  pair_open(&p, NULL, x509(NFC_TLS_SERVER, dir_a), NULL);
  assert_true(nfc_tls_is_plaintext(p.c));
  assert_int_equal(nfc_tls_write_full(p.c, "SVMP\0\0\0\1", 8, 1000), 0);
  r = nfc_tls_handshake(p.s, 1000);
  assert_int_equal(r, -ECONNREFUSED);
  assert_non_null(strstr(svm_last_error(), "plaintext"));
  assert_non_null(strstr(svm_last_error(), "client-end"));
  pair_close(&p);

  /* A TLS client talking to a plaintext server that answers with plaintext. */
  pair_open(&p, x509(NFC_TLS_CLIENT, dir_a), NULL, NULL);
  assert_int_equal(nfc_tls_handshake_step(p.c), -EAGAIN);
  assert_int_equal(write(p.fd[1], "SVMP-this-is-not-tls-at-all\n", 28), 28);
  r = nfc_tls_handshake(p.c, 1000);
  assert_int_equal(r, -ECONNREFUSED);
  assert_non_null(strstr(svm_last_error(), "does not speak TLS"));
  pair_close(&p);
}

static void plaintext_insecure(void **state)
{
  struct pair p;
  char buf[8];
  (void)state;

  pair_open(&p, NULL, NULL, NULL);
  assert_int_equal(nfc_tls_handshake(p.c, 1000), 0);
  assert_int_equal(nfc_tls_handshake(p.s, 1000), 0);
  assert_int_equal(nfc_tls_write_full(p.c, "abc", 3, 1000), 0);
  assert_int_equal(nfc_tls_read_full(p.s, buf, 3, 1000), 0);
  assert_memory_equal(buf, "abc", 3);
  assert_string_equal(nfc_tls_peer_identity(p.s), "");
  assert_int_equal(nfc_tls_read(p.s, buf, 1), -EAGAIN);
  close(p.fd[0]);
  p.fd[0] = -1;
  assert_int_equal(nfc_tls_read_full(p.s, buf, 1, 1000), -ECONNRESET);
  pair_close(&p);
}

static void psk_mutual(void **state)
{
  struct pair p;
  char buf[4];
  (void)state;

  pair_open(&p, psk(NFC_TLS_CLIENT, psk_good), psk(NFC_TLS_SERVER, psk_good), NULL);
  pair_handshake(&p);
  assert_int_equal(p.rc, 0);
  assert_int_equal(p.rs, 0);
  assert_string_equal(nfc_tls_peer_identity(p.s), "alice");
  assert_string_equal(nfc_tls_peer_identity(p.c), "alice");
  assert_string_equal(nfc_tls_config_kind(p.scfg), "psk");
  assert_int_equal(nfc_tls_write_full(p.s, "pong", 4, 1000), 0);
  assert_int_equal(nfc_tls_read_full(p.c, buf, 4, 1000), 0);
  assert_memory_equal(buf, "pong", 4);
  pair_close(&p);
}

static void psk_refused(void **state)
{
  struct pair p;
  struct nfc_tls_config *cfg;
  char path[700];
  (void)state;

  /* Same identity, another key. */
  pair_open(&p, psk(NFC_TLS_CLIENT, psk_bad), psk(NFC_TLS_SERVER, psk_good), NULL);
  pair_handshake(&p);
  assert_int_equal(p.rs, -EACCES);
  assert_true(p.rc < 0);
  pair_close(&p);

  /* An identity the server does not know. */
  pair_open(&p, psk(NFC_TLS_CLIENT, psk_other_id), psk(NFC_TLS_SERVER, psk_good), NULL);
  pair_handshake(&p);
  assert_int_equal(p.rs, -EACCES);
  assert_non_null(strstr(p.smsg, "'mallory'"));
  pair_close(&p);

  /* Malformed files. */
  snprintf(path, sizeof path, "%s/malformed.psk", root);
  put(path, "alice:00112233\n");
  assert_int_equal(nfc_tls_config_psk(NFC_TLS_SERVER, path, &cfg), -EINVAL);
  assert_non_null(strstr(svm_last_error(), ":1:"));
  put(path, "alice:zz112233445566778899aabbccddeeff\n");
  assert_int_equal(nfc_tls_config_psk(NFC_TLS_SERVER, path, &cfg), -EINVAL);
  put(path, "no colon here\n");
  assert_int_equal(nfc_tls_config_psk(NFC_TLS_SERVER, path, &cfg), -EINVAL);
  put(path, "\n# nothing\n");
  assert_int_equal(nfc_tls_config_psk(NFC_TLS_SERVER, path, &cfg), -EINVAL);
  assert_int_equal(nfc_tls_config_psk(NFC_TLS_SERVER, "/nonexistent.psk", &cfg), -ENOENT);
  assert_int_equal(nfc_tls_config_x509(NFC_TLS_SERVER, "/nonexistent", &cfg), -ENOENT);
  assert_non_null(strstr(svm_last_error(), "svmctl tls init"));
}

/* A bulk transfer with the blocking calls between two threads: 8 MiB in odd-sized writes,
 * read back in other sizes, compared byte for byte. */
enum { BULK = 8 << 20 };

static void *bulk_writer(void *arg)
{
  struct nfc_tls *t = arg;
  unsigned char *buf = malloc(BULK);
  size_t off = 0, i;
  intptr_t r = 0;

  for (i = 0; i < BULK; i++)
    buf[i] = (unsigned char)(i * 7 + (i >> 13));
  if (nfc_tls_handshake(t, 5000) < 0)
    r = -1;
  while (r == 0 && off < BULK) {
    size_t n = BULK - off < 70001 ? BULK - off : 70001;
    if (nfc_tls_write_full(t, buf + off, n, 5000) < 0)
      r = -1;
    off += n;
  }
  free(buf);
  return (void *)r;
}

static void bulk_threads(void **state)
{
  struct pair p;
  pthread_t th;
  unsigned char *buf = malloc(BULK);
  size_t off = 0, i;
  void *ret;
  (void)state;

  assert_non_null(buf);
  pair_open(&p, x509(NFC_TLS_CLIENT, dir_a), x509(NFC_TLS_SERVER, dir_b), "hostB");
  assert_int_equal(pthread_create(&th, NULL, bulk_writer, p.c), 0);
  assert_int_equal(nfc_tls_handshake(p.s, 5000), 0);
  while (off < BULK) {
    ssize_t n = nfc_tls_read_some(p.s, buf + off, BULK - off < 33333 ? BULK - off : 33333, 5000);
    assert_true(n > 0);
    off += (size_t)n;
  }
  assert_int_equal(pthread_join(th, &ret), 0);
  assert_null(ret);
  for (i = 0; i < BULK; i++)
    if (buf[i] != (unsigned char)(i * 7 + (i >> 13)))
      fail_msg("byte %zu differs", i);
  free(buf);
  pair_close(&p);
}

int main(void)
{
  signal(SIGPIPE, SIG_IGN);      /* as svmd: a peer that hangs up is an error, not a signal */
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(credentials_layout), cmocka_unit_test(x509_mutual),
    cmocka_unit_test(x509_host_name),     cmocka_unit_test(x509_other_ca),
    cmocka_unit_test(x509_expired),       cmocka_unit_test(x509_no_client_cert),
    cmocka_unit_test(plaintext_refused),  cmocka_unit_test(plaintext_insecure),
    cmocka_unit_test(psk_mutual),         cmocka_unit_test(psk_refused),
    cmocka_unit_test(bulk_threads),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
