/* svm-convert: copy a disk between raw files and NBD exports in the provisioning asked for, or
 * make a raw disk thin in place. A thin layer over svm_convert() (svmotion/convert.h). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <svmotion/convert.h>
#include <svmotion/error.h>

#include <svmotion/cli.h>

static volatile int cancelled;

static void on_signal(int sig)
{
  (void)sig;
  cancelled = 1;
}

static void usage(FILE *f)
{
  fprintf(f,
          "Usage: svm-convert [--provisioning thin|thick|eager-zeroed-thick] [--force] [--json]\n"
          "                   SRC DST\n"
          "       svm-convert --punch-zeroes [--json] DISK\n"
          "\n"
          "Copy a disk from SRC to DST, reading only its allocated data and writing it in the\n"
          "provisioning asked for (default thin):\n"
          "  thin                 sparse: zero blocks are never allocated\n"
          "  thick                every byte allocated (fallocate), data written\n"
          "  eager-zeroed-thick   every byte allocated and written\n"
          "SRC and DST are raw disk files or NBD URIs (nbd://HOST[:PORT]/NAME,\n"
          "nbd+unix:///NAME?socket=PATH), so qcow2 and other formats go through qemu-nbd.\n"
          "A file DST is written next to it and renamed into place when complete; on failure\n"
          "nothing is left behind. The source is never written.\n"
          "\n"
          "  --punch-zeroes DISK  make an existing raw disk thin in place: punch holes over\n"
          "                       its all-zero blocks, data untouched\n"
          "\n"
          "Options:\n"
          "  -p, --provisioning KIND  thin (default), thick or eager-zeroed-thick\n"
          "  -f, --force              replace DST if it exists\n"
          "      --json               print one JSON object with the results on stdout\n"
          "      --request-size SIZE  bytes per request (default 2M)\n"
          "      --requests N         requests in flight (default 32)\n"
          "  -h, --help               this help\n"
          "  -V, --version            print the version\n"
          "\n"
          "Examples:\n"
          "  svm-convert disk-thick.raw disk-thin.raw\n"
          "  svm-convert --provisioning eager-zeroed-thick disk.raw disk-eager.raw\n"
          "  qemu-nbd -r -f qcow2 -k /tmp/s.sock disk.qcow2 &\n"
          "  svm-convert 'nbd+unix:///?socket=/tmp/s.sock' disk.raw\n"
          "  svm-convert --punch-zeroes disk.raw\n"
          "\n"
          "Exit status: 0 done, 1 failed (message on stderr), 2 usage error.\n");
}

static void on_progress(void *opaque, uint64_t done, uint64_t total)
{
  svm_progress_update(opaque, done, total);
}

static void print_json(const struct svm_convert_stats *st, const char *mode, const char *prov,
                       const char *src, const char *dst, const char *disk)
{
  /* Paths go through a minimal JSON string escaper. */
  const char *vals[3] = { src, dst, disk };
  const char *keys[3] = { "source", "destination", "disk" };

  printf("{\"mode\": \"%s\"", mode);
  for (int k = 0; k < 3; k++) {
    if (vals[k] == NULL)
      continue;
    printf(", \"%s\": \"", keys[k]);
    for (const unsigned char *p = (const unsigned char *)vals[k]; *p; p++) {
      if (*p == '"' || *p == '\\')
        printf("\\%c", *p);
      else if (*p < 0x20)
        printf("\\u%04x", *p);
      else
        putchar(*p);
    }
    putchar('"');
  }
  if (prov != NULL)
    printf(", \"provisioning\": \"%s\"", prov);
  printf(", \"size\": %" PRIu64 ", \"bytes-read\": %" PRIu64 ", \"bytes-written\": %" PRIu64
         ", \"bytes-skipped-zero\": %" PRIu64 ", \"bytes-punched\": %" PRIu64
         ", \"seconds\": %.6f}\n",
         st->size, st->bytes_read, st->bytes_written, st->bytes_skipped_zero, st->bytes_punched,
         st->seconds);
}

enum { OPT_JSON = 256, OPT_PUNCH, OPT_REQSIZE, OPT_REQUESTS };
enum { GO_ON = -1 };          /* parse_args: run; else the exit status (help, usage error) */

struct args {
  enum svm_provisioning prov;
  bool json, punch, force;
  const char *src, *dst;      /* convert */
  const char *disk;           /* --punch-zeroes */
};

static int usage_error(void)
{
  fprintf(stderr, "Try 'svm-convert --help'.\n");
  return 2;
}

static int parse_request_size(struct svm_convert_options *o, const char *arg)
{
  uint64_t v;

  if (svm_size_parse(arg, &v) < 0 || svm_convert_options_set_request_size(o, v) < 0) {
    fprintf(stderr, "svm-convert: --request-size %s: must be a multiple of 4096 within "
            "64K-32M\n", arg);
    return 2;
  }
  return GO_ON;
}

