/* VMs of the agent: open a VM from its descriptor, create one (folder, disk files in the
 * requested provisioning, descriptor), delete one. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/uuid.h"
#include "svm/agent/internal.h"
#include "svm/disk/provision.h"

struct agent_vm *agent_find_vm(struct svm_agent *a, const char *name)
{
  for (struct agent_vm *vm = a->vms; vm; vm = vm->next)
    if (strcmp(vm->desc->name, name) == 0)
      return vm;
  return NULL;
}

const struct svm_datastore *agent_find_ds(struct svm_agent *a, const char *name)
{
  for (size_t i = 0; i < a->nds; i++)
    if (strcmp(a->ds[i].name, name) == 0)
      return &a->ds[i];
  return NULL;
}

static void free_vm(struct agent_vm *vm)
{
  for (unsigned i = 0; vm->disks && i < vm->ndisks; i++) {
    struct agent_disk *d = &vm->disks[i];
    free(d->path);
    free(d->ctk_path);
    free(d->export_name);
    free(d->sock_path);
  }
  free(vm->disks);
  pthread_mutex_destroy(&vm->op_mu);
  svm_desc_free(vm->desc);
  free(vm->dir);
  free(vm->desc_path);
  free(vm);
}

void agent_vm_close(struct agent_vm *vm)
{
  if (!vm)
    return;
  for (unsigned i = 0; i < vm->ndisks; i++)
    agent_disk_stop(&vm->disks[i]);
  free_vm(vm);
}

/* "ADDR:PORT" (ADDR may be [v6]) -> addr, port. The port strictly: 1 to 5 digits, at most
 * 65535 (0: ephemeral ports); `ndisks` disks listen on PORT..PORT+ndisks-1, which must fit. */
static int split_hostport(const char *s, unsigned ndisks, char *addr, size_t alen, char *port,
                          size_t plen)
{
  const char *colon = strrchr(s, ':');
  const char *h = s;
  unsigned long p = 0;
  size_t hl;

  if (!colon || !colon[1])
    return svm_error(EINVAL, "'%s' is not ADDR:PORT", s);
  hl = (size_t)(colon - s);
  if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
    h++;
    hl -= 2;
  }
  if (hl == 0 || hl >= alen || strlen(colon + 1) >= plen)
    return svm_error(EINVAL, "'%s' is not ADDR:PORT", s);
  memcpy(addr, h, hl);
  addr[hl] = '\0';
  strcpy(port, colon + 1);
  if (strlen(port) > 5)
    return svm_error(EINVAL, "'%s': the port must be a number from 1 to 65535 (0: any free "
                     "port)", s);
  for (const char *c = port; *c; c++) {
    if (*c < '0' || *c > '9')
      return svm_error(EINVAL, "'%s': the port must be a number from 1 to 65535 (0: any free "
                       "port)", s);
    p = p * 10 + (unsigned long)(*c - '0');
  }
  if (p > 65535)
    return svm_error(EINVAL, "'%s': port %lu is out of range (1-65535; 0: any free port)", s, p);
  if (p && ndisks > 1 && p + ndisks - 1 > 65535)
    return svm_error(EINVAL, "'%s': %u disks need ports %lu-%lu, past 65535; choose a lower "
                     "port", s, ndisks, p, p + ndisks - 1);
  return 0;
}

/* An address that means "every interface" (0, 0.0.0.0, ::, [::], 0::0...): it exposes the
 * disks to every network the host is on, so it is taken only through --tcp-any. */
static bool wildcard_addr(const char *addr)
{
  struct addrinfo hints = { .ai_flags = AI_PASSIVE | AI_NUMERICHOST, .ai_socktype = SOCK_STREAM };
  struct addrinfo *res;
  bool any = false;

  if (strcmp(addr, "*") == 0)
    return true;
  if (getaddrinfo(addr, NULL, &hints, &res) != 0)
    return false;                   /* a host name: resolved when the export listens */
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    if (ai->ai_family == AF_INET)
      any |= ((struct sockaddr_in *)ai->ai_addr)->sin_addr.s_addr == htonl(INADDR_ANY);
    else if (ai->ai_family == AF_INET6)
      any |= IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr);
  }
  freeaddrinfo(res);
  return any;
}

/* asprintf, but NULL on failure (asprintf leaves its pointer undefined, and free_vm frees
 * every one of a disk's strings). */
