/* The move limits (migrate.h): vSphere allows 2 Storage vMotions per host and 8 per datastore
 * at once; past them a move waits in the queue. */
#include <string.h>

#include "svm/migrate/migrate.h"

static unsigned on_datastore(const struct svm_move_slot *running, unsigned n, const char *ds)
{
  unsigned k = 0;

  for (unsigned i = 0; i < n; i++)
    k += strcmp(running[i].src_ds, ds) == 0 || strcmp(running[i].dst_ds, ds) == 0;
  return k;
}

bool svm_move_may_start(const struct svm_move_slot *running, unsigned n,
                        const struct svm_move_slot *next)
{
  if (n >= SVM_MOVES_PER_HOST)
    return false;
  return on_datastore(running, n, next->src_ds) < SVM_MOVES_PER_DATASTORE &&
         on_datastore(running, n, next->dst_ds) < SVM_MOVES_PER_DATASTORE;
}
