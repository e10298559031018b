/* Control protocol: encoding, request/response parsing (negative cases first), and a real
 * server thread answering the public client API over a unix socket. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include <svmotion/client.h>

#include "common/error.h"
#include "svm/control/proto.h"
#include "svm/control/server.h"

static void encoding(void **state)
{
  char *e, *d;
  const char in[] = "a b=c%d\n\xff/x:y*";

  assert_int_equal(svm_ctl_encode(in, strlen(in), &e), 0);
  assert_string_equal(e, "a%20b%3Dc%25d%0A%FF/x:y*");
  assert_int_equal(svm_ctl_decode(e, strlen(e), &d), 0);
  assert_string_equal(d, in);
  free(e);
  free(d);
  assert_int_equal(svm_ctl_decode("a%2", 3, &d), -EINVAL);
  assert_string_equal(svm_last_error(), "bad percent escape '%2'");
  assert_int_equal(svm_ctl_decode("a%", 2, &d), -EINVAL);
  assert_int_equal(svm_ctl_decode("a%zz", 4, &d), -EINVAL);
  assert_int_equal(svm_ctl_decode("a%00b", 5, &d), -EINVAL);
  assert_int_equal(svm_ctl_decode("a=b", 3, &d), -EINVAL);
  assert_string_equal(svm_last_error(), "byte 0x3d must be percent-encoded");
}

static void request_round_trip(void **state)
{
  const char *keys[] = { "vm", "disk", "disk" };
  const char *vals[] = { "my vm", "10G:thin", "" };
  struct svm_ctl_request r;
  char *line;
  size_t len;

  assert_int_equal(svm_ctl_request_format("vm-create", 3, keys, vals, &line, &len), 0);
  assert_string_equal(line, "SVMCTL/1 vm-create vm=my%20vm disk=10G:thin disk=\n");
  assert_int_equal(svm_ctl_request_parse(line, len - 1, &r), 0);
  assert_int_equal(r.version, 1);
  assert_string_equal(r.verb, "vm-create");
  assert_int_equal(r.nargs, 3);
  assert_string_equal(svm_ctl_arg(&r, "vm"), "my vm");
  assert_string_equal(svm_ctl_arg(&r, "disk"), "10G:thin");
  assert_string_equal(r.args[2].value, "");
  assert_null(svm_ctl_arg(&r, "nope"));
  svm_ctl_request_clear(&r);
  free(line);
}

struct bad_req {
  const char *line;
  int err;
  const char *msg;
};

static const struct bad_req bad[] = {
  { "", EINVAL, "empty request" },
  { "HELLO", EPROTO, "not an svmctl request (it must start with 'SVMCTL/1 ')" },
  { "SVMCTL/", EPROTO, "not an svmctl request (it must start with 'SVMCTL/1 ')" },
  { "SVMCTL/x vm-list", EPROTO, "bad protocol version 'SVMCTL/x'" },
  { "SVMCTL/2 vm-list", EPROTONOSUPPORT,
    "control protocol SVMCTL/2 is not supported: this svmd speaks SVMCTL/1 (use svmctl and "
    "svmd of the same version)" },
  { "SVMCTL/1", EINVAL, "request has no command" },
  { "SVMCTL/1 ", EINVAL, "empty word in request (at byte 9)" },
  { "SVMCTL/1  vm-list", EINVAL, "empty word in request (at byte 9)" },
  { "SVMCTL/1 VM-LIST", EINVAL, "bad command word 'VM-LIST'" },
  { "SVMCTL/1 vm-list json", EINVAL, "argument 'json' is not key=value" },
  { "SVMCTL/1 vm-list =x", EINVAL, "argument '=x' is not key=value" },
  { "SVMCTL/1 vm-list a=%4", EINVAL, "bad percent escape '%4'" },
  { "SVMCTL/1 vm-list a=\x01", EINVAL, "byte 0x01 must be percent-encoded" },
  { "SVMCTL/1 vm-list a=b ", EINVAL, "empty word in request (at byte 21)" },
};

static void request_negative(void **state)
{
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct svm_ctl_request r;
    int ret = svm_ctl_request_parse(bad[i].line, strlen(bad[i].line), &r);
    if (ret != -bad[i].err || strcmp(svm_last_error(), bad[i].msg) != 0)
      fail_msg("case %zu: got %d '%s', want %d '%s'", i, ret, svm_last_error(), -bad[i].err,
               bad[i].msg);
    assert_null(r.verb);
    assert_null(r.args);
  }
}

static void request_limits(void **state)
{
  size_t n = SVM_CTL_MAX_REQUEST + 1;
  char *big = malloc(n + 1);
  struct svm_ctl_request r;

  memset(big, 'a', n);
  big[n] = '\0';
  assert_int_equal(svm_ctl_request_parse(big, n, &r), -EMSGSIZE);
  /* too many arguments */
  strcpy(big, "SVMCTL/1 x");
  for (int i = 0; i <= SVM_CTL_MAX_ARGS; i++)
    strcat(big, " a=b");
  assert_int_equal(svm_ctl_request_parse(big, strlen(big), &r), -E2BIG);
  assert_null(r.args);
  free(big);
  /* a NUL byte inside a word (found by fuzz-control) */
  assert_int_equal(svm_ctl_request_parse("SVMCTL/1 x \0a=b", 15, &r), -EINVAL);
  assert_string_equal(svm_last_error(), "byte 0x00 must be percent-encoded");
}

