/* Datastores (see datastore.h). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "svm/agent/datastore.h"

int svm_datastore_parse(const char *spec, struct svm_datastore *out)
{
  const char *eq = strchr(spec, '=');
  struct stat st;
  CLEANUP_FREE char *name = NULL;
  char *dir;

  memset(out, 0, sizeof *out);
  if (!eq || eq == spec || !eq[1])
    return svm_error(EINVAL, "--datastore %s: expected NAME=DIR", spec);
  name = strndup(spec, (size_t)(eq - spec));
  if (!name)
    return svm_error(ENOMEM, "out of memory");
  if (!svm_vm_name_valid(name))
    return svm_error(EINVAL, "--datastore %s: '%s' is not a valid datastore name (1-64 of "
                     "[A-Za-z0-9._-], not starting with '.' or '-')", spec, name);
  int e = stat(eq + 1, &st) < 0 ? errno : !S_ISDIR(st.st_mode) ? ENOTDIR : 0;
  if (e)
    return svm_error(e, "--datastore %s: %s: %s (give an existing directory)", spec, eq + 1,
                     strerror(e));
  dir = realpath(eq + 1, NULL);
  if (!dir)
    return svm_error(errno, "--datastore %s: %s", spec, strerror(errno));
  out->name = TAKE_PTR(name);
  out->dir = dir;
  return 0;
}

void svm_datastore_clear(struct svm_datastore *ds)
{
  free(ds->name);
  free(ds->dir);
  memset(ds, 0, sizeof *ds);
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
  return strcmp((*a)->d_name, (*b)->d_name);
}

/* Entry f of the datastore: a VM if it is a folder holding f/f.svm. A descriptor that cannot
 * be read, or names another VM than its folder, goes to fn with its error instead. */
static void scan_entry(const struct svm_datastore *ds, const char *f, svm_datastore_vm_fn fn,
                       void *opaque)
{
  CLEANUP_FREE char *dir = NULL;
  CLEANUP_FREE char *path = NULL;
  struct svm_desc *d;
  struct stat st;

  if (f[0] == '.')
    return;
  /* asprintf leaves its pointer undefined on failure: reset it for the cleanup */
  if (asprintf(&dir, "%s/%s", ds->dir, f) < 0) {
    dir = NULL;
    return;
  }
  if (asprintf(&path, "%s/%s.svm", dir, f) < 0) {
    path = NULL;
    return;
  }
  /* lstat: a link to a folder elsewhere is not a VM folder (its files would leave the
   * datastore); say so rather than pass over it */
  if (lstat(dir, &st) < 0)
    return;
  if (S_ISLNK(st.st_mode) && stat(path, &st) == 0) {
    svm_error(ELOOP, "%s: is a symbolic link; svmd follows none (a VM folder is a plain "
              "directory in its datastore)", dir);
    fn(opaque, ds, dir, path, NULL, svm_last_error());
    return;
  }
  if (!S_ISDIR(st.st_mode) || lstat(path, &st) < 0)
    return;
  if (svm_desc_load(path, &d) < 0) {
    fn(opaque, ds, dir, path, NULL, svm_last_error());
    return;
  }
  if (strcmp(d->name, f) != 0) {
    svm_error(EINVAL, "%s: name = %s does not match its folder '%s'", path,
              svm_desc_get(d, "name"), f);
    svm_desc_free(d);
    fn(opaque, ds, dir, path, NULL, svm_last_error());
    return;
  }
  fn(opaque, ds, dir, path, d, NULL);
}

int svm_datastore_scan(const struct svm_datastore *ds, svm_datastore_vm_fn fn, void *opaque)
{
  struct dirent **ents;
  int n = scandir(ds->dir, &ents, NULL, by_name);

  if (n < 0)
    return svm_error(errno, "datastore %s: %s: %s", ds->name, ds->dir, strerror(errno));
  for (int i = 0; i < n; i++) {
    scan_entry(ds, ents[i]->d_name, fn, opaque);
    free(ents[i]);
  }
  free(ents);
  return 0;
}
