/* The peer link: message parsing with its limits (negative cases), and the server's state
 * table driven by a real client over loopback TCP with TLS (credentials made at test time),
 * against an ops table that records what the agent would have been asked to do. */
#include <errno.h>
#include <limits.h>
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
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "svm/peer/peer.h"

static char root[] = "/tmp/test-peer.XXXXXX";
static struct svm_peer_creds creds;         /* hostA's: the client */
static struct svm_peer_creds server_creds;  /* hostB's: the server */
static struct svm_peer_creds other_creds;   /* hostC's: same CA, another host */

/* ---- messages ---------------------------------------------------------------------------- */

static void hdr_limits(void **state)
{
  uint8_t h[SVM_PEER_HDR_SIZE], type;
  uint32_t len;
  (void)state;

  svm_peer_hdr_format(h, SVM_PEER_PREPARE, 100);
  assert_int_equal(svm_peer_hdr_parse(h, &type, &len), 0);
  assert_int_equal(type, SVM_PEER_PREPARE);
  assert_int_equal(len, 100);
  svm_peer_hdr_format(h, SVM_PEER_OK, SVM_PEER_MAX_PAYLOAD + 1);
  assert_int_equal(svm_peer_hdr_parse(h, &type, &len), -EMSGSIZE);
  svm_peer_hdr_format(h, 0, 0);
  assert_int_equal(svm_peer_hdr_parse(h, &type, &len), -EPROTO);
  svm_peer_hdr_format(h, SVM_PEER_TYPE_MAX + 1, 0);
  assert_int_equal(svm_peer_hdr_parse(h, &type, &len), -EPROTO);
  svm_peer_hdr_format(h, SVM_PEER_OK, 0);
  h[4] = 2;
  assert_int_equal(svm_peer_hdr_parse(h, &type, &len), -EPROTONOSUPPORT);
  svm_peer_hdr_format(h, SVM_PEER_OK, 0);
  h[7] = 1;
  assert_int_equal(svm_peer_hdr_parse(h, &type, &len), -EPROTO);
  memcpy(h, "GET ", 4);                   /* not ours at all */
  assert_int_equal(svm_peer_hdr_parse(h, &type, &len), -EPROTO);
}

static void payload_limits(void **state)
{
  static struct svm_peer_msg m;
  static char big[SVM_PEER_MAX_PAYLOAD + 16];
  uint64_t v;
  (void)state;

  assert_int_equal(svm_peer_payload_parse(&m, "a=1\nb=\nds=x:2\nds=y:3\n", 21), 0);
  assert_int_equal(m.nfields, 4);
  assert_string_equal(svm_peer_get(&m, "ds"), "x:2");
  assert_string_equal(svm_peer_get(&m, "b"), "");
  assert_int_equal(svm_peer_get_u64(&m, "a", &v), 0);
  assert_int_equal(v, 1);
  assert_int_equal(svm_peer_get_u64(&m, "b", &v), -EINVAL);
  assert_int_equal(svm_peer_get_u64(&m, "zz", &v), -ENOENT);
  assert_null(svm_peer_get(&m, "zz"));

  assert_int_equal(svm_peer_payload_parse(&m, "a=1", 3), -EPROTO);          /* no newline */
  assert_int_equal(svm_peer_payload_parse(&m, "a1\n", 3), -EPROTO);         /* no '=' */
  assert_int_equal(svm_peer_payload_parse(&m, "=1\n", 3), -EPROTO);         /* empty key */
  assert_int_equal(svm_peer_payload_parse(&m, "A=1\n", 4), -EPROTO);        /* key chars */
  assert_int_equal(svm_peer_payload_parse(&m, "a=\0\n", 4), -EPROTO);       /* NUL */
  memset(big, 'k', 40);
  memcpy(big + 40, "=1\n", 3);
  assert_int_equal(svm_peer_payload_parse(&m, big, 43), -EPROTO);           /* long key */
  big[0] = 'v', big[1] = '=';
  memset(big + 2, 'x', SVM_PEER_MAX_VALUE + 1);
  big[SVM_PEER_MAX_VALUE + 3] = '\n';
  assert_int_equal(svm_peer_payload_parse(&m, big, SVM_PEER_MAX_VALUE + 4), -EPROTO);
  big[SVM_PEER_MAX_VALUE + 2] = '\n';                                       /* exactly max */
  assert_int_equal(svm_peer_payload_parse(&m, big, SVM_PEER_MAX_VALUE + 3), 0);
  for (int i = 0; i <= SVM_PEER_MAX_FIELDS; i++)
    memcpy(big + 4 * i, "a=1\n", 4);
  assert_int_equal(svm_peer_payload_parse(&m, big, 4 * (SVM_PEER_MAX_FIELDS + 1)), -EPROTO);
  assert_int_equal(svm_peer_payload_parse(&m, big, 4 * SVM_PEER_MAX_FIELDS), 0);

  /* building: newlines in values cannot split a field; the size is bounded */
  svm_peer_msg_init(&m, SVM_PEER_ERROR);
  assert_int_equal(svm_peer_msg_add(&m, "message", "two\nlines"), 0);
  assert_string_equal(svm_peer_get(&m, "message"), "two lines");
  svm_peer_msg_init(&m, SVM_PEER_OK);
  int r = 0;
  for (int i = 0; i < SVM_PEER_MAX_FIELDS && r == 0; i++)
    r = svm_peer_msg_add(&m, "k", "%0500d", i);
  assert_int_equal(r, -EMSGSIZE);
}

