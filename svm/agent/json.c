/* What vm list / vm show answer: one JSON object (stable kebab-case keys), or text for people. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "svm/agent/internal.h"

void agent_json_str(FILE *f, const char *s)
{
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20 || *p == 0x7f)
      fprintf(f, "\\u%04x", *p);
    else
      fputc(*p, f);
  }
  fputc('"', f);
}

static void kv_str(FILE *f, const char *key, const char *val, bool comma)
{
  fprintf(f, "\"%s\": ", key);
  if (val)
    agent_json_str(f, val);
  else
    fputs("null", f);
  if (comma)
    fputs(", ", f);
}

/* The unix URI nbd+unix:///NAME?socket=PATH (malloc'd). The export name "VM/diskN" needs no
 * escaping since VM names are [A-Za-z0-9._-]; the socket path is percent-encoded where it
 * holds anything but [A-Za-z0-9._~/-] (a state directory with a space, say), which qemu and
 * libnbd decode. */
static char *unix_uri(const struct agent_disk *d)
{
  static const char hex[] = "0123456789ABCDEF";
  size_t n = strlen(d->sock_path);
  CLEANUP_FREE char *path = malloc(n * 3 + 1);
  char *p = path, *u;

  if (!path)
    return NULL;
  for (const unsigned char *s = (const unsigned char *)d->sock_path; *s; s++) {
    if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
        strchr("._~/-", *s)) {
      *p++ = (char)*s;
    } else {
      *p++ = '%';
      *p++ = hex[*s >> 4];
      *p++ = hex[*s & 15];
    }
  }
  *p = '\0';
  if (asprintf(&u, "nbd+unix:///%s?socket=%s", d->export_name, path) < 0)
    u = NULL;
  return u;
}

static char *tcp_uri(const struct agent_disk *d)
{
  bool v6 = strchr(d->tcp_addr, ':') != NULL;
  char *u;

  if (asprintf(&u, "nbd%s://%s%s%s:%s/%s", d->tcp_tls ? "s" : "", v6 ? "[" : "",
               d->tcp_addr, v6 ? "]" : "", d->tcp_port, d->export_name) < 0)
    u = NULL;
  return u;
}

/* "nbd-uri" and "nbd-tcp-uri", null where the disk is not exported that way (or, should the
 * memory run out, where the URI could not be made: the JSON stays whole). */
static void disk_uris(FILE *f, const struct agent_disk *d)
{
  CLEANUP_FREE char *u = d->export ? unix_uri(d) : NULL;
  CLEANUP_FREE char *t = d->export && d->tcp_addr[0] ? tcp_uri(d) : NULL;

  fprintf(f, "\"nbd-uri\": ");
  if (u)
    agent_json_str(f, u);
  else
    fputs("null", f);
  fprintf(f, ", \"nbd-tcp-uri\": ");
  if (t)
    agent_json_str(f, t);
  else
    fputs("null", f);
}

static void vm_json(FILE *f, struct agent_vm *vm)
{
  const struct svm_desc *desc = vm->desc;

  fputs("{", f);
  kv_str(f, "name", desc->name, true);
  kv_str(f, "uuid", desc->uuid, true);
  kv_str(f, "datastore", vm->ds->name, true);
  kv_str(f, "path", vm->dir, true);
  kv_str(f, "descriptor", vm->desc_path, true);
  fputs("\"disks\": [", f);
  for (unsigned i = 0; i < vm->ndisks; i++) {
    struct agent_disk *d = &vm->disks[i];
    const struct svm_desc_disk *dd = &desc->disks[i];
    fprintf(f, "%s{\"index\": %u, ", i ? ", " : "", i);
    kv_str(f, "file", d->path, true);
    fprintf(f, "\"size\": %" PRIu64 ", ", dd->size);
    kv_str(f, "provisioning", svm_desc_prov_name(dd->provisioning), true);
    kv_str(f, "uuid", dd->uuid, true);
    kv_str(f, "ctk", d->ctk_path, true);
    kv_str(f, "export-name", d->export_name, true);
    kv_str(f, "socket", d->sock_path, true);
    disk_uris(f, d);
    agent_disk_cbt_json(d, f);
    fputs("}", f);
  }
  fputs("]}", f);
}

