/* The control socket's peer check (see peercred.h). */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/error.h"
#include "svm/control/peercred.h"

/* Is the user uid (primary group gid) a member of group, supplementary groups included? */
static int in_group(uid_t uid, gid_t gid, gid_t group)
{
  struct passwd pw, *res = NULL;
  char buf[4096];
  gid_t groups[256];
  int n = 256;

  if (gid == group)
    return 1;
  if (getpwuid_r(uid, &pw, buf, sizeof buf, &res) != 0 || !res)
    return 0;
  if (getgrouplist(pw.pw_name, gid, groups, &n) < 0)
    return 0;                        /* more than 256 groups: not worth the allocation */
  for (int i = 0; i < n; i++)
    if (groups[i] == group)
      return 1;
  return 0;
}

int svm_control_peer_check(int fd, gid_t group)
{
  struct ucred cr;
  socklen_t len = sizeof cr;
  char g[80] = "";

  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
    return svm_error(errno, "cannot read the peer's credentials: %s", strerror(errno));
  if (cr.uid == 0 || cr.uid == geteuid())
    return 0;
  if (group != SVM_NO_GROUP && in_group(cr.uid, cr.gid, group))
    return 0;
  if (group != SVM_NO_GROUP) {
    struct group *gr = getgrgid(group);
    snprintf(g, sizeof g, ", or a member of group %s", gr ? gr->gr_name : "?");
  }
  return svm_error(EACCES, "uid %u (gid %u) is not allowed to control svmd: only root, "
                   "uid %u (svmd's user)%s may; run svmctl as one of them, or start svmd "
                   "with --group GROUP for a group of operators", (unsigned)cr.uid,
                   (unsigned)cr.gid, (unsigned)geteuid(), g);
}
