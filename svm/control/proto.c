/* The control protocol's encoding (see proto.h). Requests come from any local process
 * that can reach the socket, so the parser bounds everything before use. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/hex.h"
#include "svm/control/proto.h"

static bool plain(unsigned char c)
{
  return c != 0 && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         strchr("._~/:*,+@-", c) != NULL);
}

int svm_ctl_encode(const char *s, size_t len, char **out)
{
  static const char hex[] = "0123456789ABCDEF";
  char *buf = malloc(len * 3 + 1), *p = buf;

  if (!buf)
    return svm_error(ENOMEM, "out of memory");
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (plain(c)) {
      *p++ = (char)c;
    } else {
      *p++ = '%';
      *p++ = hex[c >> 4];
      *p++ = hex[c & 15];
    }
  }
  *p = '\0';
  *out = buf;
  return 0;
}

int svm_ctl_decode(const char *s, size_t len, char **out)
{
  CLEANUP_FREE char *buf = malloc(len + 1);
  char *p = buf;

  if (!buf)
    return svm_error(ENOMEM, "out of memory");
  for (size_t i = 0; i < len; i++) {
    if (s[i] == '%') {
      int hi = i + 2 < len ? svm_hexval(s[i + 1]) : -1;
      int lo = i + 2 < len ? svm_hexval(s[i + 2]) : -1;
      if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
        return svm_error(EINVAL, "bad percent escape '%.*s'", (int)(len - i < 3 ? len - i : 3),
                         s + i);
      *p++ = (char)(hi << 4 | lo);
      i += 2;
    } else if (plain((unsigned char)s[i])) {
      *p++ = s[i];
    } else {
      return svm_error(EINVAL, "byte 0x%02x must be percent-encoded", (unsigned char)s[i]);
    }
  }
  *p = '\0';
  *out = TAKE_PTR(buf);
  return 0;
}

void svm_ctl_request_clear(struct svm_ctl_request *r)
{
  for (size_t i = 0; i < r->nargs; i++) {
    free(r->args[i].key);
    free(r->args[i].value);
  }
  free(r->args);
  free(r->verb);
  memset(r, 0, sizeof *r);
}

const char *svm_ctl_arg(const struct svm_ctl_request *r, const char *key)
{
  for (size_t i = 0; i < r->nargs; i++)
    if (strcmp(r->args[i].key, key) == 0)
      return r->args[i].value;
  return NULL;
}

static int parse_version(const char *s, size_t n, unsigned *out)
{
  unsigned v = 0;

  if (n < 8 || memcmp(s, "SVMCTL/", 7) != 0)
    return svm_error(EPROTO, "not an svmctl request (it must start with 'SVMCTL/%d ')",
                     SVM_CTL_VERSION);
  for (size_t i = 7; i < n; i++) {
    if (s[i] < '0' || s[i] > '9' || v > 100000)
      return svm_error(EPROTO, "bad protocol version '%.*s'", (int)(n > 20 ? 20 : n), s);
    v = v * 10 + (unsigned)(s[i] - '0');
  }
  *out = v;
  return 0;
}

static int parse_verb(struct svm_ctl_request *r, const char *s, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
      return svm_error(EINVAL, "bad command word '%.*s'", (int)(n > 40 ? 40 : n), s);
  r->verb = strndup(s, n);
  if (!r->verb)
    return svm_error(ENOMEM, "out of memory");
  return 0;
}

static int parse_arg(struct svm_ctl_request *r, const char *s, size_t n)
{
  const char *eq = memchr(s, '=', n);
  struct svm_ctl_arg *a;
  int ret;

  if (!eq || eq == s)
    return svm_error(EINVAL, "argument '%.*s' is not key=value", (int)(n > 40 ? 40 : n), s);
  if (r->nargs == SVM_CTL_MAX_ARGS)
    return svm_error(E2BIG, "more than %d arguments", SVM_CTL_MAX_ARGS);
  if (!r->args) {
    r->args = calloc(SVM_CTL_MAX_ARGS, sizeof *r->args);
    if (!r->args)
      return svm_error(ENOMEM, "out of memory");
  }
  a = &r->args[r->nargs];
  ret = svm_ctl_decode(s, (size_t)(eq - s), &a->key);
  if (ret < 0)
    return ret;
  ret = svm_ctl_decode(eq + 1, n - (size_t)(eq - s) - 1, &a->value);
  r->nargs++;   /* counted even without its value: svm_ctl_request_clear frees the key */
  return ret;
}

/* Word ntok of the request: the version, the command, then key=value arguments. */
static int parse_word(struct svm_ctl_request *r, size_t ntok, const char *s, size_t n)
{
  int ret;

  if (ntok == 1)
    return parse_verb(r, s, n);
  if (ntok > 1)
    return parse_arg(r, s, n);
  ret = parse_version(s, n, &r->version);
  if (ret < 0)
    return ret;
  if (r->version != SVM_CTL_VERSION)
    return svm_error(EPROTONOSUPPORT, "control protocol SVMCTL/%u is not supported: this svmd "
                     "speaks SVMCTL/%d (use svmctl and svmd of the same version)", r->version,
                     SVM_CTL_VERSION);
  return 0;
}

