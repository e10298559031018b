/* svmotion — talking to the local agent svmd over its control socket STATE/control.sock.
 *
 * The protocol (svm/control/proto.h) is one request and one response per connection:
 *   svm_client_connect(state_dir, &c);     connects (tells how to start svmd when it is not running)
 *   svm_client_call(c, "vm-list", 1, (const char *[]){ "format" }, (const char *[]){ "json" },
 *                   &payload);             sends, waits for the answer, reconnects if needed
 *   svm_client_close(c);
 * Failures return a negative errno with svm_last_error() set: the agent's own message when
 * svmd refused the request, or what went wrong on the socket. */
#ifndef SVMOTION_CLIENT_H
#define SVMOTION_CLIENT_H

#include <stddef.h>

#include <svmotion/error.h>

#ifdef __cplusplus
extern "C" {
#endif

struct svm_client;

/* Connect to STATE_DIR/control.sock. When nobody listens (ENOENT, ECONNREFUSED) the error says
 * that the agent is not running and how to start it. */
int svm_client_connect(const char *state_dir, struct svm_client **out);

/* Send `verb` with `nargs` key=value arguments; on success *payload is the agent's answer
 * (malloc'd, the caller frees it). */
int svm_client_call(struct svm_client *c, const char *verb, size_t nargs,
                    const char *const *keys, const char *const *values, char **payload);

void svm_client_close(struct svm_client *c);

#ifdef __cplusplus
}
#endif
#endif
