/* svmctl: the --disk SIZE[:PROVISIONING] argument of vm create. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <svmotion/cli.h>
#include "tools/svmctl/svmctl.h"

/* svmd's limit (svm/agent/vm.c): sizes stay far from off_t's end, so offset + length never
 * overflows anywhere on the data path. */
#define SVMCTL_MAX_DISK (UINT64_C(1) << 62)

static const char *const provs[] = { "thin", "thick", "eager-zeroed-thick" };

int svmctl_disk_spec(const char *spec, char *out, size_t len, char *err, size_t errlen)
{
  const char *colon = strchr(spec, ':');
  size_t n = colon ? (size_t)(colon - spec) : strlen(spec);
  const char *prov = colon ? colon + 1 : "thin";
  char size_text[64];
  uint64_t size;
  bool ok = false;

  snprintf(size_text, sizeof size_text, "%.*s", (int)(n < 63 ? n : 63), spec);
  if (n >= sizeof size_text || svm_size_parse(size_text, &size) < 0) {
    snprintf(err, errlen, "--disk %s: '%.*s' is not a size (e.g. 10G, 512M, 1073741824)", spec,
             (int)n, spec);
    return -EINVAL;
  }
  if (size > SVMCTL_MAX_DISK) {
    snprintf(err, errlen, "--disk %s: larger than the largest disk svmd can make (4 EiB, "
             "%" PRIu64 " bytes)", spec, (uint64_t)SVMCTL_MAX_DISK);
    return -EINVAL;
  }
  if (size == 0 || size % 512) {
    snprintf(err, errlen, "--disk %s: the size must be a non-zero multiple of 512 bytes", spec);
    return -EINVAL;
  }
  for (size_t i = 0; i < 3; i++)
    ok |= strcmp(prov, provs[i]) == 0;
  if (!ok) {
    snprintf(err, errlen, "--disk %s: '%s' is not a provisioning (thin, thick or "
             "eager-zeroed-thick)", spec, prov);
    return -EINVAL;
  }
  snprintf(out, len, "%" PRIu64 ":%s", size, prov);
  return 0;
}