static char *strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *strf(const char *fmt, ...)
{
  va_list ap;
  char *s;
  int n;

  va_start(ap, fmt);
  n = vasprintf(&s, fmt, ap);
  va_end(ap);
  return n < 0 ? NULL : s;
}

/* Disk i's paths and names, checked against its file; tcp_addr/tcp_port from export.tcp
 * ("" when the VM is not exported over TCP). */
static int init_disk(struct svm_agent *a, struct agent_vm *vm, unsigned i, const char *tcp_addr,
                     const char *tcp_port)
{
  struct agent_disk *d = &vm->disks[i];
  const struct svm_desc_disk *dd = &vm->desc->disks[i];
  const char *name = vm->desc->name;
  struct stat st;

  d->vm = vm;
  d->index = i;
  if (!(d->path = strf("%s/%s", vm->dir, dd->file)) ||
      !(d->ctk_path = strf("%s/%s", vm->dir, dd->ctk)) ||
      !(d->export_name = strf("%s/disk%u", name, i)) ||
      !(d->sock_path = strf("%s/%s-disk%u.sock", a->nbds_dir, name, i)))
    return svm_error(ENOMEM, "out of memory");
  /* both files inside the folder, plain files (the .ctk is made when missing) */
  if (agent_check_file(vm->dir, dd->file, false, &st) < 0 ||
      agent_check_file(vm->dir, dd->ctk, true, NULL) < 0)
    return svm_error_prefix("%s: disk%u", vm->desc_path, i);
  if ((uint64_t)st.st_size != dd->size)
    return svm_error(EINVAL, "%s: disk%u: %s is %jd bytes, the descriptor says %" PRIu64,
                     vm->desc_path, i, d->path, (intmax_t)st.st_size, dd->size);
  if (tcp_addr[0]) {
    snprintf(d->tcp_addr, sizeof d->tcp_addr, "%s", tcp_addr);
    unsigned port = (unsigned)atoi(tcp_port);
    /* a fixed port P serves disk0, P+1 disk1, ...; port 0 gives each disk an ephemeral one */
    snprintf(d->tcp_port, sizeof d->tcp_port, "%u", port ? port + i : 0);
  }
  return 0;
}

/* Every disk's tracker and export, or none of them. */
static int start_disks(struct svm_agent *a, struct agent_vm *vm)
{
  for (unsigned i = 0; i < vm->ndisks; i++) {
    if (agent_disk_start(a, &vm->disks[i]) < 0) {
      int r = svm_error_prefix("%s: disk%u", vm->desc_path, i);
      while (i)
        agent_disk_stop(&vm->disks[--i]);
      return r;
    }
  }
  return 0;
}

int agent_vm_open(struct svm_agent *a, const struct svm_datastore *ds, const char *dir,
                  const char *desc_path, struct svm_desc *desc, struct agent_vm **out)
{
  struct agent_vm *vm = calloc(1, sizeof *vm);
  char tcp_port[16] = "";
  char tcp_addr[64] = "";
  int r = 0;

  *out = NULL;
  if (!vm) {
    svm_desc_free(desc);
    return svm_error(ENOMEM, "out of memory");
  }
  pthread_mutex_init(&vm->op_mu, NULL);
  vm->ds = ds;
  vm->desc = desc;
  vm->dir = strdup(dir);
  vm->desc_path = strdup(desc_path);
  vm->ndisks = desc->ndisks;
  vm->disks = calloc(desc->ndisks ? desc->ndisks : 1, sizeof *vm->disks);
  if (!vm->dir || !vm->desc_path || !vm->disks)
    r = svm_error(ENOMEM, "out of memory");
  if (!r && desc->tcp &&
      split_hostport(desc->tcp, desc->ndisks, tcp_addr, sizeof tcp_addr, tcp_port,
                     sizeof tcp_port) < 0)
    r = svm_error_prefix("%s: export.tcp", desc_path);
  for (unsigned i = 0; !r && i < vm->ndisks; i++)
    r = init_disk(a, vm, i, tcp_addr, tcp_port);
  if (!r)
    r = start_disks(a, vm);
  if (r < 0) {
    free_vm(vm);   /* frees desc too */
    return r;
  }
  *out = vm;
  return 0;
}

/* ---- create ---- */

/* A new disk file in the provisioning asked for (svm/provision.h): thin = sparse, thick = every
 * block allocated, eager-zeroed thick = allocated and written with zeros. */
