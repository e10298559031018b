/* svmctl migrate / migrate --cancel / status: start a live move in svmd and follow it.
 *
 * svmd runs the move as a job (it goes on if svmctl is interrupted); svmctl asks for the job's
 * state ten times a second, draws the progress bar on a terminal (phase, bytes, rate, time
 * left), and prints the result when the job is over: one JSON object with --json (the keys of
 * `status --json`: state, bytes_copied, seconds, downtime_ms, bytes_mirrored, ...). */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <svmotion/cli.h>
#include <svmotion/client.h>

#include "tools/svmctl/svmctl.h"

static const char usage_migrate[] =
  "Usage: svmctl migrate VM --datastore DS [--provisioning same|thin|thick|eager-zeroed-thick]\n"
  "                      [--rate RATE] [--json]\n"
  "       svmctl migrate VM --datastore DS --host ADDR:PORT [--provisioning ...] [--json]\n"
  "       svmctl migrate --cancel VM [--json]\n"
  "Moves every disk and the folder of VM, live, to datastore DS of this host: one pass of\n"
  "the bulk copy while a synchronous mirror keeps copied regions in step with the guest's\n"
  "writes, then a switchover of a few milliseconds. Guests stay connected to the same NBD\n"
  "export; change IDs taken before the move still answer after it. --provisioning picks the\n"
  "destination's (default: same as the source). --rate caps the bulk copy (bytes per second,\n"
  "K/M/G suffixes). Waits for the end with a progress bar on a terminal; interrupting svmctl\n"
  "does not stop the move (migrate --cancel does: the VM stays where it was and the\n"
  "destination is removed). At most 2 moves per host and 8 per datastore run at once; more\n"
  "wait in a queue (svmctl status).\n"
  "With --host: a cold move to the agent listening on ADDR:PORT (svmctl migrate --host\n"
  "--help).\n"
  "Exit codes: 0 moved (or cancelled, for --cancel), 1 failed, 2 usage error.\n";

static const char usage_status[] =
  "Usage: svmctl status [--json]\n"
  "Lists the moves running, queued and the last ones done, each with its phase and progress.\n"
  "--json: {\"host\", \"limits\", \"running\": [...], \"queued\": [...], \"done\": [...]}, each\n"
  "move as svmctl migrate --json prints it.\n";

/* A number or string member of our own flat JSON objects (svmd's move object). */
static bool json_u64(const char *j, const char *key, uint64_t *out)
{
  char pat[64];
  const char *p;

  snprintf(pat, sizeof pat, "\"%s\": ", key);
  p = strstr(j, pat);
  if (!p)
    return false;
  *out = strtoull(p + strlen(pat), NULL, 10);
  return true;
}

static double json_double(const char *j, const char *key)
{
  char pat[64];
  const char *p;

  snprintf(pat, sizeof pat, "\"%s\": ", key);
  p = strstr(j, pat);
  return p ? strtod(p + strlen(pat), NULL) : 0;
}

static void json_string(const char *j, const char *key, char *buf, size_t len)
{
  char pat[64];
  const char *p;
  size_t n = 0;

  buf[0] = '\0';
  snprintf(pat, sizeof pat, "\"%s\": \"", key);
  p = strstr(j, pat);
  if (!p)
    return;
  for (p += strlen(pat); *p && *p != '"' && n + 1 < len; p++) {
    if (*p == '\\' && p[1])
      p++;
    buf[n++] = *p;
  }
  buf[n] = '\0';
}

static int call(const char *state, const char *verb, size_t n, const char *const *k,
                const char *const *v, char **payload)
{
  struct svm_client *c;
  int r = svm_client_connect(state, &c);

  if (r < 0)
    return r;
  r = svm_client_call(c, verb, n, k, v, payload);
  svm_client_close(c);
  return r;
}

static bool terminal(const char *st)
{
  return strcmp(st, "done") == 0 || strcmp(st, "failed") == 0 || strcmp(st, "cancelled") == 0;
}

