/* Degraded VMs: a VM whose descriptor is valid but whose disks could not be opened (a .ctk
 * that is a directory, a disk that another process holds locked, a symlinked disk, ...). svmd
 * serves none of its disks and never touches its files, but lists it with the reason, so that
 * an operator sees it in vm list / vm show instead of finding it silently missing. Kept apart
 * from the served VMs (struct agent_vm): nothing that works on served VMs can reach one. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "svm/agent/internal.h"

void agent_degraded_add(struct svm_agent *a, const struct svm_datastore *ds, const char *dir,
                        const char *name, const char *reason)
{
  struct agent_degraded *g = calloc(1, sizeof *g);

  if (!g)
    return;
  g->ds = ds;
  g->name = strdup(name);
  g->dir = strdup(dir);
  g->reason = strdup(reason);
  if (!g->name || !g->dir || !g->reason) {
    free(g->name);
    free(g->dir);
    free(g->reason);
    free(g);
    return;
  }
  g->next = a->degraded;
  a->degraded = g;
}

struct agent_degraded *agent_degraded_find(struct svm_agent *a, const char *name)
{
  for (struct agent_degraded *g = a->degraded; g; g = g->next)
    if (strcmp(g->name, name) == 0)
      return g;
  return NULL;
}

void agent_degraded_free_all(struct svm_agent *a)
{
  while (a->degraded) {
    struct agent_degraded *g = a->degraded;
    a->degraded = g->next;
    free(g->name);
    free(g->dir);
    free(g->reason);
    free(g);
  }
}

void agent_degraded_json(FILE *f, const struct agent_degraded *g)
{
  fputs("{\"name\": ", f);
  agent_json_str(f, g->name);
  fputs(", \"degraded\": true, \"datastore\": ", f);
  agent_json_str(f, g->ds->name);
  fputs(", \"path\": ", f);
  agent_json_str(f, g->dir);
  fputs(", \"reason\": ", f);
  agent_json_str(f, g->reason);
  fputs("}", f);
}

void agent_degraded_text(FILE *f, const struct agent_degraded *g)
{
  fprintf(f, "VM %s (degraded, not served)  datastore %s  %s\n  degraded: %s\n", g->name,
          g->ds->name, g->dir, g->reason);
}