static int create_disk_file(const char *path, uint64_t size, enum svm_desc_prov p)
{
  enum svm_provisioning kind = p == SVM_DESC_THICK   ? SVM_PROVISIONING_THICK
                               : p == SVM_DESC_EAGER ? SVM_PROVISIONING_EAGER
                                                     : SVM_PROVISIONING_THIN;
  CLEANUP_CLOSE int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  int r;

  if (fd < 0)
    return svm_error(errno, "%s: %s", path, strerror(errno));
  if (fchmod(fd, 0600) < 0)          /* private whatever the umask */
    return svm_error(errno, "%s: chmod: %s", path, strerror(errno));
  r = svm_provision_prepare(fd, path, size, kind);
  if (r == 0)
    r = svm_provision_finish(fd, path, size, kind, NULL);
  if (r == 0 && fdatasync(fd) < 0)
    r = svm_error(errno, "%s: fdatasync: %s", path, strerror(errno));
  return r;
}

static int parse_disk_arg(const char *s, uint64_t *size, enum svm_desc_prov *p)
{
  const char *colon = strchr(s, ':');
  size_t n = colon ? (size_t)(colon - s) : strlen(s);
  uint64_t v = 0;

  if (n == 0)
    return svm_error(EINVAL, "disk '%s': no size", s);
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9' || v > UINT64_MAX / 10)
      return svm_error(EINVAL, "disk '%s': the size must be a number of bytes", s);
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  if (v > (UINT64_C(1) << 62))
    return svm_error(EINVAL, "disk '%s': larger than the largest disk svmd can make (4 EiB, "
                     "%" PRIu64 " bytes)", s, UINT64_C(1) << 62);
  if (v == 0 || v % 512)
    return svm_error(EINVAL, "disk '%s': the size must be a non-zero multiple of 512 bytes", s);
  *size = v;
  *p = SVM_DESC_THIN;
  if (colon && svm_desc_prov_parse(colon + 1, p) < 0)
    return svm_error_prefix("disk '%s'", s);
  return 0;
}

static int setf(struct svm_desc *d, const char *val, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));
static int setf(struct svm_desc *d, const char *val, const char *fmt, ...)
{
  char key[64];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(key, sizeof key, fmt, ap);
  va_end(ap);
  return svm_desc_set(d, key, val);
}

/* What vm-create asks for, checked before anything is made. */
struct vm_spec {
  const char *name, *tcp;
  char tcp_any[16];                 /* --tcp-any PORT, as export.tcp: "0.0.0.0:PORT" */
  const struct svm_datastore *ds;
  unsigned ndisks;
  uint64_t sizes[SVM_DESC_MAX_DISKS];
  enum svm_desc_prov provs[SVM_DESC_MAX_DISKS];
};

static int find_datastore(struct svm_agent *a, const char *dsname,
                          const struct svm_datastore **out)
{
  char list[512] = "";

  *out = agent_find_ds(a, dsname);
  if (*out)
    return 0;
  for (size_t i = 0; i < a->nds; i++)
    snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
             a->ds[i].name);
  return svm_error(ENOENT, "no such datastore '%s' on host %s (it has: %s)", dsname, a->name,
                   list);
}

/* The disk=BYTES:PROV arguments, in order. */
static int parse_disk_args(const struct svm_ctl_request *r, struct vm_spec *spec)
{
  for (size_t i = 0; i < r->nargs; i++) {
    if (strcmp(r->args[i].key, "disk") != 0)
      continue;
    if (spec->ndisks == SVM_DESC_MAX_DISKS)
      return svm_error(E2BIG, "a VM has at most %d disks (--disk was given more often)",
                       SVM_DESC_MAX_DISKS);
    int ret = parse_disk_arg(r->args[i].value, &spec->sizes[spec->ndisks],
                             &spec->provs[spec->ndisks]);
    if (ret < 0)
      return ret;
    spec->ndisks++;
  }
  if (spec->ndisks == 0)
    return svm_error(EINVAL, "a VM needs at least one --disk SIZE[:PROVISIONING]");
  return 0;
}

/* --tcp ADDR:PORT or --tcp-any PORT: strict ports, no wildcard address by accident, and
 * never plaintext unless svmd was started with --insecure. */
