/* Probes of the migration network: ICMP echo with don't-fragment (reachability, round trip,
 * path MTU: vmkping's job) and the RFC 5227 ARP probe (duplicate address detection). */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if_arp.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "svm/net/net.h"

static long long now_us(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static uint16_t csum(const void *p, size_t n)
{
  const uint8_t *b = p;
  uint32_t s = 0;

  for (size_t k = 0; k + 1 < n; k += 2)
    s += (uint32_t)(b[k] << 8 | b[k + 1]);
  if (n & 1)
    s += (uint32_t)b[n - 1] << 8;
  while (s >> 16)
    s = (s & 0xffff) + (s >> 16);
  return htons((uint16_t)~s);
}

int svm_net_ping(const struct svm_net_iface *i, struct in_addr dst, size_t payload,
                 int timeout_ms, unsigned *rtt_us)
{
  static uint16_t seq;
  int pmtu = IP_PMTUDISC_PROBE;   /* DF set, and the route's cached PMTU ignored */
  size_t len = sizeof(struct icmphdr) + payload;
  uint8_t *pkt = calloc(1, len), buf[65536];
  struct icmphdr *h = (struct icmphdr *)pkt;
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr = dst };
  uint16_t id = (uint16_t)getpid(), sq = ++seq;
  long long t0, deadline;
  int fd, rfd, r = -ETIMEDOUT;

  if (!pkt)
    return svm_error(ENOMEM, "out of memory");
  fd = svm_net_bound_socket(i, SOCK_RAW, IPPROTO_ICMP);
  if (fd < 0) {
    free(pkt);
    return fd;
  }
  /* The echo leaves through the migration interface; the answer may come back another way
   * (the peer's kernel answers by its own routes, vmkping's case too), so it is read from a
   * socket bound to no device. */
  rfd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP);
  if (rfd < 0) {
    r = svm_error(errno, "ICMP socket: %s", strerror(errno));
    close(fd);
    free(pkt);
    return r;
  }
  setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof pmtu);
  h->type = ICMP_ECHO;
  h->un.echo.id = htons(id);
  h->un.echo.sequence = htons(sq);
  for (size_t k = 0; k < payload; k++)
    pkt[sizeof *h + k] = (uint8_t)k;
  h->checksum = csum(pkt, len);
  t0 = now_us();
  deadline = t0 + timeout_ms * 1000LL;
  if (sendto(fd, pkt, len, 0, (struct sockaddr *)&sa, sizeof sa) < 0) {
    char d[INET_ADDRSTRLEN];
    int e = errno;
    inet_ntop(AF_INET, &dst, d, sizeof d);
    r = e == EMSGSIZE ? -EMSGSIZE : svm_error(e, "ping %s from %s: %s", d, i->addr, strerror(e));
    goto out;
  }
  for (long long now; (now = now_us()) < deadline;) {
    struct pollfd p = { .fd = rfd, .events = POLLIN };
    if (poll(&p, 1, (int)((deadline - now) / 1000) + 1) <= 0)
      continue;
    ssize_t n = recv(rfd, buf, sizeof buf, 0);
    if (n < (ssize_t)sizeof(struct iphdr))
      continue;
    size_t hl = (size_t)(buf[0] & 0x0f) * 4;
    struct icmphdr *rh = (struct icmphdr *)(buf + hl);
    if ((size_t)n < hl + sizeof *rh || rh->type != ICMP_ECHOREPLY ||
        ntohs(rh->un.echo.id) != id || ntohs(rh->un.echo.sequence) != sq ||
        ((struct iphdr *)buf)->saddr != dst.s_addr)
      continue;
    *rtt_us = (unsigned)(now_us() - t0);
    r = 0;
    break;
  }
out:
  close(rfd);
  close(fd);
  free(pkt);
  return r;
}

struct arp_pkt {
  struct ether_header eth;
  struct arphdr arp;
  uint8_t sha[6], spa[4], tha[6], tpa[4];
} __attribute__((packed));

int svm_net_arp_probe(const struct svm_net_iface *i, int timeout_ms, char *mac)
{
  struct sockaddr_ll ll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ARP),
                            .sll_ifindex = (int)if_nametoindex(i->name), .sll_halen = 6 };
  struct ifreq ifr = { 0 };
  struct arp_pkt q = { 0 }, a;
  long long deadline = now_us() + timeout_ms * 1000LL;
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ARP)), r = 0;

  if (fd < 0)
    return svm_error(errno, "ARP probe on %s: %s (svmd needs CAP_NET_RAW)", i->name,
                     strerror(errno));
  snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", i->name);
  if (ll.sll_ifindex == 0 || ioctl(fd, SIOCGIFHWADDR, &ifr) < 0 ||
      bind(fd, (struct sockaddr *)&ll, sizeof ll) < 0) {
    r = svm_error(errno ? errno : ENODEV, "ARP probe on %s: %s", i->name, strerror(errno));
    goto out;
  }
  memset(q.eth.ether_dhost, 0xff, 6);
  memcpy(q.eth.ether_shost, ifr.ifr_hwaddr.sa_data, 6);
  q.eth.ether_type = htons(ETH_P_ARP);
  q.arp.ar_hrd = htons(ARPHRD_ETHER);
  q.arp.ar_pro = htons(ETH_P_IP);
  q.arp.ar_hln = 6;
  q.arp.ar_pln = 4;
  q.arp.ar_op = htons(ARPOP_REQUEST);
  memcpy(q.sha, ifr.ifr_hwaddr.sa_data, 6);
  memcpy(q.tpa, &i->in, 4);       /* sender 0.0.0.0: a probe (RFC 5227 2.1.1) */
  memset(ll.sll_addr, 0xff, 6);
  for (int n = 0; n < 3 && r == 0; n++) {
    long long next = now_us() + timeout_ms * 1000LL / 3;
    if (sendto(fd, &q, sizeof q, 0, (struct sockaddr *)&ll, sizeof ll) < 0) {
      r = svm_error(errno, "ARP probe on %s: %s", i->name, strerror(errno));
      break;
    }
    for (long long now; r == 0 && (now = now_us()) < next && now < deadline;) {
      struct pollfd p = { .fd = fd, .events = POLLIN };
      if (poll(&p, 1, (int)((next - now) / 1000) + 1) <= 0)
        continue;
      ssize_t got = recv(fd, &a, sizeof a, 0);
      /* Another host's answer for our address, or its own probe for it */
      if (got < (ssize_t)sizeof a || memcmp(a.sha, q.sha, 6) == 0 ||
          (memcmp(a.spa, &i->in, 4) != 0 &&
           !(ntohs(a.arp.ar_op) == ARPOP_REQUEST && memcmp(a.tpa, &i->in, 4) == 0 &&
             !a.spa[0] && !a.spa[1] && !a.spa[2] && !a.spa[3])))
        continue;
      snprintf(mac, 18, "%02x:%02x:%02x:%02x:%02x:%02x", a.sha[0], a.sha[1], a.sha[2],
               a.sha[3], a.sha[4], a.sha[5]);
      r = 1;
    }
  }
out:
  close(fd);
  return r;
}