/* ---- the server, with ops that record ------------------------------------------------------ */

struct record {
  pthread_mutex_t mu;
  int prepared, committed, aborted, streams;
  int wrong;                   /* the server handed an op something unexpected */
  char dir[PATH_MAX];
  int commit_result;
};
static struct record rec = { .mu = PTHREAD_MUTEX_INITIALIZER };

static void rlog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void rlog(const char *fmt, ...)
{
  (void)fmt;
}

static int r_hello(void *o, struct svm_peer_msg *reply)
{
  (void)o;
  svm_peer_msg_add(reply, "host", "hostB");
  return svm_peer_msg_add(reply, "ds", "ds1:1000");
}

static int r_prepare(void *o, const char *peer, const char *host, const struct svm_peer_msg *req,
                     char *dir)
{
  (void)o, (void)peer;
  if (strcmp(host, "hostA") != 0)
    rec.wrong++;
  if (strcmp(svm_peer_get(req, "vm"), "full") == 0)
    return svm_error(ENOSPC, "datastore ds1 is full");
  snprintf(dir, PATH_MAX, "%s/incoming.%s", root, svm_peer_get(req, "vm"));
  pthread_mutex_lock(&rec.mu);
  rec.prepared++;
  snprintf(rec.dir, sizeof rec.dir, "%s", dir);
  pthread_mutex_unlock(&rec.mu);
  return 0;
}

static int r_commit(void *o, const char *peer, const char *dir, const struct svm_peer_msg *req)
{
  (void)o, (void)peer, (void)req, (void)dir;
  pthread_mutex_lock(&rec.mu);
  rec.committed++;
  pthread_mutex_unlock(&rec.mu);
  return rec.commit_result ? svm_error(-rec.commit_result, "commit failed") : 0;
}

static void r_abort(void *o, const char *peer, const char *dir)
{
  (void)o, (void)peer, (void)dir;
  pthread_mutex_lock(&rec.mu);
  rec.aborted++;
  pthread_mutex_unlock(&rec.mu);
}

static int r_stream(void *o, struct nfc_tls *t, const char *dir)
{
  char b[4];
  (void)o;
  pthread_mutex_lock(&rec.mu);
  rec.streams++;
  pthread_mutex_unlock(&rec.mu);
  if (strcmp(dir, rec.dir) != 0)
    rec.wrong++;
  /* echo 4 bytes: the stream is the caller's now */
  if (nfc_tls_read_full(t, b, 4, 5000) == 0)
    nfc_tls_write_full(t, b, 4, 5000);
  return 0;
}

static struct svm_peer_ops ops = {
  .log = rlog, .hello = r_hello, .prepare = r_prepare, .commit = r_commit,
  .abort = r_abort, .nfc_stream = r_stream,
};