static int parse_requests(struct svm_convert_options *o, const char *arg)
{
  char *end;
  unsigned long v = strtoul(arg, &end, 10);

  if (*arg == '\0' || *end != '\0' || v > 256 ||
      svm_convert_options_set_requests(o, (unsigned)v) < 0) {
    fprintf(stderr, "svm-convert: --requests %s: must be a number within 1-256\n", arg);
    return 2;
  }
  return GO_ON;
}

static int parse_option(int c, struct args *a, struct svm_convert_options *o)
{
  switch (c) {
  case 'p':
    if (svm_provisioning_from_string(optarg, &a->prov) < 0) {
      fprintf(stderr, "svm-convert: --provisioning: %s\n", svm_last_error());
      return 2;
    }
    return GO_ON;
  case 'f':
    a->force = true;
    return GO_ON;
  case OPT_JSON:
    a->json = true;
    return GO_ON;
  case OPT_PUNCH:
    a->punch = true;
    return GO_ON;
  case OPT_REQSIZE:
    return parse_request_size(o, optarg);
  case OPT_REQUESTS:
    return parse_requests(o, optarg);
  case 'h':
    usage(stdout);
    return 0;
  case 'V':
    printf("svm-convert %s\n", SVM_VERSION);
    return 0;
  default:
    return usage_error();
  }
}

/* The operands: SRC DST, or DISK with --punch-zeroes (which works in place: no --force, no
 * --provisioning). */
static int parse_operands(int argc, char **argv, struct args *a)
{
  if (a->punch ? argc - optind != 1 : argc - optind != 2) {
    fprintf(stderr, a->punch ? "svm-convert: --punch-zeroes takes one DISK\n"
                             : "svm-convert: need SRC and DST\n");
    return usage_error();
  }
  if (a->punch && (a->force || a->prov != SVM_PROVISIONING_THIN)) {
    fprintf(stderr, "svm-convert: --punch-zeroes works in place: --force and --provisioning "
            "do not apply\n");
    return 2;
  }
  if (a->punch) {
    a->disk = argv[optind];
  } else {
    a->src = argv[optind];
    a->dst = argv[optind + 1];
  }
  return GO_ON;
}

static int parse_args(int argc, char **argv, struct args *a, struct svm_convert_options *o)
{
  static const struct option longopts[] = {
    { "provisioning", required_argument, NULL, 'p' },
    { "force", no_argument, NULL, 'f' },
    { "json", no_argument, NULL, OPT_JSON },
    { "punch-zeroes", no_argument, NULL, OPT_PUNCH },
    { "request-size", required_argument, NULL, OPT_REQSIZE },
    { "requests", required_argument, NULL, OPT_REQUESTS },
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { NULL, 0, NULL, 0 },
  };
  int c, status;

  *a = (struct args){ .prov = SVM_PROVISIONING_THIN };
  while ((c = getopt_long(argc, argv, "p:fhV", longopts, NULL)) != -1)
    if ((status = parse_option(c, a, o)) != GO_ON)
      return status;
  return parse_operands(argc, argv, a);
}

/* Ctrl-C, kill and a closed terminal stop the copy through its cancel flag, so the partial
 * destination is removed. Installed before svm_convert() creates DST.svm-part-PID: a test that
 * waits for that file knows the handler is in place. */
static void install_handlers(void)
{
  struct sigaction sa = { .sa_handler = on_signal };

  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
}

/* Returns the exit status: 0 done, 1 failed (message on stderr). */
static int run(const struct args *a, struct svm_convert_options *o, struct svm_convert_stats *st)
{
  struct svm_progress bar;
  int r;

  svm_convert_options_set_provisioning(o, a->prov);
  svm_convert_options_set_force(o, a->force);
  svm_convert_options_set_cancel_flag(o, &cancelled);
  svm_progress_init(&bar, a->punch ? "punching" : "converting");
  svm_convert_options_set_progress(o, on_progress, &bar);
  if (a->punch)
    r = svm_convert_punch_zeroes(a->disk, o, st);
  else
    r = svm_convert(a->src, a->dst, o, st);
  svm_progress_finish(&bar);
  if (r < 0) {
    fprintf(stderr, "svm-convert: %s\n", svm_last_error());
    return 1;
  }
  return 0;
}

static void print_result(const struct args *a, const struct svm_convert_stats *st)
{
  if (!a->json)
    return;
  if (a->punch)
    print_json(st, "punch-zeroes", NULL, NULL, NULL, a->disk);
  else
    print_json(st, "convert", svm_provisioning_to_string(a->prov), a->src, a->dst, NULL);
}

int main(int argc, char **argv)
{
  struct svm_convert_options *o = svm_convert_options_new();
  struct svm_convert_stats st;
  struct args a;
  int status;

  if (o == NULL) {
    fprintf(stderr, "svm-convert: out of memory\n");
    return 1;
  }
  status = parse_args(argc, argv, &a, o);
  if (status == GO_ON) {
    install_handlers();
    status = run(&a, o, &st);
    if (status == 0)
      print_result(&a, &st);
  }
  svm_convert_options_free(o);
  return status;
}