static void responses(void **state)
{
  char *line, *payload;
  size_t len;

  assert_int_equal(svm_ctl_response_ok("{\"a\": \"b c\"}\nline2", &line, &len), 0);
  assert_string_equal(line, "OK %7B%22a%22:%20%22b%20c%22%7D%0Aline2\n");
  assert_int_equal(svm_ctl_response_parse(line, len - 1, &payload), 0);
  assert_string_equal(payload, "{\"a\": \"b c\"}\nline2");
  free(payload);
  free(line);
  assert_int_equal(svm_ctl_response_err(ENOENT, "no VM 'x'", &line, &len), 0);
  assert_string_equal(line, "ERR 2 no%20VM%20%27x%27\n");
  assert_int_equal(svm_ctl_response_parse(line, len - 1, &payload), -ENOENT);
  assert_string_equal(svm_last_error(), "no VM 'x'");
  assert_null(payload);
  free(line);
  assert_int_equal(svm_ctl_response_parse("HTTP/1.1 200", 12, &payload), -EPROTO);
  assert_int_equal(svm_ctl_response_parse("ERR x y", 7, &payload), -EPROTO);
  assert_int_equal(svm_ctl_response_parse("ERR 0 y", 7, &payload), -EPROTO);
  assert_int_equal(svm_ctl_response_parse("ERR 5", 5, &payload), -EPROTO);
  assert_int_equal(svm_ctl_response_parse("OK %zz", 6, &payload), -EINVAL);
}

/* A real server on a socket in a temp dir. */
static int handler(void *opaque, const struct svm_ctl_request *r, char **payload)
{
  if (strcmp(r->verb, "echo") == 0) {
    const char *v = svm_ctl_arg(r, "text");
    *payload = strdup(v ? v : "");
    return 0;
  }
  return svm_error(EOPNOTSUPP, "unknown command '%s'", r->verb);
}

struct server {
  struct svm_control *c;
  int stop[2];
};

static void *serve(void *arg)
{
  struct server *s = arg;
  svm_control_serve(s->c, s->stop[0], handler, NULL);
  return NULL;
}

static int raw_request(const char *path, const char *req, size_t n, char *resp, size_t cap)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  size_t got = 0;

  strcpy(sa.sun_path, path);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
    return -1;
  if (n)
    (void)!send(fd, req, n, MSG_NOSIGNAL);
  shutdown(fd, SHUT_WR);
  for (;;) {
    ssize_t r = read(fd, resp + got, cap - 1 - got);
    if (r <= 0)
      break;
    got += (size_t)r;
  }
  resp[got] = '\0';
  close(fd);
  return (int)got;
}

