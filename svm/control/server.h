/* The agent's control socket: accepts connections on STATE/control.sock, reads one request
 * (proto.h), calls the handler and writes its answer. Each client is served on a thread of its
 * own (a bounded number at once), so the handler runs concurrently with itself and must lock
 * what it shares; a client gets CONTROL_IO_TIMEOUT_S seconds for its whole request, so a slow
 * or stuck client holds only its own thread and never blocks the others. */
#ifndef SVM_CONTROL_H
#define SVM_CONTROL_H

#include <sys/types.h>

#include "svm/control/proto.h"

struct svm_control;

/* The handler returns 0 with a malloc'd *payload, or a negative errno with svm_error set. */
typedef int (*svm_control_handler)(void *opaque, const struct svm_ctl_request *r, char **payload);

/* Bind and listen on `path` (an existing socket file there is replaced: the caller holds the
 * state directory's lock, so it can only be stale). */
int svm_control_open(const char *path, struct svm_control **out);
/* Let members of `group` use the socket too (SVM_NO_GROUP, the default: only root and svmd's
 * own user). Every connection is checked at accept (peercred.h). */
void svm_control_set_group(struct svm_control *c, gid_t group);
/* Serve until `stop_fd` becomes readable (e.g. a signalfd), then wait for the requests still
 * being served. Returns 0 then. */
int svm_control_serve(struct svm_control *c, int stop_fd, svm_control_handler h, void *opaque);
/* Close and remove the socket file. */
void svm_control_close(struct svm_control *c);

#endif
