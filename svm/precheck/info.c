/* What a host knows about itself for the prechecks: its migration and management interfaces,
 * whether its migration address is unique on the segment (its own ARP probe), the chosen
 * datastore (free space, writable), its CPU's features. The peer sends the same as the answer
 * to the peer link's INFO (key=value fields). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/error.h"
#include "svm/precheck/precheck.h"

static char *cpu_flags(void)
{
  FILE *f = fopen("/proc/cpuinfo", "re");
  char *line = NULL, *out = NULL;
  size_t cap = 0;

  if (!f)
    return strdup("");
  while (getline(&line, &cap, f) > 0) {
    char *colon = strchr(line, ':');
    if (strncmp(line, "flags", 5) != 0 || !colon)
      continue;
    colon[strcspn(colon, "\n")] = '\0';
    out = strdup(colon + 1 + strspn(colon + 1, " "));
    break;
  }
  free(line);
  fclose(f);
  return out ? out : strdup("");
}

/* Writable: a file made, written, synced and removed; the error in err otherwise. */
static bool ds_writable(const char *dir, char *err, size_t len)
{
  char path[4096], buf[4096] = { 0 };
  int fd, e = 0;

  snprintf(path, sizeof path, "%s/.svm-precheck.XXXXXX", dir);
  fd = mkostemp(path, O_CLOEXEC);
  if (fd < 0) {
    snprintf(err, len, "%s", strerror(errno));
    return false;
  }
  if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf || fsync(fd) < 0)
    e = errno ? errno : ENOSPC;
  close(fd);
  unlink(path);
  if (e)
    snprintf(err, len, "%s", strerror(e));
  return e == 0;
}

static void iface_of_spec(const char *spec, bool *found, struct svm_net_iface *i,
                          unsigned *port)
{
  struct in_addr a;
  unsigned p;

  *found = spec && svm_net_split(spec, &a, &p) == 0 && svm_net_iface_of(a, i) == 0;
  if (spec && port && svm_net_split(spec, &a, &p) == 0) {
    *port = p;
    inet_ntop(AF_INET, &a, i->addr, sizeof i->addr);
    i->in = a;
  }
}

int svm_pc_host_collect(struct svm_pc_host *h, const char *name, const char *mgmt,
                        const char *migration, const char *gw, const char *ds_name,
                        const char *ds_dir)
{
  memset(h, 0, sizeof *h);
  h->dup = -1;
  snprintf(h->name, sizeof h->name, "%s", name);
  snprintf(h->gw, sizeof h->gw, "%s", gw ? gw : "");
  h->has_mig = migration != NULL;
  iface_of_spec(migration, &h->mig_found, &h->mig, &h->mig_port);
  iface_of_spec(mgmt, &h->mgmt_found, &h->mgmt, NULL);
  if (h->mig_found && h->mig.up) {
    int r = svm_net_arp_probe(&h->mig, SVM_PC_PROBE_MS, h->dup_mac);
    if (r >= 0)
      h->dup = r;
    else
      snprintf(h->dup_err, sizeof h->dup_err, "%s", svm_last_error());
  }
  snprintf(h->ds, sizeof h->ds, "%s", ds_name ? ds_name : "");
  if (ds_dir) {
    struct statvfs st;
    h->ds_found = true;
    if (statvfs(ds_dir, &st) == 0)
      h->ds_free = (uint64_t)st.f_bavail * st.f_frsize;
    h->ds_writable = ds_writable(ds_dir, h->ds_err, sizeof h->ds_err);
  }
  h->cpu = cpu_flags();
  return h->cpu ? 0 : svm_error(ENOMEM, "out of memory");
}

void svm_pc_host_clear(struct svm_pc_host *h)
{
  free(h->cpu);
  h->cpu = NULL;
}

static int add_iface(struct svm_peer_msg *m, const char *p, bool found,
                     const struct svm_net_iface *i)
{
  char k[32];
  int r = 0;

#define ADD(key, ...) (snprintf(k, sizeof k, "%s-%s", p, key), svm_peer_msg_add(m, k, __VA_ARGS__))
  if ((r = ADD("addr", "%s", i->addr)) < 0 || !found)
    return r;
  if ((r = ADD("if", "%s", i->name)) < 0 || (r = ADD("prefix", "%u", i->prefix)) < 0 ||
      (r = ADD("up", "%d", i->up)) < 0 || (r = ADD("mtu", "%u", i->mtu)) < 0 ||
      (r = ADD("vlan", "%d", i->vlan)) < 0)
    return r;
#undef ADD
  return 0;
}

