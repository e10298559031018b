/* libFuzzer: the control protocol's request and response parsers (svmd reads requests from any
 * local process). A request that parses must survive format + parse unchanged. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "svm/control/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct svm_ctl_request r, r2;
  const char *keys[SVM_CTL_MAX_ARGS], *vals[SVM_CTL_MAX_ARGS];
  char *line, *payload = NULL;
  size_t len;

  if (svm_ctl_response_parse((const char *)data, size, &payload) == 0)
    free(payload);
  if (svm_ctl_request_parse((const char *)data, size, &r) < 0)
    return 0;
  for (size_t i = 0; i < r.nargs; i++) {
    keys[i] = r.args[i].key;
    vals[i] = r.args[i].value;
  }
  if (svm_ctl_request_format(r.verb, r.nargs, keys, vals, &line, &len) < 0) {
    svm_ctl_request_clear(&r);
    return 0;           /* re-encoding may grow past the limit: that is refused, fine */
  }
  if (svm_ctl_request_parse(line, len - 1, &r2) < 0)
    abort();
  if (strcmp(r.verb, r2.verb) != 0 || r.nargs != r2.nargs)
    abort();
  for (size_t i = 0; i < r.nargs; i++)
    if (strcmp(r.args[i].key, r2.args[i].key) != 0 || strcmp(r.args[i].value, r2.args[i].value))
      abort();
  free(line);
  svm_ctl_request_clear(&r2);
  svm_ctl_request_clear(&r);
  return 0;
}
