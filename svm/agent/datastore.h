/* Datastores: named directories on this host (svmd --datastore NAME=DIR). A VM lives in a
 * folder DIR/VM holding its descriptor DIR/VM/VM.svm and its disk files. */
#ifndef SVM_DATASTORE_H
#define SVM_DATASTORE_H

#include <stddef.h>

#include "svm/agent/descriptor.h"

struct svm_datastore {
  char *name;
  char *dir;     /* absolute, resolved */
};

/* Parse "NAME=DIR": NAME as VM names ([A-Za-z0-9._-]), DIR an existing directory. */
int svm_datastore_parse(const char *spec, struct svm_datastore *out);
void svm_datastore_clear(struct svm_datastore *ds);

/* Called for each VM folder found: `desc` is NULL and `err` the message when its descriptor
 * could not be read (then `dir` and `path` still name it). The callback owns desc. */
typedef void (*svm_datastore_vm_fn)(void *opaque, const struct svm_datastore *ds,
                                    const char *dir, const char *path, struct svm_desc *desc,
                                    const char *err);

/* Scan ds->dir: every sub-folder F holding F/F.svm is a VM (other entries are ignored).
 * A descriptor that does not parse, or whose name differs from its folder's, is reported through
 * fn with the message and never touched. Returns 0, or an error when the directory itself
 * cannot be read. */
int svm_datastore_scan(const struct svm_datastore *ds, svm_datastore_vm_fn fn, void *opaque);

#endif
