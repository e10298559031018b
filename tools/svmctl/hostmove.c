/* svmctl migrate VM --host ADDR:PORT ... (the cold host move; migrate.c hands it over), and
 * tls init (test credentials, made here with the OpenSSL library, no agent needed).
 *
 * A move runs inside svmd; svmctl starts it, then follows it through `status id=N` until it
 * ends (`status id=N`), drawing a progress bar on a terminal, and prints the move's
 * final record. `migrate --cancel` and `status` are migrate.c's (svmd routes them). */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <svmotion/cli.h>
#include <svmotion/client.h>
#include <svmotion/tls.h>

#include "tools/svmctl/svmctl.h"

static const char *prog = "svmctl";

static int usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage(const char *cmd, const char *fmt, ...)
{
  va_list ap;

  fprintf(stderr, "%s: %s: ", prog, cmd);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, " (see svmctl %s --help)\n", cmd);
  return 2;
}

/* One request to svmd; *payload on success. 0, or 1 after printing the error. */
static int request(const char *state, const char *verb, size_t n, const char *const *keys,
                   const char *const *vals, char **payload)
{
  struct svm_client *c;
  int r = svm_client_connect(state, &c);

  if (r == 0) {
    r = svm_client_call(c, verb, n, keys, vals, payload);
    svm_client_close(c);
  }
  if (r < 0) {
    fprintf(stderr, "%s: %s\n", prog, svm_last_error());
    return 1;
  }
  return 0;
}

/* The value of "key": in one flat JSON object of svmd's (numbers and plain strings). */
static bool json_u64(const char *json, const char *key, uint64_t *out)
{
  char pat[64];
  const char *p;

  snprintf(pat, sizeof pat, "\"%s\": ", key);
  p = strstr(json, pat);
  if (!p)
    return false;
  *out = strtoull(p + strlen(pat), NULL, 10);
  return true;
}

static bool json_str(const char *json, const char *key, char *out, size_t len)
{
  char pat[64];
  const char *p, *e;

  snprintf(pat, sizeof pat, "\"%s\": \"", key);
  p = strstr(json, pat);
  if (!p)
    return false;
  p += strlen(pat);
  for (e = p; *e && *e != '"'; e++)
    if (*e == '\\' && e[1])
      e++;
  snprintf(out, len, "%.*s", (int)(e - p), p);
  return true;
}

static const char migrate_help[] =
  "Usage: svmctl migrate VM --datastore DS --host ADDR:PORT\n"
  "                      [--provisioning same|thin|thick|eager-zeroed-thick] [--json]\n"
  "       svmctl migrate --cancel VM [--json]\n"
  "Moves VM to datastore DS of the agent listening on ADDR:PORT (its svmd --mgmt), over\n"
  "the peer link and NFC, both TLS 1.3 with mutual authentication. A cold move: the VM\n"
  "must have no guest connected (its exports are closed while it moves). The destination\n"
  "commits durably and exports the disks before this host removes its copy; a move that\n"
  "fails or is cancelled leaves the VM here, untouched, and the destination clean.\n"
  "The prechecks run first (svmctl precheck: peer, datastore space, the migration network\n"
  "when this host has one); an error refuses the move and names the fix.\n"
  "--provisioning: of the destination's disks (same: as they are). Progress on a terminal;\n"
  "--json prints the move's record: state, bytes_copied, seconds, downtime_ms, ...\n";