static int validate_tcp(struct svm_agent *a, const struct svm_ctl_request *r,
                        struct vm_spec *spec)
{
  const char *any = svm_ctl_arg(r, "tcp-any");
  char h[64], p[16];

  if (!spec->tcp && !any)
    return 0;
  if (spec->tcp && any)
    return svm_error(EINVAL, "--tcp and --tcp-any exclude each other");
  if (any) {
    if (snprintf(spec->tcp_any, sizeof spec->tcp_any, "0.0.0.0:%s", any) >=
        (int)sizeof spec->tcp_any || split_hostport(spec->tcp_any, spec->ndisks, h, sizeof h,
                                                    p, sizeof p) < 0)
      return svm_error_prefix("--tcp-any");
    spec->tcp = spec->tcp_any;
  } else {
    if (split_hostport(spec->tcp, spec->ndisks, h, sizeof h, p, sizeof p) < 0)
      return svm_error_prefix("--tcp");
    if (wildcard_addr(h))
      return svm_error(EINVAL, "--tcp %s: '%s' means every address of this host; give the "
                       "address to listen on, or say --tcp-any PORT to export on all of them",
                       spec->tcp, h);
  }
  if (!a->insecure && !a->nbd_tls)
    return svm_error(EPERM, "--tcp: VM %s: NBD over TCP would be plaintext; start svmd with "
                     "--tls-dir DIR or --tls-psk FILE (TCP clients then need TLS) or "
                     "--insecure to allow plaintext (the unix sockets need neither)",
                     spec->name);
  return 0;
}

static int validate_create(struct svm_agent *a, const struct svm_ctl_request *r,
                           struct vm_spec *spec)
{
  const char *dsname = svm_ctl_arg(r, "datastore");
  const struct agent_vm *other;
  int ret;

  spec->name = svm_ctl_arg(r, "vm");
  spec->tcp = svm_ctl_arg(r, "tcp");
  if (!spec->name)
    return svm_error(EINVAL, "vm-create: missing argument 'vm'");
  if (!svm_vm_name_valid(spec->name))
    return svm_error(EINVAL, "'%s' is not a valid VM name (1-64 of [A-Za-z0-9._-], not "
                     "starting with '.' or '-')", spec->name);
  if (!dsname)
    return svm_error(EINVAL, "vm-create: missing argument 'datastore'");
  ret = find_datastore(a, dsname, &spec->ds);
  if (ret < 0)
    return ret;
  other = agent_find_vm(a, spec->name);
  if (other)
    return svm_error(EEXIST, "VM %s exists already (datastore %s, %s)", spec->name,
                     other->ds->name, other->dir);
  for (const struct agent_name *n = a->creating; n; n = n->next)
    if (strcmp(n->name, spec->name) == 0)
      return svm_error(EEXIST, "VM %s is being created by another request", spec->name);
  const struct agent_degraded *g = agent_degraded_find(a, spec->name);
  if (g)
    return svm_error(EEXIST, "VM %s exists already (datastore %s, %s; degraded: %s)",
                     spec->name, g->ds->name, g->dir, g->reason);
  ret = parse_disk_args(r, spec);
  if (ret < 0)
    return ret;
  return validate_tcp(a, r, spec);
}

/* 0700 whatever the umask: the VM's files are svmd's alone (guests reach them over NBD). */
static int make_vm_dir(const char *dir)
{
  if (mkdir(dir, 0700) == 0) {
    if (chmod(dir, 0700) == 0)
      return 0;
    int e = errno;
    rmdir(dir);
    return svm_error(e, "%s: chmod: %s", dir, strerror(e));
  }
  return svm_error(errno, "%s: %s%s", dir, strerror(errno),
                   errno == EEXIST ? " (a folder of that name is in the datastore already; "
                                     "remove it or pick another name)" : "");
}

static int set_disk_keys(struct svm_desc *d, unsigned i, uint64_t size, enum svm_desc_prov p)
{
  char f[32], c[32], num[32], uuid[37];
  int ret;

  snprintf(f, sizeof f, "disk%u.raw", i);
  snprintf(c, sizeof c, "disk%u.ctk", i);
  snprintf(num, sizeof num, "%" PRIu64, size);
  svm_uuid_generate(uuid);
  ret = setf(d, f, "disk%u.file", i);
  if (!ret)
    ret = setf(d, num, "disk%u.size", i);
  if (!ret)
    ret = setf(d, svm_desc_prov_name(p), "disk%u.provisioning", i);
  if (!ret)
    ret = setf(d, uuid, "disk%u.uuid", i);
  if (!ret)
    ret = setf(d, c, "disk%u.ctk", i);
  return ret;
}