/* Follow move `id` until it is over; *final is its last JSON object. */
static int follow(const char *state, const char *id, char **final)
{
  struct svm_progress p;
  char st[32], phase[32], label[64] = "";
  char *payload = NULL;
  int r;

  svm_progress_init(&p, label);
  for (;;) {
    /* the agent answers when the move ends, or after 100 ms to redraw the progress bar */
    const char *k[] = { "id", "format", "wait_ms" }, *v[] = { id, "json", "100" };
    uint64_t done = 0, total = 0;
    free(payload);
    r = call(state, "status", 3, k, v, &payload);
    if (r < 0)
      break;
    json_string(payload, "state", st, sizeof st);
    json_string(payload, "phase", phase, sizeof phase);
    json_u64(payload, "bytes_done", &done);
    json_u64(payload, "bytes_total", &total);
    if (terminal(st))
      break;
    snprintf(label, sizeof label, "%-9s", phase);
    svm_progress_update(&p, done, total);
  }
  svm_progress_finish(&p);
  if (r < 0) {
    free(payload);
    return r;
  }
  *final = payload;
  return 0;
}

/* The result for people. */
static void print_text(const char *j)
{
  char vm[80], to[80], st[32], err[1024], a[32], b[32];
  uint64_t copied = 0, mirrored = 0;

  json_string(j, "vm", vm, sizeof vm);
  json_string(j, "to", to, sizeof to);
  json_string(j, "state", st, sizeof st);
  json_string(j, "error", err, sizeof err);
  json_u64(j, "bytes_copied", &copied);
  json_u64(j, "bytes_mirrored", &mirrored);
  if (strcmp(st, "done") == 0)
    printf("VM %s moved to datastore %s in %.1f s: %s copied, %s mirrored, guest paused "
           "%.2f ms\n", vm, to, json_double(j, "seconds"), svm_size_format(copied, a, sizeof a),
           svm_size_format(mirrored, b, sizeof b), json_double(j, "downtime_ms"));
  else
    printf("move of VM %s to datastore %s %s: %s\n", vm, to, st, err);
}

static int report(const char *j, bool json, const char *want)
{
  char st[32], vm[80], err[1024];

  json_string(j, "state", st, sizeof st);
  json_string(j, "vm", vm, sizeof vm);
  json_string(j, "error", err, sizeof err);
  if (json)
    printf("%s\n", j);
  else if (strcmp(st, want) == 0)
    print_text(j);
  if (fflush(stdout) != 0)
    return 1;
  if (strcmp(st, want) == 0)
    return 0;
  if (strcmp(want, "cancelled") == 0 && strcmp(st, "done") == 0)
    fprintf(stderr, "svmctl: migrate --cancel %s: the move had committed already: the VM is "
            "on the destination\n", vm);
  else
    fprintf(stderr, "svmctl: migrate %s: %s: %s\n", vm, st, err[0] ? err : "?");
  return 1;
}

static int start_and_follow(const char *state, const char *verb, size_t n, const char *const *k,
                            const char *const *v, bool json, const char *want)
{
  char *payload = NULL, *final = NULL, id[32];
  uint64_t n_id;
  int r = call(state, verb, n, k, v, &payload);

  if (r < 0) {
    fprintf(stderr, "svmctl: %s\n", svm_last_error());
    return 1;
  }
  if (!json_u64(payload, "id", &n_id)) {
    fprintf(stderr, "svmctl: svmd's answer has no move id: %s\n", payload);
    free(payload);
    return 1;
  }
  free(payload);
  snprintf(id, sizeof id, "%" PRIu64, n_id);
  r = follow(state, id, &final);
  if (r < 0) {
    fprintf(stderr, "svmctl: following move #%s: %s\n", id, svm_last_error());
    return 1;
  }
  r = report(final, json, want);
  free(final);
  return r;
}

static int usage_err(const char *cmd, const char *msg, const char *arg)
{
  fprintf(stderr, "svmctl: %s: %s%s%s (see svmctl %s --help)\n", cmd, msg, arg ? " " : "",
          arg ? arg : "", cmd);
  return 2;
}