static void vm_text(FILE *f, struct agent_vm *vm)
{
  const struct svm_desc *desc = vm->desc;

  fprintf(f, "VM %s  uuid %s  datastore %s  %s\n", desc->name, desc->uuid, vm->ds->name,
          vm->dir);
  for (unsigned i = 0; i < vm->ndisks; i++) {
    struct agent_disk *d = &vm->disks[i];
    const struct svm_desc_disk *dd = &desc->disks[i];
    fprintf(f, "  disk%u  %" PRIu64 " bytes  %s  %s\n", i, dd->size,
            svm_desc_prov_name(dd->provisioning), d->path);
    CLEANUP_FREE char *u = unix_uri(d);
    fprintf(f, "         %s\n", u ? u : "(out of memory)");
    if (d->tcp_addr[0]) {
      CLEANUP_FREE char *t = tcp_uri(d);
      fprintf(f, "         %s\n", t ? t : "(out of memory)");
    }
  }
}

static int finish(FILE *f, char **out)
{
  if (fclose(f) != 0) {
    free(*out);
    *out = NULL;
    return svm_error(ENOMEM, "out of memory");
  }
  return 0;
}

int agent_out_vm(struct svm_agent *a, struct agent_vm *vm, bool json, char **out)
{
  size_t len;
  FILE *f = open_memstream(out, &len);

  if (!f)
    return svm_error(ENOMEM, "out of memory");
  if (json)
    vm_json(f, vm);
  else
    vm_text(f, vm);
  return finish(f, out);
}

int agent_out_degraded(const struct agent_degraded *g, bool json, char **out)
{
  size_t len;
  FILE *f = open_memstream(out, &len);

  if (!f)
    return svm_error(ENOMEM, "out of memory");
  if (json)
    agent_degraded_json(f, g);
  else
    agent_degraded_text(f, g);
  return finish(f, out);
}

static int by_name(const void *x, const void *y)
{
  struct agent_vm *const *a = x, *const *b = y;
  return strcmp((*a)->desc->name, (*b)->desc->name);
}

int agent_out_vm_list(struct svm_agent *a, bool json, char **out)
{
  size_t n = 0, len;
  CLEANUP_FREE struct agent_vm **v = NULL;
  FILE *f;

  for (struct agent_vm *vm = a->vms; vm; vm = vm->next)
    n++;
  v = calloc(n ? n : 1, sizeof *v);
  if (!v)
    return svm_error(ENOMEM, "out of memory");
  n = 0;
  for (struct agent_vm *vm = a->vms; vm; vm = vm->next)
    v[n++] = vm;
  qsort(v, n, sizeof *v, by_name);
  f = open_memstream(out, &len);
  if (!f)
    return svm_error(ENOMEM, "out of memory");
  if (json) {
    fputs("{", f);
    kv_str(f, "host", a->name, true);
    fputs("\"datastores\": [", f);
    for (size_t i = 0; i < a->nds; i++) {
      fputs(i ? ", {" : "{", f);
      kv_str(f, "name", a->ds[i].name, true);
      kv_str(f, "path", a->ds[i].dir, false);
      fputs("}", f);
    }
    fputs("], \"vms\": [", f);
    for (size_t i = 0; i < n; i++) {
      if (i)
        fputs(", ", f);
      vm_json(f, v[i]);
    }
    /* VMs found but not served, apart: "vms" lists exactly what svmd serves */
    fputs("], \"degraded\": [", f);
    for (const struct agent_degraded *g = a->degraded; g; g = g->next) {
      agent_degraded_json(f, g);
      if (g->next)
        fputs(", ", f);
    }
    fputs("]}", f);
  } else {
    if (n == 0)
      fprintf(f, "no VMs on host %s\n", a->name);
    for (size_t i = 0; i < n; i++)
      vm_text(f, v[i]);
    for (const struct agent_degraded *g = a->degraded; g; g = g->next)
      agent_degraded_text(f, g);
  }
  return finish(f, out);
}
