/* libFuzzer: the VM descriptor parser. Besides not crashing, a file that parses must format
 * back byte for byte (the round-trip promise of descriptor.h), and parse again. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "svm/agent/descriptor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct svm_desc *d, *d2;
  char *out;
  size_t len;

  if (svm_desc_parse("fuzz.svm", (const char *)data, size, &d) < 0)
    return 0;
  if (svm_desc_format(d, &out, &len) < 0)
    abort();
  if (len != size || memcmp(out, data, size) != 0)
    abort();
  if (svm_desc_parse("fuzz.svm", out, len, &d2) < 0)
    abort();
  if (d2->ndisks != d->ndisks || strcmp(d2->name, d->name) != 0)
    abort();
  free(out);
  svm_desc_free(d2);
  svm_desc_free(d);
  return 0;
}
