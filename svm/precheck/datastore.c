/* Check 10: the destination datastore exists, is writable and has room for the VM in the
 * chosen provisioning. */
#include <stdio.h>

#include <svmotion/cli.h>

#include "svm/precheck/precheck.h"

void svm_pc_check_datastore(struct svm_pc_ctx *c, struct svm_pc_report *r)
{
  const struct svm_pc_host *d = c->peer ? c->peer : c->local;
  char fix[768], f[32], n[32];

  if (!d->ds_found) {
    snprintf(fix, sizeof fix, "choose a datastore host %s has (svmd --datastore NAME=DIR "
             "there)", d->name);
    svm_pc_add(r, "datastore", SVM_PC_ERROR, fix, "host %s has no datastore '%s'", d->name,
               d->ds);
    return;
  }
  if (!d->ds_writable) {
    snprintf(fix, sizeof fix, "check datastore %s on host %s: its file system (read-only? "
             "full?) and that svmd may write its folder", d->ds, d->name);
    svm_pc_add(r, "datastore", SVM_PC_ERROR, fix, "datastore %s on host %s is not writable: "
               "%s", d->ds, d->name, d->ds_err);
  }
  if (d->ds_free < c->need) {
    snprintf(fix, sizeof fix, "free %s on datastore %s of host %s, or choose another "
             "datastore or thin provisioning",
             svm_size_format(c->need - d->ds_free, n, sizeof n), d->ds, d->name);
    svm_pc_add(r, "space", SVM_PC_ERROR, fix, "datastore %s on host %s has %s free, VM %s "
               "needs %s (%s)", d->ds, d->name, svm_size_format(d->ds_free, f, sizeof f),
               c->vm, svm_size_format(c->need, n, sizeof n), c->provisioning);
    return;
  }
  svm_pc_add(r, "space", SVM_PC_OK, NULL, "datastore %s on host %s%s has %s free, VM %s needs "
             "%s (%s)", d->ds, d->name, d->ds_writable ? " is writable and" : "",
             svm_size_format(d->ds_free, f, sizeof f), c->vm,
             svm_size_format(c->need, n, sizeof n), c->provisioning);
}
