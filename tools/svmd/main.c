/* svmd — the svmotion host agent. Runs in the foreground and logs to stderr. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <svmotion/agent.h>
#include <svmotion/cli.h>

static void usage(FILE *f)
{
  fputs("Usage: svmd --name HOST --state DIR --datastore NAME=DIR [--datastore NAME=DIR ...]\n"
        "            [--mgmt ADDR:PORT] [--migration ADDR:PORT [--migration-gateway GW]]\n"
        "            [--tls-dir DIR | --tls-psk FILE | --insecure] [--group GROUP]\n"
        "            [--nfc-streams N] [--nfc-rate RATE] [--stop-timeout SECONDS]\n"
        "\n"
        "The svmotion host agent. Runs in the foreground and logs to stderr; SIGTERM or SIGINT\n"
        "stops it cleanly. On start it scans its datastores (every folder F holding F/F.svm is a\n"
        "VM) and exports every disk over NBD:\n"
        "  DIR/control.sock               the control socket svmctl talks to\n"
        "  DIR/nbd/VM-diskN.sock          one NBD export per disk, export name \"VM/diskN\":\n"
        "                                 nbd+unix:///VM/diskN?socket=DIR/nbd/VM-diskN.sock\n"
        "  DIR/svmd.lock                  one svmd per state directory\n"
        "Every write through an export is recorded by changed-block tracking (diskN.ctk beside\n"
        "the disk) before it is acknowledged.\n"
        "\n"
        "Options:\n"
        "  --name HOST             this host's name\n"
        "  --state DIR             state directory (created if missing)\n"
        "  --datastore NAME=DIR    a datastore: an existing directory (repeatable)\n"
        "  --mgmt ADDR:PORT        management interface: other agents connect here (the peer\n"
        "                          link and NFC file copies of host moves; PORT 0: any)\n"
        "  --migration ADDR:PORT   migration interface (PORT 0: any): ADDR is the address of\n"
        "                          the interface migration traffic uses (IPv4); its listener\n"
        "                          is bound to that address and interface, and so are\n"
        "                          outgoing migration connections (svmctl precheck probes it)\n"
        "  --migration-gateway GW  a routed migration network's router: svmd adds policy\n"
        "                          routing (ip rule from ADDR lookup table 21334, default via\n"
        "                          GW there) so that management keeps the default route;\n"
        "                          needs CAP_NET_ADMIN\n"
        "  --tls-dir DIR           TLS 1.3 with certificates, QEMU's x509 layout: ca-cert.pem,\n"
        "                          server-cert.pem, server-key.pem, client-cert.pem,\n"
        "                          client-key.pem (svmctl tls init makes a test set); the\n"
        "                          peer link and TCP exports (NBD STARTTLS) use them\n"
        "  --tls-psk FILE          TLS 1.3 with a pre-shared key: identity:hexkey lines (the\n"
        "                          format of nbdkit, libnbd and QEMU's tls-creds-psk)\n"
        "  --insecure              plaintext peer link and TCP exports (tests only); without\n"
        "                          it a peer that does not authenticate is refused, and\n"
        "                          exports over TCP (svmctl vm create --tcp) need TLS\n"
        "  --nfc-streams N         TCP streams per file of a host move (1-16, default 1)\n"
        "  --nfc-rate RATE         cap of host-move copies in bytes/s (K, M, G suffixes)\n"
        "  --group GROUP           members of GROUP may use the control and NBD sockets too\n"
        "                          (default: only root and svmd's own user)\n"
        "  --stop-timeout SECONDS  after SIGTERM, exit with status 1 if the clean stop has not\n"
        "                          finished within SECONDS (default 60; 0: wait for ever): a\n"
        "                          guest request that never completes (a hung datastore) must\n"
        "                          not keep svmd alive; the next start recovers a move in flight\n"
        "  --help                  this text\n"
        "  --version               print the version\n"
        "\n"
        "Example:\n"
        "  svmd --name host1 --state /run/svm --datastore ds1=/srv/ds1 &\n"
        "  SVM_STATE=/run/svm svmctl vm create vm1 --datastore ds1 --disk 10G:thin\n", f);
}

/* --stop-timeout: how long SIGTERM waits for the clean stop (0: for ever). */
static unsigned stop_timeout_s = 60;

