/* The migration gateway: Linux policy routing, as the vMotion TCP/IP stack has a gateway of
 * its own. Installed with iproute2 (svmd needs CAP_NET_ADMIN); a rule and a table of its own,
 * so that management keeps the host's default route. */
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "common/error.h"
#include "svm/net/net.h"

extern char **environ;

static int run_ip(char *const argv[], bool quiet)
{
  posix_spawn_file_actions_t fa;
  pid_t pid;
  int st, r;

  posix_spawn_file_actions_init(&fa);
  if (quiet)
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", 0, 0);
  r = posix_spawnp(&pid, "ip", &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (r != 0)
    return -r;
  if (waitpid(pid, &st, 0) < 0)
    return -errno;
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EPERM;
}

int svm_net_gateway_install(const struct svm_net_iface *i, const char *gw)
{
  char table[16], prio[16], from[INET_ADDRSTRLEN + 4];
  int r;

  snprintf(table, sizeof table, "%d", SVM_NET_TABLE);
  snprintf(prio, sizeof prio, "%d", SVM_NET_RULE_PRIO);
  snprintf(from, sizeof from, "%s", i->addr);
  svm_net_gateway_remove(i);
  r = run_ip((char *[]){ "ip", "-4", "route", "replace", "default", "via", (char *)gw, "dev",
                         (char *)i->name, "table", table, NULL }, false);
  if (r == 0)
    r = run_ip((char *[]){ "ip", "-4", "rule", "add", "from", from, "lookup", table,
                           "priority", prio, NULL }, false);
  if (r < 0)
    return svm_error(-r, "--migration-gateway %s: could not set the migration routes (svmd "
                     "needs CAP_NET_ADMIN); as root run: ip route replace default via %s dev %s "
                     "table %s; ip rule add from %s lookup %s priority %s", gw, gw, i->name,
                     table, from, table, prio);
  return 0;
}

void svm_net_gateway_remove(const struct svm_net_iface *i)
{
  char table[16], prio[16];

  snprintf(table, sizeof table, "%d", SVM_NET_TABLE);
  snprintf(prio, sizeof prio, "%d", SVM_NET_RULE_PRIO);
  run_ip((char *[]){ "ip", "-4", "rule", "del", "from", (char *)i->addr, "lookup", table,
                     "priority", prio, NULL }, true);
  run_ip((char *[]){ "ip", "-4", "route", "flush", "table", table, NULL }, true);
}