int svm_pc_host_to_msg(const struct svm_pc_host *h, struct svm_peer_msg *m)
{
  int r;

  if ((r = svm_peer_msg_add(m, "host", "%s", h->name)) < 0 ||
      (h->has_mig && (r = svm_peer_msg_add(m, "mig-port", "%u", h->mig_port)) < 0) ||
      (h->has_mig && (r = add_iface(m, "mig", h->mig_found, &h->mig)) < 0) ||
      (h->mgmt_found && (r = add_iface(m, "mgmt", true, &h->mgmt)) < 0) ||
      (r = svm_peer_msg_add(m, "gw", "%s", h->gw)) < 0 ||
      (r = svm_peer_msg_add(m, "dup", "%d", h->dup)) < 0 ||
      (r = svm_peer_msg_add(m, "dup-mac", "%s", h->dup_mac)) < 0 ||
      (r = svm_peer_msg_add(m, "dup-err", "%s", h->dup_err)) < 0 ||
      (r = svm_peer_msg_add(m, "ds", "%s", h->ds)) < 0 ||
      (r = svm_peer_msg_add(m, "ds-found", "%d", h->ds_found)) < 0 ||
      (r = svm_peer_msg_add(m, "ds-free", "%" PRIu64, h->ds_free)) < 0 ||
      (r = svm_peer_msg_add(m, "ds-writable", "%d", h->ds_writable)) < 0 ||
      (r = svm_peer_msg_add(m, "ds-err", "%s", h->ds_err)) < 0)
    return r;
  /* The flags are longer than a value may be: pieces of whole words. */
  for (const char *p = h->cpu; *p;) {
    size_t n = strlen(p);
    if (n > 900) {
      n = 900;
      while (n && p[n] != ' ')
        n--;
    }
    if ((r = svm_peer_msg_add(m, "cpu", "%.*s", (int)n, p)) < 0)
      return r;
    p += n;
    p += strspn(p, " ");
  }
  return 0;
}

static const char *get(const struct svm_peer_msg *m, const char *key)
{
  const char *v = svm_peer_get(m, key);
  return v ? v : "";
}

static void get_iface(const struct svm_peer_msg *m, const char *p, bool *found,
                      struct svm_net_iface *i)
{
  char k[32];

#define GET(key) (snprintf(k, sizeof k, "%s-%s", p, key), get(m, k))
  snprintf(i->addr, sizeof i->addr, "%s", GET("addr"));
  inet_pton(AF_INET, i->addr, &i->in);
  snprintf(i->name, sizeof i->name, "%s", GET("if"));
  *found = i->name[0] != '\0';
  i->prefix = (unsigned)strtoul(GET("prefix"), NULL, 10);
  if (i->prefix > 32)
    i->prefix = 32;
  i->mask.s_addr = i->prefix ? htonl(~0u << (32 - i->prefix)) : 0;
  i->up = atoi(GET("up")) == 1;
  i->mtu = (unsigned)strtoul(GET("mtu"), NULL, 10);
  i->vlan = *GET("vlan") ? atoi(GET("vlan")) : -1;
#undef GET
}

int svm_pc_host_from_msg(struct svm_pc_host *h, const struct svm_peer_msg *m)
{
  size_t len = 0;

  memset(h, 0, sizeof *h);
  snprintf(h->name, sizeof h->name, "%s", get(m, "host"));
  h->has_mig = svm_peer_get(m, "mig-addr") != NULL;
  h->mig_port = (unsigned)strtoul(get(m, "mig-port"), NULL, 10);
  get_iface(m, "mig", &h->mig_found, &h->mig);
  get_iface(m, "mgmt", &h->mgmt_found, &h->mgmt);
  snprintf(h->gw, sizeof h->gw, "%s", get(m, "gw"));
  h->dup = atoi(get(m, "dup"));
  snprintf(h->dup_mac, sizeof h->dup_mac, "%s", get(m, "dup-mac"));
  snprintf(h->dup_err, sizeof h->dup_err, "%s", get(m, "dup-err"));
  snprintf(h->ds, sizeof h->ds, "%s", get(m, "ds"));
  h->ds_found = atoi(get(m, "ds-found")) == 1;
  h->ds_free = strtoull(get(m, "ds-free"), NULL, 10);
  h->ds_writable = atoi(get(m, "ds-writable")) == 1;
  snprintf(h->ds_err, sizeof h->ds_err, "%s", get(m, "ds-err"));
  for (size_t i = 0; i < m->nfields; i++)
    if (strcmp(m->f[i].key, "cpu") == 0)
      len += strlen(m->f[i].value) + 1;
  h->cpu = calloc(1, len + 1);
  if (!h->cpu)
    return svm_error(ENOMEM, "out of memory");
  for (size_t i = 0; i < m->nfields; i++)
    if (strcmp(m->f[i].key, "cpu") == 0) {
      if (h->cpu[0])
        strcat(h->cpu, " ");
      strcat(h->cpu, m->f[i].value);
    }
  return 0;
}