/* The exit status when the options say to stop (--help, --version, a usage error), or
 * SVMD_RUN when the agent is to start with cfg. */
enum { SVMD_RUN = -1 };

/* ds has room for argc entries; cfg->datastores points to it. */
static int parse_args(int argc, char **argv, struct svm_agent_config *cfg, const char **ds)
{
  enum { O_NAME = 256, O_STATE, O_DS, O_MGMT, O_MIGR, O_MIGR_GW, O_TLS, O_PSK, O_INSECURE,
         O_STREAMS, O_RATE, O_GROUP, O_STOP, O_HELP, O_VERSION };
  static const struct option opts[] = {
    { "name", required_argument, NULL, O_NAME },
    { "state", required_argument, NULL, O_STATE },
    { "datastore", required_argument, NULL, O_DS },
    { "mgmt", required_argument, NULL, O_MGMT },
    { "migration", required_argument, NULL, O_MIGR },
    { "migration-gateway", required_argument, NULL, O_MIGR_GW },
    { "tls-dir", required_argument, NULL, O_TLS },
    { "tls-psk", required_argument, NULL, O_PSK },
    { "insecure", no_argument, NULL, O_INSECURE },
    { "nfc-streams", required_argument, NULL, O_STREAMS },
    { "nfc-rate", required_argument, NULL, O_RATE },
    { "group", required_argument, NULL, O_GROUP },
    { "stop-timeout", required_argument, NULL, O_STOP },
    { "help", no_argument, NULL, O_HELP },
    { "version", no_argument, NULL, O_VERSION },
    { NULL, 0, NULL, 0 },
  };
  int c;

  opterr = 0;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case O_NAME: cfg->name = optarg; break;
    case O_STATE: cfg->state_dir = optarg; break;
    case O_DS: ds[cfg->ndatastores++] = optarg; break;
    case O_MGMT: cfg->mgmt = optarg; break;
    case O_MIGR: cfg->migration = optarg; break;
    case O_MIGR_GW: cfg->migration_gw = optarg; break;
    case O_TLS: cfg->tls_dir = optarg; break;
    case O_PSK: cfg->tls_psk = optarg; break;
    case O_INSECURE: cfg->insecure = true; break;
    case O_STREAMS: {
      char *end;
      unsigned long n = strtoul(optarg, &end, 10);
      if (!*optarg || *end || n < 1 || n > 16) {
        fprintf(stderr, "svmd: --nfc-streams %s: a number from 1 to 16\n", optarg);
        return 2;
      }
      cfg->nfc_streams = (unsigned)n;
      break;
    }
    case O_RATE:
      if (svm_size_parse(optarg, &cfg->nfc_rate) < 0 || cfg->nfc_rate == 0) {
        fprintf(stderr, "svmd: --nfc-rate %s: bytes per second, e.g. 200M\n", optarg);
        return 2;
      }
      break;
    case O_GROUP: cfg->group = optarg; break;
    case O_STOP: {
      char *end;
      unsigned long n = strtoul(optarg, &end, 10);
      if (!*optarg || *end || *optarg == '-' || n > 86400) {
        fprintf(stderr, "svmd: --stop-timeout %s: seconds, from 0 (wait for ever) to 86400\n",
                optarg);
        return 2;
      }
      stop_timeout_s = (unsigned)n;
      break;
    }
    case O_HELP:
      usage(stdout);
      return 0;
    case O_VERSION:
      printf("svmd %s\n", SVM_VERSION);
      return 0;
    default:
      if (optopt)
        fprintf(stderr, "svmd: option %s needs an argument (see svmd --help)\n",
                argv[optind - 1]);
      else
        fprintf(stderr, "svmd: unknown option %s (see svmd --help)\n", argv[optind - 1]);
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "svmd: unexpected argument '%s' (see svmd --help)\n", argv[optind]);
    return 2;
  }
  if (!cfg->name || !cfg->state_dir || cfg->ndatastores == 0) {
    fprintf(stderr, "svmd: %s is required (see svmd --help)\n",
            !cfg->name        ? "--name HOST"
            : !cfg->state_dir ? "--state DIR"
                              : "--datastore NAME=DIR");
    return 2;
  }
  if (cfg->migration_gw && !cfg->migration) {
    fprintf(stderr, "svmd: --migration-gateway needs --migration ADDR:PORT\n");
    return 2;
  }
  if (cfg->migration && !cfg->tls_dir && !cfg->tls_psk && !cfg->insecure) {
    fprintf(stderr, "svmd: --migration needs --tls-dir DIR or --tls-psk FILE (or --insecure "
            "for tests: plaintext)\n");
    return 2;
  }
  if (!!cfg->tls_dir + !!cfg->tls_psk + cfg->insecure > 1) {
    fprintf(stderr, "svmd: --tls-dir, --tls-psk and --insecure exclude each other\n");
    return 2;
  }
  if (cfg->mgmt && !cfg->tls_dir && !cfg->tls_psk && !cfg->insecure) {
    fprintf(stderr, "svmd: --mgmt needs --tls-dir DIR or --tls-psk FILE (or --insecure for "
            "tests: plaintext)\n");
    return 2;
  }
  return SVMD_RUN;
}

