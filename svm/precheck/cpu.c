/* Check 11: CPU compatibility for a compute move - the features the destination's CPU lacks,
 * and the baseline both share, as EVC computes it (here: the x86-64 micro-architecture levels
 * of the psABI, from the flags both CPUs have). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svm/precheck/precheck.h"

static bool has(const char *flags, const char *f)
{
  size_t n = strlen(f);

  for (const char *p = flags; (p = strstr(p, f)); p += n)
    if ((p == flags || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
      return true;
  return false;
}

static const char *const levels[][12] = {
  { "x86-64", "lm", "cmov", "cx8", "fpu", "fxsr", "mmx", "syscall", "sse", "sse2", NULL },
  { "x86-64-v2", "cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3", NULL },
  { "x86-64-v3", "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave", NULL },
  { "x86-64-v4", "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", NULL },
};

/* The highest level whose features both have (every level includes the ones before). */
static const char *baseline(const char *a, const char *b)
{
  const char *best = "below x86-64";

  for (size_t l = 0; l < sizeof levels / sizeof levels[0]; l++) {
    for (size_t k = 1; levels[l][k]; k++)
      if (!has(a, levels[l][k]) || !has(b, levels[l][k]))
        return best;
    best = levels[l][0];
  }
  return best;
}

void svm_pc_check_cpu(struct svm_pc_ctx *c, struct svm_pc_report *r)
{
  const struct svm_pc_host *l = c->local, *p = c->peer;
  char missing[640] = "", fix[512], *copy, *save = NULL;
  unsigned nmiss = 0, shared = 0;

  if (!p)
    return;
  copy = strdup(l->cpu);
  if (!copy)
    return;
  for (char *f = strtok_r(copy, " ", &save); f; f = strtok_r(NULL, " ", &save)) {
    if (has(p->cpu, f)) {
      shared++;
      continue;
    }
    if (nmiss++ < 16 && strlen(missing) + strlen(f) + 2 < sizeof missing)
      strcat(strcat(missing, missing[0] ? " " : ""), f);
  }
  free(copy);
  if (nmiss) {
    snprintf(fix, sizeof fix, "a cold move is not affected; for a compute move start the VM "
             "with a CPU model of the shared baseline (%s, e.g. QEMU -cpu %s)",
             baseline(l->cpu, p->cpu), baseline(l->cpu, p->cpu));
    svm_pc_add(r, "cpu", SVM_PC_WARNING, fix, "host %s's CPU lacks %u feature(s) of host %s's: "
               "%s%s; shared baseline %s (%u features)", p->name, nmiss, l->name, missing,
               nmiss > 16 ? " ..." : "", baseline(l->cpu, p->cpu), shared);
    return;
  }
  svm_pc_add(r, "cpu", SVM_PC_OK, NULL, "host %s's CPU has every feature of host %s's; shared "
             "baseline %s (%u features)", p->name, l->name, baseline(l->cpu, p->cpu), shared);
}
