/* The precheck report: one line per check (level, what was found, the fix), or JSON. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "svm/precheck/precheck.h"

static const char *const level_names[] = { "ok", "warning", "error" };

void svm_pc_add(struct svm_pc_report *r, const char *check, enum svm_pc_level level,
                const char *fix, const char *fmt, ...)
{
  struct svm_pc_item *it;
  va_list ap;

  if (r->n == SVM_PC_MAX_ITEMS)
    return;
  it = &r->items[r->n++];
  snprintf(it->check, sizeof it->check, "%s", check);
  it->level = level;
  va_start(ap, fmt);
  vsnprintf(it->found, sizeof it->found, fmt, ap);
  va_end(ap);
  snprintf(it->fix, sizeof it->fix, "%s", fix ? fix : "");
}

bool svm_pc_failed(const struct svm_pc_report *r)
{
  for (unsigned i = 0; i < r->n; i++)
    if (r->items[i].level == SVM_PC_ERROR)
      return true;
  return false;
}

static void json_str(FILE *f, const char *s)
{
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      fprintf(f, "\\%c", *s);
    else if ((unsigned char)*s < 0x20)
      fprintf(f, "\\u%04x", *s);
    else
      fputc(*s, f);
  }
  fputc('"', f);
}

int svm_pc_format(const struct svm_pc_report *r, const char *vm, const char *peer, bool json,
                  char **out)
{
  unsigned count[3] = { 0 };
  size_t len;
  FILE *f = open_memstream(out, &len);

  if (!f)
    return svm_error(ENOMEM, "out of memory");
  for (unsigned i = 0; i < r->n; i++)
    count[r->items[i].level]++;
  if (json) {
    fputs("{\"vm\": ", f);
    json_str(f, vm);
    fputs(", \"host\": ", f);
    json_str(f, peer ? peer : "");
    fprintf(f, ", \"result\": \"%s\", \"errors\": %u, \"warnings\": %u, \"checks\": [",
            count[2] ? "error" : count[1] ? "warning" : "ok", count[2], count[1]);
    for (unsigned i = 0; i < r->n; i++) {
      fputs(i ? ", {\"check\": " : "{\"check\": ", f);
      json_str(f, r->items[i].check);
      fprintf(f, ", \"status\": \"%s\", \"found\": ", level_names[r->items[i].level]);
      json_str(f, r->items[i].found);
      fputs(", \"fix\": ", f);
      json_str(f, r->items[i].fix);
      fputc('}', f);
    }
    fputs("]}", f);
  } else {
    for (unsigned i = 0; i < r->n; i++) {
      const struct svm_pc_item *it = &r->items[i];
      fprintf(f, "%-7s %-10s %s%s%s\n", level_names[it->level], it->check, it->found,
              it->fix[0] ? "; fix: " : "", it->fix);
    }
    fprintf(f, "precheck of VM %s%s%s: %u error(s), %u warning(s)\n", vm, peer ? " to " : "",
            peer ? peer : "", count[2], count[1]);
  }
  return fclose(f) == 0 ? 0 : svm_error(ENOMEM, "out of memory");
}
