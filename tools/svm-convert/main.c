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

#include "common/progress.h"
#include "common/size.h"

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

int main(int argc, char **argv)
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
  struct svm_convert_options *o = svm_convert_options_new();
  struct svm_convert_stats st;
  struct svm_progress bar;
  enum svm_provisioning prov = SVM_PROVISIONING_THIN;
  bool json = false, punch = false, force = false;
  int c, r, status = 0;

  if (o == NULL) {
    fprintf(stderr, "svm-convert: out of memory\n");
    return 1;
  }
  while ((c = getopt_long(argc, argv, "p:fhV", longopts, NULL)) != -1) {
    switch (c) {
    case 'p':
      if (svm_provisioning_from_string(optarg, &prov) < 0) {
        fprintf(stderr, "svm-convert: --provisioning: %s\n", svm_last_error());
        status = 2;
        goto out;
      }
      break;
    case 'f':
      force = true;
      break;
    case OPT_JSON:
      json = true;
      break;
    case OPT_PUNCH:
      punch = true;
      break;
    case OPT_REQSIZE: {
      uint64_t v;
      if (svm_size_parse(optarg, &v) < 0 || svm_convert_options_set_request_size(o, v) < 0) {
        fprintf(stderr, "svm-convert: --request-size %s: must be a multiple of 4096 within "
                "64K-32M\n", optarg);
        status = 2;
        goto out;
      }
      break;
    }
    case OPT_REQUESTS: {
      char *end;
      unsigned long v = strtoul(optarg, &end, 10);
      if (*optarg == '\0' || *end != '\0' || v > 256 ||
          svm_convert_options_set_requests(o, (unsigned)v) < 0) {
        fprintf(stderr, "svm-convert: --requests %s: must be a number within 1-256\n", optarg);
        status = 2;
        goto out;
      }
      break;
    }
    case 'h':
      usage(stdout);
      goto out;
    case 'V':
      printf("svm-convert %s\n", SVM_VERSION);
      goto out;
    default:
      fprintf(stderr, "Try 'svm-convert --help'.\n");
      status = 2;
      goto out;
    }
  }
  if (punch ? argc - optind != 1 : argc - optind != 2) {
    fprintf(stderr, punch ? "svm-convert: --punch-zeroes takes one DISK\n"
                          : "svm-convert: need SRC and DST\n");
    fprintf(stderr, "Try 'svm-convert --help'.\n");
    status = 2;
    goto out;
  }
  if (punch && (force || prov != SVM_PROVISIONING_THIN)) {
    fprintf(stderr, "svm-convert: --punch-zeroes works in place: --force and --provisioning "
            "do not apply\n");
    status = 2;
    goto out;
  }

  struct sigaction sa = { .sa_handler = on_signal };
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  svm_convert_options_set_provisioning(o, prov);
  svm_convert_options_set_force(o, force);
  svm_convert_options_set_cancel_flag(o, &cancelled);
  svm_progress_init(&bar, punch ? "punching" : "converting");
  svm_convert_options_set_progress(o, on_progress, &bar);

  if (punch)
    r = svm_convert_punch_zeroes(argv[optind], o, &st);
  else
    r = svm_convert(argv[optind], argv[optind + 1], o, &st);
  svm_progress_finish(&bar);
  if (r < 0) {
    fprintf(stderr, "svm-convert: %s\n", svm_last_error());
    status = 1;
    goto out;
  }
  if (json)
    print_json(&st, punch ? "punch-zeroes" : "convert",
               punch ? NULL : svm_provisioning_to_string(prov), punch ? NULL : argv[optind],
               punch ? NULL : argv[optind + 1], punch ? argv[optind] : NULL);
out:
  svm_convert_options_free(o);
  return status;
}
