/* Interfaces: which one holds an address, its state, MTU and VLAN ID. */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/error.h"
#include "svm/net/net.h"

int svm_net_split(const char *spec, struct in_addr *addr, unsigned *port)
{
  const char *colon = strrchr(spec, ':');
  char host[INET_ADDRSTRLEN];
  char *end;
  unsigned long p;

  if (!colon || (size_t)(colon - spec) >= sizeof host)
    return svm_error(EINVAL, "'%s' is not IPV4-ADDRESS:PORT", spec);
  memcpy(host, spec, (size_t)(colon - spec));
  host[colon - spec] = '\0';
  p = strtoul(colon + 1, &end, 10);
  if (inet_pton(AF_INET, host, addr) != 1 || !colon[1] || *end || p > 65535)
    return svm_error(EINVAL, "'%s' is not IPV4-ADDRESS:PORT", spec);
  *port = (unsigned)p;
  return 0;
}

/* The 802.1Q ID of a VLAN interface, from the 8021q module's table; -1 when not one. */
static int vlan_id(const char *name)
{
  FILE *f = fopen("/proc/net/vlan/config", "re");
  char line[256], dev[64];
  int id = -1, v;

  if (!f)
    return -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "%63s | %d |", dev, &v) == 2 && strcmp(dev, name) == 0)
      id = v;
  fclose(f);
  return id;
}

int svm_net_iface_of(struct in_addr addr, struct svm_net_iface *out)
{
  struct ifaddrs *ifs, *e;
  int r = -ENOENT;

  memset(out, 0, sizeof *out);
  out->vlan = -1;
  out->in = addr;
  inet_ntop(AF_INET, &addr, out->addr, sizeof out->addr);
  if (getifaddrs(&ifs) < 0)
    return svm_error(errno, "getifaddrs: %s", strerror(errno));
  for (e = ifs; e; e = e->ifa_next) {
    struct sockaddr_in *sin = (struct sockaddr_in *)e->ifa_addr;
    if (!sin || sin->sin_family != AF_INET || sin->sin_addr.s_addr != addr.s_addr)
      continue;
    snprintf(out->name, sizeof out->name, "%s", e->ifa_name);
    out->mask = ((struct sockaddr_in *)e->ifa_netmask)->sin_addr;
    out->prefix = (unsigned)__builtin_popcount(out->mask.s_addr);
    out->up = (e->ifa_flags & IFF_UP) && (e->ifa_flags & IFF_RUNNING);
    r = 0;
    break;
  }
  freeifaddrs(ifs);
  if (r == 0) {
    struct ifreq ifr = { 0 };
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", out->name);
    if (fd >= 0 && ioctl(fd, SIOCGIFMTU, &ifr) == 0)
      out->mtu = (unsigned)ifr.ifr_mtu;
    if (fd >= 0)
      close(fd);
    out->vlan = vlan_id(out->name);
  }
  return r;
}

bool svm_net_on_link(const struct svm_net_iface *i, struct in_addr a)
{
  return (a.s_addr & i->mask.s_addr) == (i->in.s_addr & i->mask.s_addr);
}