/* SIGTERM/SIGINT arrive through a signalfd that stops the control loop; blocked before any
 * thread starts so that every export thread inherits the mask. The signalfd, or -1. */
static int block_signals(void)
{
  sigset_t set;
  int sfd;

  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigprocmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  sfd = signalfd(-1, &set, SFD_CLOEXEC);
  if (sfd < 0)
    fprintf(stderr, "svmd: signalfd: %s\n", strerror(errno));
  return sfd;
}

/* Every disk's export holds descriptors for its clients, files and sockets: take all the
 * descriptors the hard limit allows (the soft one is often 1024), as servers do. What is left
 * when even that runs out, the NBD acceptor handles (it backs off, it does not spin). */
static void raise_nofile(void)
{
  struct rlimit rl;

  if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
    return;
  rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
    fprintf(stderr, "svmd: cannot raise the open files limit to %llu: %s\n",
            (unsigned long long)rl.rlim_max, strerror(errno));
}

/* The clean stop waits for every started guest request to complete (an export is freed only
 * once its clients are gone). One that never completes (a hung datastore, or a bug) would keep
 * svmd alive for ever, spinning or not, and a service manager's stop with it: past the
 * deadline svmd says so and exits, as a kill -9 would, which every part is built to survive
 * (the next start finds the source authoritative and removes a partial destination). */
static void stop_deadline(int sig)
{
  static const char msg[] = "svmd: the stop did not finish within --stop-timeout: what it "
                            "waits for never completed (a guest request: see the export named "
                            "above; or a datastore that does not answer); exiting without it: "
                            "nothing acknowledged is lost, and the next start recovers any "
                            "move in flight\n";
  ssize_t n = write(STDERR_FILENO, msg, sizeof msg - 1);

  (void)sig;
  (void)n;
  _exit(1);
}

static void arm_stop_deadline(void)
{
  struct sigaction sa = { .sa_handler = stop_deadline };
  sigset_t set;

  if (stop_timeout_s == 0)
    return;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGALRM, &sa, NULL);
  sigemptyset(&set);
  sigaddset(&set, SIGALRM);
  pthread_sigmask(SIG_UNBLOCK, &set, NULL);
  alarm(stop_timeout_s);
}

/* Start the agent, serve until a signal, stop: the exit status. */
static int serve(const struct svm_agent_config *cfg, int sfd)
{
  struct svm_agent *a;
  int r;

  r = svm_agent_start(cfg, &a);
  if (r < 0) {
    fprintf(stderr, "svmd: %s\n", svm_last_error());
    return 1;
  }
  r = svm_agent_run(a, sfd);
  if (r < 0)
    fprintf(stderr, "svmd: %s\n", svm_last_error());
  arm_stop_deadline();
  svm_agent_stop(a);
  fprintf(stderr, "svmd: stopped\n");
  return r < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
  struct svm_agent_config cfg = { 0 };
  const char **ds = calloc((size_t)argc, sizeof *ds);
  int sfd, status;

  if (!ds)
    return 1;
  cfg.datastores = ds;
  status = parse_args(argc, argv, &cfg, ds);
  if (status == SVMD_RUN) {
    raise_nofile();
    sfd = block_signals();
    status = sfd < 0 ? 1 : serve(&cfg, sfd);
    if (sfd >= 0)
      close(sfd);
  }
  free(ds);
  return status;
}