/* The new VM's descriptor, in memory, validated. */
static int build_desc(const struct vm_spec *spec, const char *path, struct svm_desc **out)
{
  CLEANUP_DESC struct svm_desc *d = svm_desc_new(path);
  char uuid[37];
  int ret;

  if (!d)
    return svm_error(ENOMEM, "out of memory");
  svm_uuid_generate(uuid);
  ret = svm_desc_comment(d, "svmotion VM descriptor: key = value lines; unknown keys are kept");
  if (!ret)
    ret = svm_desc_set(d, "svm.version", "1");
  if (!ret)
    ret = svm_desc_set(d, "name", spec->name);
  if (!ret)
    ret = svm_desc_set(d, "uuid", uuid);
  if (!ret && spec->tcp)
    ret = svm_desc_set(d, "export.tcp", spec->tcp);
  for (unsigned i = 0; !ret && i < spec->ndisks; i++)
    ret = set_disk_keys(d, i, spec->sizes[i], spec->provs[i]);
  if (!ret)
    ret = svm_desc_validate(d);
  if (ret < 0)
    return ret;
  *out = TAKE_PTR(d);
  return 0;
}

static int create_disk_files(const char *dir, const struct svm_desc *d,
                             const struct vm_spec *spec)
{
  for (unsigned i = 0; i < spec->ndisks; i++) {
    CLEANUP_FREE char *file = NULL;
    if (asprintf(&file, "%s/%s", dir, d->disks[i].file) < 0) {
      file = NULL;
      return svm_error(ENOMEM, "out of memory");
    }
    int ret = create_disk_file(file, spec->sizes[i], spec->provs[i]);
    if (ret < 0)
      return ret;
  }
  return 0;
}