static int setup(void **state)
{
  char a[600], b[600];
  (void)state;
  assert_non_null(mkdtemp(root));
  snprintf(a, sizeof a, "%s/a", root);
  snprintf(b, sizeof b, "%s/b", root);
  assert_int_equal(nfc_tls_make_credentials(b, "hostB", NULL, 30), 0);
  assert_int_equal(nfc_tls_make_credentials(a, "hostA", b, 30), 0);
  /* the client side is hostA's, the server hostB's: load both roles from each */
  assert_int_equal(svm_peer_creds_load(a, NULL, false, &creds), 0);
  assert_int_equal(svm_peer_creds_load(b, NULL, false, &server_creds), 0);
  snprintf(a, sizeof a, "%s/c", root);
  assert_int_equal(nfc_tls_make_credentials(a, "hostC", b, 30), 0);
  assert_int_equal(svm_peer_creds_load(a, NULL, false, &other_creds), 0);
  return 0;
}

static int teardown(void **state)
{
  char cmd[700];
  (void)state;
  svm_peer_creds_clear(&creds);
  svm_peer_creds_clear(&server_creds);
  svm_peer_creds_clear(&other_creds);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  return system(cmd) == 0 ? 0 : -1;
}

static struct svm_peer_server *serve(void)
{
  struct svm_peer_server *s;

  assert_int_equal(svm_peer_server_start("127.0.0.1:0", server_creds.server, &ops, &s), 0);
  return s;
}

/* Wait until rec.FIELD reaches n (the server's threads run on their own). */
#define WAIT_FOR(field, n)                                                               \
  do {                                                                                   \
    for (int i_ = 0; i_ < 500; i_++) {                                                   \
      pthread_mutex_lock(&rec.mu);                                                       \
      int v_ = rec.field;                                                                \
      pthread_mutex_unlock(&rec.mu);                                                     \
      if (v_ >= (n))                                                                     \
        break;                                                                           \
      usleep(10000);                                                                     \
    }                                                                                    \
    pthread_mutex_lock(&rec.mu);                                                         \
    assert_int_equal(rec.field, (n));                                                    \
    pthread_mutex_unlock(&rec.mu);                                                       \
  } while (0)

