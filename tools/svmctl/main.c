/* svmctl — the operator's command line for the local agent svmd (see --help). Options are
 * checked here (usage errors exit 2 without needing an agent); the work is done by svmd over
 * the control socket (include/svmotion/client.h), except `cbt info`, which reads a .ctk file
 * directly. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <svmotion/cbt.h>
#include <svmotion/client.h>

#include "tools/svmctl/svmctl.h"

static const char *prog = "svmctl";

static void usage_main(FILE *f)
{
  fputs("Usage: svmctl [--state DIR] COMMAND ...\n"
        "\n"
        "Talks to the local agent svmd through DIR/control.sock (--state defaults to\n"
        "$SVM_STATE). Commands:\n"
        "  vm create VM --datastore DS --disk SIZE[:PROVISIONING] [--disk ...]\n"
        "            [--tcp ADDR:PORT | --tcp-any PORT]\n"
        "  vm list [--json]            each disk with its NBD URI and datastore path\n"
        "  vm show VM [--json]\n"
        "  vm delete VM [--json]\n"
        "  cbt changeid VM DISK [--json]   closes the current epoch, prints <uuid>/<seq>\n"
        "  cbt query VM DISK --since CHANGEID|* [--json]   extents changed since CHANGEID\n"
        "  cbt info FILE.ctk [--json]  reads a tracking file directly (no agent needed)\n"
        "  migrate VM --datastore DS [--provisioning same|thin|thick|eager-zeroed-thick]\n"
        "             [--rate RATE] [--json]   moves VM live to datastore DS, waits for the end\n"
        "  migrate VM --datastore DS --host ADDR:PORT [--provisioning P] [--json]\n"
        "                              moves a VM without a guest to another host's agent\n"
        "  migrate --cancel VM [--json]        aborts VM's move: it stays where it was\n"
        "  status [--json]             moves running, queued and the last ones done\n"
        "  precheck VM --datastore DS [--host ADDR:PORT] [--bandwidth] [--json]\n"
        "                              checks a move before it starts: network, space, CPU\n"
        "  tls init --dir DIR --host NAME [--ca DIR]   test CA + host certificates (QEMU layout)\n"
        "\n"
        "SIZE takes K, M, G, T (powers of 1024); PROVISIONING is thin (default), thick or\n"
        "eager-zeroed-thick. DISK is the disk's index (0, 1, ...). --json prints one JSON object\n"
        "on stdout. `svmctl COMMAND SUBCOMMAND --help` describes one command.\n"
        "Exit codes: 0 ok, 1 the operation failed (message on stderr), 2 usage error.\n"
        "\n"
        "Example:\n"
        "  svmd --name host1 --state /run/svm --datastore ds1=/srv/ds1 &\n"
        "  export SVM_STATE=/run/svm\n"
        "  svmctl vm create vm1 --datastore ds1 --disk 10G:thin\n"
        "  qemu-io -f raw -c 'write -P 1 0 1M' 'nbd+unix:///vm1/disk0?socket=/run/svm/nbd/vm1-disk0.sock'\n"
        "  svmctl cbt query vm1 0 --since '*' --json\n", f);
}

static const struct cmd_help {
  const char *group, *name, *text;
} helps[] = {
  { "vm", "create",
    "Usage: svmctl vm create VM --datastore DS --disk SIZE[:PROVISIONING] [--disk ...]\n"
    "                        [--tcp ADDR:PORT | --tcp-any PORT] [--json]\n"
    "Creates the folder DS/VM with the descriptor VM.svm and one raw file per disk\n"
    "(diskN.raw: thin = sparse, thick = allocated, eager-zeroed-thick = allocated and zeroed),\n"
    "starts change tracking (diskN.ctk) and exports each disk over NBD on a unix socket.\n"
    "--tcp ADDR:PORT also exports over TCP: disk N on PORT+N (PORT 0: ephemeral ports; the\n"
    "URIs are in `vm show`). ADDR is one address of this host; --tcp-any PORT listens on\n"
    "all of them. TCP exports are plaintext: svmd must run with --insecure.\n" },
  { "vm", "list", "Usage: svmctl vm list [--json]\nLists the VMs, each disk with its NBD URI.\n" },
  { "vm", "show", "Usage: svmctl vm show VM [--json]\nShows one VM and its disks.\n" },
  { "vm", "delete",
    "Usage: svmctl vm delete VM [--json]\nStops the VM's exports (clients are disconnected) "
    "and removes its descriptor,\ndisk files, tracking files and folder.\n" },
  { "cbt", "changeid",
    "Usage: svmctl cbt changeid VM DISK [--json]\nCloses the current tracking epoch of disk "
    "DISK and prints its change ID <uuid>/<seq>.\n" },
  { "cbt", "query",
    "Usage: svmctl cbt query VM DISK --since CHANGEID|* [--json]\nPrints the extents written "
    "since CHANGEID (whole blocks of the tracking granularity),\none 'OFFSET LENGTH' line "
    "each; '*' means since tracking began. The same map is\nserved over NBD as the meta "
    "context svm-cbt:CHANGEID.\n" },
  { "cbt", "info",
    "Usage: svmctl cbt info FILE.ctk [--json]\nReads a tracking file and prints its header "
    "(works without an agent, also while\nsvmd has the file open).\n" },
  { "tls", "init", svmctl_tls_init_help },
};

static void usage_cmd(const char *group, const char *name, FILE *f)
{
  for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++)
    if (strcmp(helps[i].group, group) == 0 && strcmp(helps[i].name, name) == 0)
      fputs(helps[i].text, f);
}

/* argv parsing of one command: positionals and --opt VALUE / --opt=VALUE. */
struct cmdline {
  const char *group, *name;
  int npos;
  const char *pos[4];
  bool json, help;
  int nopt;
  const char *okey[SVMCTL_MAX_OPTS], *oval[SVMCTL_MAX_OPTS];
};

