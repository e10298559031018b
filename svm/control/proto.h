/* The control protocol between svmctl (or any tool using include/svmotion/client.h) and svmd,
 * on the unix socket STATE/control.sock. One request and one response per connection.
 *
 * Request, one line:   SVMCTL/1 <verb> [<key>=<value> ...]\n
 * Response, one line:  OK <payload>\n            payload: the command's output (JSON, or text
 *                                                when the request asked format=text)
 *                      ERR <errno> <message>\n   errno: a positive Linux errno number
 *
 * Verbs are [a-z0-9-]+ ("vm-list", "cbt-query"). Keys, values, payloads and messages are
 * percent-encoded: every byte outside [A-Za-z0-9._~/:*,+@-] is written %XX (so '=', ' ', '%',
 * newlines and non-ASCII are escaped); %00 is refused. A key may repeat (disk=...). Requests are
 * at most SVM_CTL_MAX_REQUEST bytes and SVM_CTL_MAX_ARGS arguments, responses at most
 * SVM_CTL_MAX_RESPONSE bytes. A request for another protocol version is answered with
 * ERR EPROTONOSUPPORT naming both versions. Malformed requests get ERR EINVAL, never a crash.
 *
 * Answers of any size: cbt-query is paged, so that no answer nears SVM_CTL_MAX_RESPONSE (a
 * disk's changed extents can number in the millions). Its arguments `cursor` (a byte offset
 * of the disk, default 0) and `limit` (1-SVM_CTL_QUERY_PAGE extents, the default) select the
 * extents from the cursor on, at most `limit` of them. The JSON answer carries
 * "next-cursor": the cursor of the next page, or null on the last one; its "changed-bytes"
 * counts from the cursor on. A text answer is one "OFFSET LENGTH" line per extent: a page of
 * fewer than `limit` lines is the last, and the next cursor is the last line's
 * OFFSET + LENGTH. Pages taken while the guest writes may report a block twice or two
 * touching extents unmerged, never miss one written before the first page. svmctl cbt query
 * fetches every page and prints one answer. */
#ifndef SVM_CONTROL_PROTO_H
#define SVM_CONTROL_PROTO_H

#include <stddef.h>

enum {
  SVM_CTL_VERSION = 1,
  SVM_CTL_MAX_REQUEST = 64 * 1024,
  SVM_CTL_MAX_ARGS = 128,
  SVM_CTL_MAX_RESPONSE = 64 * 1024 * 1024,
  SVM_CTL_QUERY_PAGE = 65536,
};

struct svm_ctl_arg {
  char *key;
  char *value;
};

struct svm_ctl_request {
  unsigned version;
  char *verb;
  size_t nargs;
  struct svm_ctl_arg *args;
};

/* Parse one request line (without its '\n'). On failure *r is left empty. */
int svm_ctl_request_parse(const char *line, size_t len, struct svm_ctl_request *r);
void svm_ctl_request_clear(struct svm_ctl_request *r);
/* The value of the first argument named `key`, or NULL. */
const char *svm_ctl_arg(const struct svm_ctl_request *r, const char *key);

/* A request line with its '\n' (malloc'd). */
int svm_ctl_request_format(const char *verb, size_t nargs, const char *const *keys,
                           const char *const *values, char **out, size_t *len);

/* Response lines with their '\n' (malloc'd). */
int svm_ctl_response_ok(const char *payload, char **out, size_t *len);
int svm_ctl_response_err(int errnum, const char *msg, char **out, size_t *len);
/* Parse a response line (without '\n'): 0 and *payload for OK; for ERR the negative errno, with
 * svm_error set to the agent's message. A line that is neither is -EPROTO. */
int svm_ctl_response_parse(const char *line, size_t len, char **payload);

/* Percent-encoding as described above (exposed for tests). */
int svm_ctl_encode(const char *s, size_t len, char **out);
int svm_ctl_decode(const char *s, size_t len, char **out);

#endif