/* The descriptor save synced the VM folder; the folder's own entry lives in the datastore. */
static int sync_datastore(const struct svm_datastore *ds)
{
  CLEANUP_CLOSE int dfd = open(ds->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

  if (dfd < 0 || fsync(dfd) < 0)
    return svm_error(errno, "%s: fsync: %s", ds->dir, strerror(errno));
  return 0;
}

/* Fill the new folder: descriptor, disk files, then open the VM (trackers, exports) from
 * what is on disk now, exactly as a restart would. */
static int populate_vm(struct svm_agent *a, const struct vm_spec *spec, const char *dir,
                       const char *path, struct agent_vm **out)
{
  CLEANUP_DESC struct svm_desc *d = NULL;
  int ret;

  ret = build_desc(spec, path, &d);
  if (!ret)
    ret = create_disk_files(dir, d, spec);
  if (!ret)
    ret = svm_desc_save(d, path);
  if (!ret)
    ret = sync_datastore(spec->ds);
  if (ret < 0)
    return ret;
  svm_desc_free(TAKE_PTR(d));
  ret = svm_desc_load(path, &d);
  if (ret < 0)
    return ret;
  return agent_vm_open(a, spec->ds, dir, path, TAKE_PTR(d), out);   /* frees d on failure */
}

/* Leave nothing behind: the folder is new, so everything in it was made here. */
static void remove_partial_vm(const char *dir, const char *path, unsigned ndisks)
{
  static const char *const made[] = { "raw", "ctk" };

  for (unsigned i = 0; i < ndisks; i++) {
    for (unsigned k = 0; k < 2; k++) {
      CLEANUP_FREE char *p = NULL;
      if (asprintf(&p, "%s/disk%u.%s", dir, i, made[k]) >= 0)
        unlink(p);
      else
        p = NULL;
    }
  }
  unlink(path);
  rmdir(dir);
}

static int reserve_name(struct svm_agent *a, const char *name, struct agent_name **out)
{
  struct agent_name *n = calloc(1, sizeof *n);

  if (!n)
    return svm_error(ENOMEM, "out of memory");
  snprintf(n->name, sizeof n->name, "%s", name);
  n->next = a->creating;
  a->creating = n;
  *out = n;
  return 0;
}

static void release_name(struct svm_agent *a, struct agent_name *n)
{
  for (struct agent_name **pp = &a->creating; *pp; pp = &(*pp)->next)
    if (*pp == n) {
      *pp = n->next;
      free(n);
      return;
    }
}

static int create_vm(struct svm_agent *a, const struct vm_spec *s, struct agent_vm **out);

int agent_vm_create(struct svm_agent *a, const struct svm_ctl_request *r, struct agent_vm **out)
{
  struct vm_spec spec = { .ndisks = 0 };
  struct agent_name *reserved = NULL;
  struct agent_vm *vm = NULL;
  int ret;

  *out = NULL;
  /* the name is checked and reserved under the lock; the files are made outside it */
  pthread_mutex_lock(&a->mu);
  ret = validate_create(a, r, &spec);
  if (ret == 0)
    ret = reserve_name(a, spec.name, &reserved);
  pthread_mutex_unlock(&a->mu);
  if (ret < 0)
    return ret;
  ret = create_vm(a, &spec, &vm);
  pthread_mutex_lock(&a->mu);
  release_name(a, reserved);
  if (ret == 0) {
    vm->next = a->vms;
    a->vms = vm;
    agent_vm_ref(vm);
  }
  pthread_mutex_unlock(&a->mu);
  if (ret < 0)
    return ret;
  agent_log("created VM %s in datastore %s with %u disk(s)", spec.name, spec.ds->name,
            spec.ndisks);
  *out = vm;
  return 0;
}

static int create_vm(struct svm_agent *a, const struct vm_spec *s, struct agent_vm **out)
{
  const struct vm_spec spec = *s;
  CLEANUP_FREE char *dir = NULL;
  CLEANUP_FREE char *path = NULL;
  struct agent_vm *vm;
  int ret;

  /* asprintf leaves its pointer undefined on failure: reset it for the cleanup */
  if (asprintf(&dir, "%s/%s", spec.ds->dir, spec.name) < 0) {
    dir = NULL;
    return svm_error(ENOMEM, "out of memory");
  }
  if (asprintf(&path, "%s/%s.svm", dir, spec.name) < 0) {
    path = NULL;
    return svm_error(ENOMEM, "out of memory");
  }
  ret = make_vm_dir(dir);
  if (ret < 0)
    return ret;
  ret = populate_vm(a, &spec, dir, path, &vm);
  if (ret < 0) {
    remove_partial_vm(dir, path, spec.ndisks);
    return ret;
  }
  *out = vm;
  return 0;
}

/* ---- delete ---- */

void agent_vm_unlink(struct svm_agent *a, struct agent_vm *vm)
{
  for (struct agent_vm **pp = &a->vms; *pp; pp = &(*pp)->next)
    if (*pp == vm) {
      *pp = vm->next;
      vm->next = NULL;
      return;
    }
}

int agent_vm_delete(struct svm_agent *a, const char *name)
{
  struct agent_vm **pp = &a->vms, *vm;
  char *failed = NULL;
  size_t flen = 0;
  FILE *f;

  while (*pp && strcmp((*pp)->desc->name, name) != 0)
    pp = &(*pp)->next;
  vm = *pp;
  if (!vm)
    return svm_error(ENOENT, "no such VM '%s'", name);
  /* guests lose the disk now: the export goes first, then the tracker, then the files
   * (descriptor first, so a crash half-way never brings back a VM with missing disks) */
  *pp = vm->next;
  for (unsigned i = 0; i < vm->ndisks; i++)
    agent_disk_stop(&vm->disks[i]);
  f = open_memstream(&failed, &flen);
  if (unlink(vm->desc_path) < 0 && f)
    fprintf(f, " %s (%s)", vm->desc_path, strerror(errno));
  for (unsigned i = 0; i < vm->ndisks; i++) {
    if (unlink(vm->disks[i].path) < 0 && errno != ENOENT && f)
      fprintf(f, " %s (%s)", vm->disks[i].path, strerror(errno));
    if (unlink(vm->disks[i].ctk_path) < 0 && errno != ENOENT && f)
      fprintf(f, " %s (%s)", vm->disks[i].ctk_path, strerror(errno));
  }
  if (rmdir(vm->dir) < 0 && f)
    fprintf(f, " %s (%s)", vm->dir, strerror(errno));
  if (f)
    fclose(f);
  agent_log("deleted VM %s from datastore %s%s%s", name, vm->ds->name,
            flen ? "; could not remove:" : "", flen ? failed : "");
  free_vm(vm);
  free(failed);
  return 0;
}