static int usage_error(const struct cmdline *c, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));
static int usage_error(const struct cmdline *c, const char *fmt, ...)
{
  va_list ap;

  fprintf(stderr, "%s: ", prog);
  if (c && c->group)
    fprintf(stderr, "%s %s: ", c->group, c->name);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, " (see svmctl %s%s%s --help)\n", c && c->group ? c->group : "",
          c && c->group ? " " : "", c && c->group ? c->name : "");
  return 2;
}

/* `valued`: the options taking a value; `repeat`: those that may repeat. */
static int parse_cmd(struct cmdline *c, int argc, char **argv, const char *const *valued,
                     int maxpos)
{
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--json") == 0) {
      c->json = true;
    } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      c->help = true;
    } else if (strncmp(a, "--", 2) == 0 && a[2]) {
      const char *eq = strchr(a, '=');
      size_t kl = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
      const char *key = NULL;
      for (size_t k = 0; valued[k]; k++)
        if (strlen(valued[k]) == kl && strncmp(valued[k], a + 2, kl) == 0)
          key = valued[k];
      if (!key)
        return usage_error(c, "unknown option '%s'", a);
      const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
      if (!val)
        return usage_error(c, "option '%s' needs a value", a);
      if (c->nopt == SVMCTL_MAX_OPTS)
        return usage_error(c, "too many options ('%s')", a);
      c->okey[c->nopt] = key;
      c->oval[c->nopt++] = val;
    } else if (a[0] == '-' && a[1] && strcmp(a, "-") != 0) {
      return usage_error(c, "unknown option '%s'", a);
    } else {
      if (c->npos == maxpos)
        return usage_error(c, "unexpected argument '%s'", a);
      c->pos[c->npos++] = a;
    }
  }
  return 0;
}

static const char *opt1(const struct cmdline *c, const char *key)
{
  const char *v = NULL;
  for (int i = 0; i < c->nopt; i++)
    if (strcmp(c->okey[i], key) == 0)
      v = c->oval[i];
  return v;
}

/* One control request: the verb and its key=value arguments (tools/svmctl builds it, svmd
 * answers it). */
struct request {
  char verb[32];
  int n;
  const char *keys[SVMCTL_MAX_OPTS + 8], *vals[SVMCTL_MAX_OPTS + 8];
  char sizes[SVMCTL_MAX_OPTS][48];   /* the --disk values as the agent takes them */
};

static void add_arg(struct request *rq, const char *key, const char *val)
{
  rq->keys[rq->n] = key;
  rq->vals[rq->n++] = val;
}

