/* Who may talk to svmd over the control socket: root, svmd's own user, and the members of the
 * operator's --group. The socket's mode (0600, or 0660 with --group) already keeps others out;
 * this check at accept (SO_PEERCRED, the credentials the kernel recorded at connect) holds
 * even when the socket's or the state directory's mode was widened by mistake. */
#ifndef SVM_CONTROL_PEERCRED_H
#define SVM_CONTROL_PEERCRED_H

#include <sys/types.h>

#define SVM_NO_GROUP ((gid_t)-1)

/* 0 when the peer of the connected unix socket fd may use it; else -EACCES with svm_error set
 * to a message for the peer (its uid and gid, who is allowed, and how to get access). */
int svm_control_peer_check(int fd, gid_t group);

#endif