static void server_and_client(void **state)
{
  char dir[] = "/tmp/test-control.XXXXXX", path[256], resp[512];
  struct server s;
  struct svm_client *c;
  pthread_t t;
  char *payload;

  assert_non_null(mkdtemp(dir));
  /* nobody listening yet: the message says how to start the agent */
  assert_int_equal(svm_client_connect(dir, &c), -ENOENT);
  assert_non_null(strstr(svm_last_error(), "the agent svmd is not running"));
  assert_non_null(strstr(svm_last_error(), "svmd --name HOST --state"));
  snprintf(path, sizeof path, "%s/control.sock", dir);
  assert_int_equal(svm_control_open(path, &s.c), 0);
  assert_int_equal(pipe(s.stop), 0);
  assert_int_equal(pthread_create(&t, NULL, serve, &s), 0);

  assert_int_equal(svm_client_connect(dir, &c), 0);
  const char *k[] = { "text" }, *v[] = { "hello world = 100%" };
  assert_int_equal(svm_client_call(c, "echo", 1, k, v, &payload), 0);
  assert_string_equal(payload, "hello world = 100%");
  free(payload);
  /* the handle reconnects for a second call; errors carry the agent's message */
  assert_int_equal(svm_client_call(c, "nope", 0, NULL, NULL, &payload), -EOPNOTSUPP);
  assert_string_equal(svm_last_error(), "unknown command 'nope'");
  svm_client_close(c);

  /* malformed requests over the wire get an error line, never a crash */
  raw_request(path, "garbage\n", 8, resp, sizeof resp);
  assert_string_equal(resp, "ERR 71 not%20an%20svmctl%20request%20%28it%20must%20start%20with"
                            "%20%27SVMCTL/1%20%27%29\n");
  raw_request(path, "SVMCTL/9 x\n", 11, resp, sizeof resp);
  assert_true(strncmp(resp, "ERR 93 ", 7) == 0);
  raw_request(path, "SVMCTL/1 echo", 13, resp, sizeof resp);
  assert_string_equal(resp, "ERR 22 request%20does%20not%20end%20with%20a%20newline\n");
  raw_request(path, "SVMCTL/1 echo\nSVMCTL/1 echo\n", 28, resp, sizeof resp);
  assert_true(strncmp(resp, "ERR 22 one%20request", 20) == 0);
  raw_request(path, "", 0, resp, sizeof resp);
  assert_string_equal(resp, "");
  char *big = malloc(SVM_CTL_MAX_REQUEST + 100);
  memset(big, 'a', SVM_CTL_MAX_REQUEST + 100);
  raw_request(path, big, SVM_CTL_MAX_REQUEST + 100, resp, sizeof resp);
  assert_string_equal(resp, "ERR 90 request%20longer%20than%2065536%20bytes\n");
  free(big);
  /* a client that sent half a request and one that sent nothing hold only their own threads:
   * another is answered meanwhile (a one-at-a-time server would wait out their deadlines) */
  {
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int half = socket(AF_UNIX, SOCK_STREAM, 0), idle = socket(AF_UNIX, SOCK_STREAM, 0);
    strcpy(sa.sun_path, path);
    assert_int_equal(connect(half, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(connect(idle, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(send(half, "SVMCTL/1 ec", 11, MSG_NOSIGNAL), 11);
    assert_int_equal(svm_client_connect(dir, &c), 0);
    assert_int_equal(svm_client_call(c, "echo", 1, k, v, &payload), 0);
    assert_string_equal(payload, "hello world = 100%");
    free(payload);
    svm_client_close(c);
    /* the half request is still unanswered: nothing to read yet */
    char b[8];
    assert_int_equal(recv(half, b, sizeof b, MSG_DONTWAIT), -1);
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    close(half);
    close(idle);
  }
  /* still serving */
  assert_int_equal(svm_client_connect(dir, &c), 0);
  assert_int_equal(svm_client_call(c, "echo", 1, k, v, &payload), 0);
  free(payload);
  svm_client_close(c);

  assert_int_equal(write(s.stop[1], "x", 1), 1);
  pthread_join(t, NULL);
  svm_control_close(s.c);
  close(s.stop[0]);
  close(s.stop[1]);
  assert_int_equal(access(path, F_OK), -1);
  assert_int_equal(svm_client_connect(dir, &c), -ENOENT);
  rmdir(dir);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(encoding),         cmocka_unit_test(request_round_trip),
    cmocka_unit_test(request_negative), cmocka_unit_test(request_limits),
    cmocka_unit_test(responses),        cmocka_unit_test(server_and_client),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
