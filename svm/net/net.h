/* Internal: svmotion's network model (IPv4).
 *
 * svmd has a management interface (--mgmt: control, peer link, NFC) and a migration interface
 * (--migration ADDR:PORT). Migration traffic is bound to the migration interface at both
 * ends: the listener is bound to the address and, with SO_BINDTODEVICE, to the interface that
 * holds it; outgoing connections bind to the local migration address and device. So it never
 * leaves through management, even when both share a subnet or a route would prefer it.
 *
 * A routed migration network has a gateway of its own (--migration-gateway GW): policy
 * routing, a rule "from MIGRATION_ADDR lookup SVM_NET_TABLE" and "default via GW dev IFACE"
 * in that table, so that management keeps the host's default route. */
#ifndef SVM_NET_H
#define SVM_NET_H

#include <net/if.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>

#include "nfc/tls.h"

enum {
  SVM_NET_TABLE = 21334,       /* the routing table of the migration gateway ("SV") */
  SVM_NET_RULE_PRIO = 21334,
};

struct svm_net_iface {
  char name[IF_NAMESIZE];      /* "" when no interface holds the address */
  char addr[INET_ADDRSTRLEN];
  struct in_addr in, mask;
  unsigned prefix;
  bool up;                     /* IFF_UP and IFF_RUNNING (carrier) */
  unsigned mtu;
  int vlan;                    /* 802.1Q ID, -1 when not a VLAN interface */
};

/* "ADDR:PORT" into its parts (IPv4 literal). */
int svm_net_split(const char *spec, struct in_addr *addr, unsigned *port);
/* The interface holding addr: -ENOENT when none (out->name ""). */
int svm_net_iface_of(struct in_addr addr, struct svm_net_iface *out);
bool svm_net_on_link(const struct svm_net_iface *i, struct in_addr a);

/* A TCP socket bound to the interface (device and address): listening on port, or connected
 * to dst:port within timeout_ms. The fd, or -errno with a message. */
/* A socket of type/proto bound to the interface's device and address (port 0). */
int svm_net_bound_socket(const struct svm_net_iface *i, int type, int proto);
int svm_net_listen(const struct svm_net_iface *i, unsigned port);
int svm_net_connect(const struct svm_net_iface *i, struct in_addr dst, unsigned port,
                    int timeout_ms);

/* An ICMP echo from the interface's address and device to dst with don't-fragment set and
 * `payload` bytes of data: 0 and the round trip in *rtt_us, -ETIMEDOUT (no answer), -EMSGSIZE
 * (larger than the local MTU), -errno. */
int svm_net_ping(const struct svm_net_iface *i, struct in_addr dst, size_t payload,
                 int timeout_ms, unsigned *rtt_us);
/* RFC 5227 ARP probe for the interface's own address (sender 0.0.0.0): 1 when another host
 * answers (its MAC into mac, 18 bytes), 0 when none does within timeout_ms, -errno. */
int svm_net_arp_probe(const struct svm_net_iface *i, int timeout_ms, char *mac);

/* The migration gateway: install (replacing an old one) / remove the rule and route. */
int svm_net_gateway_install(const struct svm_net_iface *i, const char *gw);
void svm_net_gateway_remove(const struct svm_net_iface *i);

/* The --migration listener: TLS (server config, NULL = plaintext) on the bound socket; serves
 * probes (HELLO channel=probe) and the bandwidth sink (channel=bandwidth), one at a time. */
struct svm_net_server;
int svm_net_server_start(const struct svm_net_iface *i, unsigned port,
                         struct nfc_tls_config *tls, const char *self,
                         void (*log)(const char *fmt, ...), struct svm_net_server **out);
void svm_net_server_stop(struct svm_net_server *s);
/* The port it listens on (the kernel's choice when started with port 0). */
unsigned svm_net_server_port(const struct svm_net_server *s);

/* The client side: a TLS session to the peer's migration listener from the local migration
 * interface, HELLO with channel; *out the session. */
struct svm_peer_creds;
int svm_net_dial(const struct svm_peer_creds *creds, const struct svm_net_iface *i,
                 struct in_addr dst, unsigned port, const char *channel, const char *self,
                 char *peer_host, size_t peer_host_len, struct nfc_tls **out);
/* Bulk data for `seconds` on a bandwidth session: bytes the peer confirmed receiving. */
int svm_net_bandwidth(struct nfc_tls *t, unsigned seconds, unsigned long long *bytes,
                      double *elapsed);

#endif