static void state_table(void **state)
{
  static struct svm_peer_msg m;
  struct svm_peer_server *s = serve();
  struct nfc_tls *t, *n;
  char token[SVM_PEER_TOKEN_LEN + 1];
  char b[4];
  (void)state;

  rec.prepared = rec.committed = rec.aborted = rec.streams = 0;
  assert_int_equal(svm_peer_dial(&creds, svm_peer_server_addr(s), "control", "hostA", NULL, &m,
                                 &t), 0);
  assert_string_equal(svm_peer_get(&m, "host"), "hostB");
  assert_string_equal(nfc_tls_peer_identity(t), "hostB");
  assert_int_equal(svm_peer_check_identity(t, "hostB"), 0);
  assert_int_equal(svm_peer_check_identity(t, "hostC"), -EACCES);

  /* out of order: COMMIT before PREPARE */
  svm_peer_msg_init(&m, SVM_PEER_COMMIT);
  svm_peer_msg_add(&m, "token", "x");
  assert_int_equal(svm_peer_call(t, &m, 5000), -EPROTO);
  assert_non_null(strstr(svm_last_error(), "not expected"));
  /* the agent refuses a PREPARE: nothing prepared */
  svm_peer_msg_init(&m, SVM_PEER_PREPARE);
  svm_peer_msg_add(&m, "vm", "full");
  assert_int_equal(svm_peer_call(t, &m, 5000), -ENOSPC);
  assert_non_null(strstr(svm_last_error(), "datastore ds1 is full"));
  assert_int_equal(rec.prepared, 0);

  /* PREPARE, a stream with the token, COMMIT */
  svm_peer_msg_init(&m, SVM_PEER_PREPARE);
  svm_peer_msg_add(&m, "vm", "vm1");
  assert_int_equal(svm_peer_call(t, &m, 5000), 0);
  snprintf(token, sizeof token, "%s", svm_peer_get(&m, "token"));
  assert_int_equal(strlen(token), SVM_PEER_TOKEN_LEN);
  assert_int_equal(svm_peer_dial(&creds, svm_peer_server_addr(s), "nfc", "hostA", token, &m, &n),
                   0);
  assert_int_equal(nfc_tls_write_full(n, "ping", 4, 5000), 0);
  assert_int_equal(nfc_tls_read_full(n, b, 4, 5000), 0);
  assert_memory_equal(b, "ping", 4);
  svm_peer_hangup(n);
  WAIT_FOR(streams, 1);
  /* the right token from another host (same CA) is refused: the token is not enough */
  assert_int_equal(svm_peer_dial(&other_creds, svm_peer_server_addr(s), "nfc", "hostC", token,
                                 &m, &n), -EACCES);
  /* a stream with a made-up token is refused */
  assert_int_equal(svm_peer_dial(&creds, svm_peer_server_addr(s), "nfc", "hostA",
                                 "00000000000000000000000000000000", &m, &n), -EACCES);
  /* PREPARE twice: not in this state */
  svm_peer_msg_init(&m, SVM_PEER_PREPARE);
  svm_peer_msg_add(&m, "vm", "vm2");
  assert_int_equal(svm_peer_call(t, &m, 5000), -EPROTO);
  /* STATUS and COMMIT of another token: refused; of ours: done */
  svm_peer_msg_init(&m, SVM_PEER_COMMIT);
  svm_peer_msg_add(&m, "token", "%s", "ffffffffffffffffffffffffffffffff");
  assert_int_equal(svm_peer_call(t, &m, 5000), -EINVAL);
  svm_peer_msg_init(&m, SVM_PEER_STATUS);
  svm_peer_msg_add(&m, "token", "%s", token);
  assert_int_equal(svm_peer_call(t, &m, 5000), 0);
  assert_null(svm_peer_get(&m, "errno"));
  svm_peer_msg_init(&m, SVM_PEER_COMMIT);
  svm_peer_msg_add(&m, "token", "%s", token);
  assert_int_equal(svm_peer_call(t, &m, 5000), 0);
  assert_int_equal(rec.committed, 1);
  assert_int_equal(rec.aborted, 0);

  /* PREPARE, then the connection ends: the server aborts */
  svm_peer_msg_init(&m, SVM_PEER_PREPARE);
  svm_peer_msg_add(&m, "vm", "vm3");
  assert_int_equal(svm_peer_call(t, &m, 5000), 0);
  svm_peer_hangup(t);
  WAIT_FOR(aborted, 1);

  /* a failed COMMIT aborts too */
  assert_int_equal(svm_peer_dial(&creds, svm_peer_server_addr(s), "control", "hostA", NULL, &m,
                                 &t), 0);
  svm_peer_msg_init(&m, SVM_PEER_PREPARE);
  svm_peer_msg_add(&m, "vm", "vm4");
  assert_int_equal(svm_peer_call(t, &m, 5000), 0);
  snprintf(token, sizeof token, "%s", svm_peer_get(&m, "token"));
  rec.commit_result = -EIO;
  svm_peer_msg_init(&m, SVM_PEER_COMMIT);
  svm_peer_msg_add(&m, "token", "%s", token);
  assert_int_equal(svm_peer_call(t, &m, 5000), -EIO);
  rec.commit_result = 0;
  WAIT_FOR(aborted, 2);
  svm_peer_hangup(t);
  svm_peer_server_stop(s);
  assert_int_equal(rec.wrong, 0);
}

/* Garbage instead of a message after the handshake: the connection is closed, nothing done. */
static void garbage(void **state)
{
  struct svm_peer_server *s = serve();
  static struct svm_peer_msg m;
  struct nfc_tls *t;
  uint8_t h[SVM_PEER_HDR_SIZE];
  (void)state;

  rec.prepared = 0;
  assert_int_equal(svm_peer_dial(&creds, svm_peer_server_addr(s), "control", "hostA", NULL, &m,
                                 &t), 0);
  svm_peer_hdr_format(h, SVM_PEER_PREPARE, SVM_PEER_MAX_PAYLOAD + 1);
  assert_int_equal(nfc_tls_write_full(t, h, sizeof h, 5000), 0);
  assert_true(svm_peer_recv(t, &m, 5000) < 0);                /* closed on us */
  assert_int_equal(rec.prepared, 0);
  svm_peer_hangup(t);
  svm_peer_server_stop(s);
}

int main(void)
{
  signal(SIGPIPE, SIG_IGN);      /* as svmd: a peer that hangs up is an error, not a signal */
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(hdr_limits),
    cmocka_unit_test(payload_limits),
    cmocka_unit_test(state_table),
    cmocka_unit_test(garbage),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