/* Send one request; print the answer; 0/1. */
static int call(const char *state, const struct cmdline *c, struct request *rq)
{
  struct svm_client *cl;
  char *payload;
  int r;

  add_arg(rq, "format", c->json ? "json" : "text");
  r = svm_client_connect(state, &cl);
  if (r < 0) {
    fprintf(stderr, "%s: %s\n", prog, svm_last_error());
    return 1;
  }
  r = svm_client_call(cl, rq->verb, (size_t)rq->n, rq->keys, rq->vals, &payload);
  svm_client_close(cl);
  if (r < 0) {
    fprintf(stderr, "%s: %s\n", prog, svm_last_error());
    return 1;
  }
  fputs(payload, stdout);
  if (c->json)
    fputc('\n', stdout);
  free(payload);
  return fflush(stdout) == 0 ? 0 : 1;
}

static int cbt_info(struct cmdline *c)
{
  struct cbt_info info;

  if (c->npos != 1)
    return usage_error(c, "%s", "expects one FILE.ctk");
  if (cbt_info_read(c->pos[0], &info) < 0) {
    fprintf(stderr, "%s: %s\n", prog, svm_last_error());
    return 1;
  }
  if (cbt_info_print(&info, c->json, stdout) < 0) {
    fprintf(stderr, "%s: %s\n", prog, svm_last_error());
    return 1;
  }
  if (c->json)
    fputc('\n', stdout);
  return fflush(stdout) == 0 ? 0 : 1;
}

/* The command named by argv[0] argv[1]: 0, or 2 after saying it is unknown. */
static int find_command(struct cmdline *c, int argc, char **argv)
{
  bool known = false;

  if (argc < 2) {
    if (argc == 1 && (strcmp(argv[0], "vm") == 0 || strcmp(argv[0], "cbt") == 0 ||
                      strcmp(argv[0], "tls") == 0))
      fprintf(stderr, "%s: %s needs a subcommand (see svmctl --help)\n", prog, argv[0]);
    else
      fprintf(stderr, "%s: unknown command '%s' (see svmctl --help)\n", prog,
              argc ? argv[0] : "");
    return 2;
  }
  c->group = argv[0];
  c->name = argv[1];
  for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++)
    known |= strcmp(helps[i].group, c->group) == 0 && strcmp(helps[i].name, c->name) == 0;
  if (known)
    return 0;
  if (strcmp(c->group, "vm") == 0 || strcmp(c->group, "cbt") == 0 ||
      strcmp(c->group, "tls") == 0)
    fprintf(stderr, "%s: unknown command '%s %s' (see svmctl --help)\n", prog, c->group,
            c->name);
  else
    fprintf(stderr, "%s: unknown command '%s' (see svmctl --help)\n", prog, c->group);
  return 2;
}

static bool is_cmd(const struct cmdline *c, const char *group, const char *name)
{
  return strcmp(c->group, group) == 0 && strcmp(c->name, name) == 0;
}

/* The positionals a command takes: cbt changeid/query VM DISK, vm list none, others one. */
static int max_positionals(const struct cmdline *c)
{
  if (strcmp(c->group, "cbt") == 0 && strcmp(c->name, "info") != 0)
    return 2;
  if (strcmp(c->group, "tls") == 0)
    return 0;
  return strcmp(c->name, "list") == 0 ? 0 : 1;
}

/* vm create's arguments: datastore, tcp, one disk=BYTES:PROV per --disk. 0 or 2 (usage). */
static int vm_create_args(const struct cmdline *c, struct request *rq)
{
  const char *ds = opt1(c, "datastore");
  int ndisk = 0;

  if (!ds)
    return usage_error(c, "%s", "needs --datastore DS");
  add_arg(rq, "datastore", ds);
  if (opt1(c, "tcp"))
    add_arg(rq, "tcp", opt1(c, "tcp"));
  if (opt1(c, "tcp-any"))
    add_arg(rq, "tcp-any", opt1(c, "tcp-any"));
  for (int i = 0; i < c->nopt; i++) {
    char err[256];
    if (strcmp(c->okey[i], "disk") != 0)
      continue;
    if (svmctl_disk_spec(c->oval[i], rq->sizes[ndisk], sizeof rq->sizes[ndisk], err,
                         sizeof err) < 0)
      return usage_error(c, "%s", err);
    add_arg(rq, "disk", rq->sizes[ndisk++]);
  }
  if (ndisk == 0)
    return usage_error(c, "%s", "needs at least one --disk SIZE[:PROVISIONING]");
  return 0;
}