int svmctl_migrate(const char *state, int argc, char **argv)
{
  const char *vm = NULL, *ds = NULL, *prov = NULL, *rate = NULL, *host = NULL;
  bool json = false, cancel = false;
  char ratebuf[32];

  /* To another host: hostmove.c (the cold host move). */
  for (int i = 0; i < argc; i++)
    if (strcmp(argv[i], "--host") == 0 || strncmp(argv[i], "--host=", 7) == 0)
      return svmctl_migrate_host(state, argc, argv);

  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char **dst = NULL;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(usage_migrate, stdout);
      return 0;
    }
    if (strcmp(a, "--json") == 0) {
      json = true;
      continue;
    }
    if (strcmp(a, "--cancel") == 0) {
      cancel = true;
      continue;
    }
    if (strncmp(a, "--datastore", 11) == 0)
      dst = &ds;
    else if (strncmp(a, "--provisioning", 14) == 0)
      dst = &prov;
    else if (strncmp(a, "--rate", 6) == 0)
      dst = &rate;
    else if (strncmp(a, "--host", 6) == 0)
      dst = &host;
    if (dst) {
      const char *eq = strchr(a, '=');
      size_t kl = eq ? (size_t)(eq - a) : strlen(a);
      if ((dst == &ds && kl != 11) || (dst == &prov && kl != 14) || (dst == &rate && kl != 6) ||
          (dst == &host && kl != 6))
        return usage_err("migrate", "unknown option", a);
      *dst = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
      if (!*dst)
        return usage_err("migrate", "option needs a value:", a);
      continue;
    }
    if (a[0] == '-' && a[1])
      return usage_err("migrate", "unknown option", a);
    if (vm)
      return usage_err("migrate", "unexpected argument", a);
    vm = a;
  }
  if (!vm)
    return usage_err("migrate", "expects a VM name", NULL);
  if (!state || !*state) {
    fprintf(stderr, "svmctl: no state directory: give --state DIR or set SVM_STATE (the "
            "--state svmd runs with)\n");
    return 2;
  }
  if (cancel) {
    if (ds || prov || rate || host)
      return usage_err("migrate", "--cancel takes only the VM (and --json)", NULL);
    const char *k[] = { "vm", "format" }, *v[] = { vm, "json" };
    return start_and_follow(state, "migrate-cancel", 2, k, v, json, "cancelled");
  }
  if (!ds)
    return usage_err("migrate", "needs --datastore DS", NULL);
  if (prov && strcmp(prov, "same") && strcmp(prov, "thin") && strcmp(prov, "thick") &&
      strcmp(prov, "eager-zeroed-thick"))
    return usage_err("migrate", "--provisioning must be same, thin, thick or "
                     "eager-zeroed-thick, not", prov);
  if (rate) {
    uint64_t r;
    if (svm_size_parse(rate, &r) < 0 || r == 0)
      return usage_err("migrate", "--rate must be bytes per second (K/M/G suffixes), not", rate);
    snprintf(ratebuf, sizeof ratebuf, "%" PRIu64, r);
  }
  const char *k[6] = { "vm", "datastore", "format" }, *v[6] = { vm, ds, "json" };
  size_t n = 3;
  if (prov) {
    k[n] = "provisioning";
    v[n++] = prov;
  }
  if (rate) {
    k[n] = "rate";
    v[n++] = ratebuf;
  }
  return start_and_follow(state, "migrate", n, k, v, json, "done");
}

int svmctl_status(const char *state, int argc, char **argv)
{
  bool json = false;
  char *payload;

  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      fputs(usage_status, stdout);
      return 0;
    }
    if (strcmp(argv[i], "--json") != 0)
      return usage_err("status", argv[i][0] == '-' ? "unknown option" : "unexpected argument",
                       argv[i]);
    json = true;
  }
  if (!state || !*state) {
    fprintf(stderr, "svmctl: no state directory: give --state DIR or set SVM_STATE (the "
            "--state svmd runs with)\n");
    return 2;
  }
  const char *k[] = { "format" }, *v[] = { json ? "json" : "text" };
  if (call(state, "status", 1, k, v, &payload) < 0) {
    fprintf(stderr, "svmctl: %s\n", svm_last_error());
    return 1;
  }
  fputs(payload, stdout);
  if (json)
    fputc('\n', stdout);
  free(payload);
  return fflush(stdout) == 0 ? 0 : 1;
}