int svmctl_migrate_host(const char *state, int argc, char **argv)
{
  const char *vm = NULL, *ds = NULL, *host = NULL, *prov = NULL, *cancel = NULL;
  bool json = false;
  char *payload = NULL, id[32];
  const char *keys[6], *vals[6];
  struct svm_progress bar;
  uint64_t n = 0, done = 0, total = 0;
  char st[32] = "", err[1024] = "";
  size_t k = 0;
  int r;

  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char **slot = strcmp(a, "--datastore") == 0      ? &ds
                        : strcmp(a, "--host") == 0         ? &host
                        : strcmp(a, "--provisioning") == 0 ? &prov
                        : strcmp(a, "--cancel") == 0       ? &cancel
                                                           : NULL;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(migrate_help, stdout);
      return 0;
    } else if (strcmp(a, "--json") == 0) {
      json = true;
    } else if (slot) {
      if (i + 1 >= argc)
        return usage("migrate", "option '%s' needs a value", a);
      *slot = argv[++i];
    } else if (a[0] == '-') {
      return usage("migrate", "unknown option '%s'", a);
    } else if (!vm) {
      vm = a;
    } else {
      return usage("migrate", "unexpected argument '%s'", a);
    }
  }
  if (!state || !*state) {
    fprintf(stderr, "%s: no state directory: give --state DIR or set SVM_STATE\n", prog);
    return 2;
  }
  if (cancel) {
    keys[0] = "vm", vals[0] = cancel;
    keys[1] = "format", vals[1] = json ? "json" : "text";
    r = request(state, "migrate-cancel", 2, keys, vals, &payload);
    if (r == 0)
      printf("%s%s", payload, json ? "\n" : "");
    free(payload);
    return r;
  }
  if (!vm)
    return usage("migrate", "%s", "expects a VM name");
  if (!ds)
    return usage("migrate", "%s", "needs --datastore DS");
  if (!host)
    return usage("migrate", "%s", "needs --host ADDR:PORT (this svmd moves VMs between hosts)");
  if (prov && strcmp(prov, "same") && strcmp(prov, "thin") && strcmp(prov, "thick") &&
      strcmp(prov, "eager-zeroed-thick"))
    return usage("migrate", "--provisioning %s: same, thin, thick or eager-zeroed-thick", prov);
  keys[k] = "vm", vals[k++] = vm;
  keys[k] = "datastore", vals[k++] = ds;
  keys[k] = "host", vals[k++] = host;
  if (prov)
    keys[k] = "provisioning", vals[k++] = prov;
  keys[k] = "format", vals[k++] = "json";
  if ((r = request(state, "migrate", k, keys, vals, &payload)) != 0)
    return r;
  json_u64(payload, "id", &n);
  snprintf(id, sizeof id, "%" PRIu64, n);

  /* Follow the move until it ends. */
  svm_progress_init(&bar, "moving");
  for (;;) {
    free(payload);
    payload = NULL;
    keys[0] = "id", vals[0] = id;
    keys[1] = "format", vals[1] = "json";
    if ((r = request(state, "status", 2, keys, vals, &payload)) != 0) {
      svm_progress_finish(&bar);
      return r;
    }
    json_str(payload, "state", st, sizeof st);
    json_u64(payload, "bytes_copied", &done);
    json_u64(payload, "bytes_total", &total);
    if (strcmp(st, "running") != 0)
      break;
    svm_progress_update(&bar, done, total);
    nanosleep(&(struct timespec){ .tv_nsec = 200 * 1000000 }, NULL);
  }
  svm_progress_finish(&bar);
  if (json) {
    printf("%s\n", payload);
  } else if (strcmp(st, "done") == 0) {
    char sz[32];
    printf("VM %s moved to %s (datastore %s): %s\n", vm, host, ds,
           svm_size_format(total, sz, sizeof sz));
  }
  if (strcmp(st, "done") != 0) {
    json_str(payload, "error", err, sizeof err);
    fprintf(stderr, "%s: move of VM %s to %s %s: %s\n", prog, vm, host, st, err);
  }
  free(payload);
  return strcmp(st, "done") == 0 ? 0 : 1;
}

const char svmctl_tls_init_help[] =
  "Usage: svmctl tls init --dir DIR --host NAME [--ca CADIR] [--days N]\n"
  "Makes TLS credentials for host NAME in DIR, in the layout of QEMU's and libvirt's x509\n"
  "credentials (ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem,\n"
  "client-key.pem; keys 0600, certificates 0644), for svmd --tls-dir DIR. Without --ca a new\n"
  "test CA is made (its key in DIR/ca-key.pem); with --ca CADIR the CA of CADIR signs (it\n"
  "needs CADIR/ca-key.pem), so hosts made from one CA trust each other. The certificates\n"
  "carry CN=NAME and subjectAltName NAME. --days: validity (default 365; negative: already\n"
  "expired, for tests).\n"
  "Example:\n"
  "  svmctl tls init --dir /etc/svm/tls-a --host hostA\n"
  "  svmctl tls init --dir /etc/svm/tls-b --host hostB --ca /etc/svm/tls-a\n";

int svmctl_tls_init(const char *dir, const char *host, const char *ca, const char *days,
                    bool json)
{
  long d = 365;

  if (!dir || !host)
    return usage("tls init", "%s", "needs --dir DIR and --host NAME");
  if (days) {
    char *end;
    d = strtol(days, &end, 10);
    if (!*days || *end || d == 0 || d > 36500 || d < -36500)
      return usage("tls init", "--days %s: a number of days, not 0", days);
  }
  if (nfc_tls_make_credentials(dir, host, ca, (int)d) < 0) {
    fprintf(stderr, "%s: %s\n", prog, svm_last_error());
    return 1;
  }
  if (json)
    printf("{\"dir\": \"%s\", \"host\": \"%s\", \"ca\": \"%s\"}\n", dir, host, ca ? ca : dir);
  else
    printf("TLS credentials for %s in %s (CA: %s)\n", host, dir, ca ? ca : "new, in the same "
           "directory");
  return 0;
}
