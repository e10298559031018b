/* libFuzzer target: the move journal STATE/moves/VM.move, read back from disk after a crash
 * (svm/migrate/journal.c). Any input: no crash, no read out of bounds, and a journal that
 * parses names absolute folders named for its VM. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "svm/migrate/migrate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct svm_journal j;

  if (svm_journal_parse((const char *)data, size, &j) == 0) {
    const char *s = strrchr(j.src_dir, '/'), *d = strrchr(j.dst_dir, '/');
    if (j.src_dir[0] != '/' || j.dst_dir[0] != '/' || !s || !d || strcmp(s + 1, j.vm) != 0 ||
        strcmp(d + 1, j.vm) != 0 || !j.vm[0] || strchr(j.vm, '/'))
      abort();
  }
  return 0;
}