/* The request a parsed command sends: 0, or 2 after a usage message. */
static int build_request(const struct cmdline *c, struct request *rq)
{
  if (strcmp(c->group, "vm") == 0) {
    snprintf(rq->verb, sizeof rq->verb, "vm-%s", c->name);
    if (c->npos)
      add_arg(rq, "vm", c->pos[0]);
    return strcmp(c->name, "create") == 0 ? vm_create_args(c, rq) : 0;
  }
  add_arg(rq, "vm", c->pos[0]);
  add_arg(rq, "disk", c->pos[1]);
  if (strcmp(c->name, "query") != 0) {
    snprintf(rq->verb, sizeof rq->verb, "cbt-changeid");
    return 0;
  }
  snprintf(rq->verb, sizeof rq->verb, "cbt-query");
  const char *since = opt1(c, "since");
  if (!since)
    return usage_error(c, "%s", "needs --since CHANGEID (or '*' for everything)");
  add_arg(rq, "since", since);
  return 0;
}

/* One command: parse its arguments, then do it (cbt info here, the others through svmd). */
static int run(const char *state, int argc, char **argv)
{
  static const char *const none[] = { NULL };
  static const char *const create_opts[] = { "datastore", "disk", "tcp", "tcp-any", NULL };
  static const char *const query_opts[] = { "since", NULL };
  static const char *const tls_opts[] = { "dir", "host", "ca", "days", NULL };
  struct cmdline c = { 0 };
  struct request rq = { .n = 0 };
  int maxpos, r;

  if (strcmp(argv[0], "migrate") == 0)
    return svmctl_migrate(state, argc - 1, argv + 1);
  if (strcmp(argv[0], "status") == 0)
    return svmctl_status(state, argc - 1, argv + 1);
  if (strcmp(argv[0], "precheck") == 0)
    return svmctl_precheck(state, argc, argv);
  r = find_command(&c, argc, argv);
  if (r)
    return r;
  maxpos = max_positionals(&c);
  r = parse_cmd(&c, argc - 2, argv + 2,
                is_cmd(&c, "vm", "create")    ? create_opts
                : is_cmd(&c, "cbt", "query") ? query_opts
                : is_cmd(&c, "tls", "init")  ? tls_opts
                                             : none,
                maxpos);
  if (r)
    return r;
  if (c.help) {
    usage_cmd(c.group, c.name, stdout);
    return 0;
  }
  if (is_cmd(&c, "cbt", "info"))
    return cbt_info(&c);
  if (is_cmd(&c, "tls", "init"))
    return svmctl_tls_init(opt1(&c, "dir"), opt1(&c, "host"), opt1(&c, "ca"), opt1(&c, "days"),
                           c.json);
  if (c.npos < maxpos)
    return usage_error(&c, "%s", maxpos == 2 ? "expects VM and DISK" : "expects a VM name");
  if (!state || !*state) {
    fprintf(stderr, "%s: no state directory: give --state DIR or set SVM_STATE (the --state "
            "svmd runs with)\n", prog);
    return 2;
  }
  r = build_request(&c, &rq);
  if (r)
    return r;
  if (is_cmd(&c, "cbt", "query"))
    return svmctl_cbt_query(state, c.json, (size_t)rq.n, rq.keys, rq.vals);
  return call(state, &c, &rq);
}

int main(int argc, char **argv)
{
  const char *state = getenv("SVM_STATE");
  int i = 1;

  for (; i < argc && argv[i][0] == '-'; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage_main(stdout);
      return 0;
    }
    if (strcmp(a, "--version") == 0) {
      printf("svmctl %s\n", SVM_VERSION);
      return 0;
    }
    if (strcmp(a, "--state") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "%s: --state needs a directory (see svmctl --help)\n", prog);
        return 2;
      }
      state = argv[++i];
    } else if (strncmp(a, "--state=", 8) == 0) {
      state = a + 8;
    } else {
      fprintf(stderr, "%s: unknown option '%s' (see svmctl --help)\n", prog, a);
      return 2;
    }
  }
  if (i == argc) {
    fprintf(stderr, "%s: no command given (see svmctl --help)\n", prog);
    return 2;
  }
  return run(state, argc - i, argv + i);
}