static int parse_words(const char *line, size_t len, struct svm_ctl_request *r)
{
  size_t pos = 0, ntok = 0;

  while (pos <= len) {
    const char *s = line + pos;
    const char *sp = memchr(s, ' ', len - pos);
    size_t n = sp ? (size_t)(sp - s) : len - pos;

    if (n == 0)
      return svm_error(EINVAL, "empty word in request (at byte %zu)", pos);
    int ret = parse_word(r, ntok++, s, n);
    if (ret < 0)
      return ret;
    pos += n + 1;
  }
  if (!r->verb)
    return svm_error(EINVAL, "request has no command");
  return 0;
}

int svm_ctl_request_parse(const char *line, size_t len, struct svm_ctl_request *r)
{
  int ret;

  memset(r, 0, sizeof *r);
  if (len > SVM_CTL_MAX_REQUEST)
    return svm_error(EMSGSIZE, "request longer than %d bytes", SVM_CTL_MAX_REQUEST);
  if (len == 0)
    return svm_error(EINVAL, "empty request");
  ret = parse_words(line, len, r);
  if (ret < 0)
    svm_ctl_request_clear(r);   /* the one teardown for a request parsed half-way */
  return ret;
}

/* A growable string for formatting. */
struct sbuf {
  char *p;
  size_t len, cap;
  bool oom;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
  if (b->oom)
    return;
  if (b->len + n + 1 > b->cap) {
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < b->len + n + 1)
      ncap *= 2;
    char *np = realloc(b->p, ncap);
    if (!np) {
      b->oom = true;
      return;
    }
    b->p = np;
    b->cap = ncap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void sb_enc(struct sbuf *b, const char *s)
{
  char *e;

  if (svm_ctl_encode(s, strlen(s), &e) < 0) {
    b->oom = true;
    return;
  }
  sb_add(b, e, strlen(e));
  free(e);
}

static int sb_done(struct sbuf *b, size_t max, char **out, size_t *len)
{
  if (b->oom) {
    free(b->p);
    return svm_error(ENOMEM, "out of memory");
  }
  if (b->len > max) {
    free(b->p);
    return svm_error(EMSGSIZE, "message of %zu bytes is larger than the protocol's %zu", b->len,
                     max);
  }
  *out = b->p;
  *len = b->len;
  return 0;
}

int svm_ctl_request_format(const char *verb, size_t nargs, const char *const *keys,
                           const char *const *values, char **out, size_t *len)
{
  struct sbuf b = { 0 };
  char head[32];

  if (nargs > SVM_CTL_MAX_ARGS)
    return svm_error(E2BIG, "more than %d arguments", SVM_CTL_MAX_ARGS);
  snprintf(head, sizeof head, "SVMCTL/%d ", SVM_CTL_VERSION);
  sb_add(&b, head, strlen(head));
  sb_add(&b, verb, strlen(verb));
  for (size_t i = 0; i < nargs; i++) {
    sb_add(&b, " ", 1);
    sb_enc(&b, keys[i]);
    sb_add(&b, "=", 1);
    sb_enc(&b, values[i]);
  }
  sb_add(&b, "\n", 1);
  return sb_done(&b, SVM_CTL_MAX_REQUEST + 1, out, len);
}

int svm_ctl_response_ok(const char *payload, char **out, size_t *len)
{
  struct sbuf b = { 0 };

  sb_add(&b, "OK ", 3);
  sb_enc(&b, payload);
  sb_add(&b, "\n", 1);
  return sb_done(&b, SVM_CTL_MAX_RESPONSE + 1, out, len);
}

int svm_ctl_response_err(int errnum, const char *msg, char **out, size_t *len)
{
  struct sbuf b = { 0 };
  char head[32];

  snprintf(head, sizeof head, "ERR %d ", errnum > 0 ? errnum : EIO);
  sb_add(&b, head, strlen(head));
  sb_enc(&b, msg && *msg ? msg : "failed");
  sb_add(&b, "\n", 1);
  return sb_done(&b, SVM_CTL_MAX_RESPONSE + 1, out, len);
}

int svm_ctl_response_parse(const char *line, size_t len, char **payload)
{
  *payload = NULL;
  if (len > SVM_CTL_MAX_RESPONSE)
    return svm_error(EPROTO, "svmd's response is longer than %d bytes", SVM_CTL_MAX_RESPONSE);
  if (len >= 3 && memcmp(line, "OK ", 3) == 0) {
    int r = svm_ctl_decode(line + 3, len - 3, payload);
    return r < 0 ? svm_error_prefix("bad response from svmd") : 0;
  }
  if (len >= 4 && memcmp(line, "ERR ", 4) == 0) {
    size_t i = 4;
    int errnum = 0;
    while (i < len && line[i] >= '0' && line[i] <= '9' && errnum < 100000)
      errnum = errnum * 10 + (line[i++] - '0');
    if (i == 4 || i >= len || line[i] != ' ' || errnum <= 0 || errnum >= 4096)
      return svm_error(EPROTO, "bad error response from svmd");
    char *msg;
    if (svm_ctl_decode(line + i + 1, len - i - 1, &msg) < 0)
      return svm_error_prefix("bad error response from svmd");
    svm_error(errnum, "%s", msg);
    free(msg);
    return -errnum;
  }
  return svm_error(EPROTO, "svmd answered something that is not 'OK ...' or 'ERR ...' (an "
                   "svmd of another version?)");
}
