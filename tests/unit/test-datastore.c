/* Datastores: NAME=DIR parsing and the scan that finds VMs and reports bad descriptors. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "svm/agent/datastore.h"

static char root[] = "/tmp/test-datastore.XXXXXX";

static void put(const char *rel, const char *text)
{
  char path[512];
  snprintf(path, sizeof path, "%s/%s", root, rel);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static void sub(const char *rel)
{
  char path[512];
  snprintf(path, sizeof path, "%s/%s", root, rel);
  assert_int_equal(mkdir(path, 0755), 0);
}

static void parse(void **state)
{
  struct svm_datastore ds;
  char spec[600];

  assert_non_null(mkdtemp(root));
  snprintf(spec, sizeof spec, "ds1=%s", root);
  assert_int_equal(svm_datastore_parse(spec, &ds), 0);
  assert_string_equal(ds.name, "ds1");
  assert_string_equal(ds.dir, root);
  svm_datastore_clear(&ds);
  assert_int_equal(svm_datastore_parse("nodir", &ds), -EINVAL);
  assert_string_equal(svm_last_error(), "--datastore nodir: expected NAME=DIR");
  assert_int_equal(svm_datastore_parse("=/tmp", &ds), -EINVAL);
  assert_int_equal(svm_datastore_parse("ds=", &ds), -EINVAL);
  assert_int_equal(svm_datastore_parse("my ds=/tmp", &ds), -EINVAL);
  assert_int_equal(svm_datastore_parse("ds=/nonexistent/x", &ds), -ENOENT);
  assert_string_equal(svm_last_error(), "--datastore ds=/nonexistent/x: /nonexistent/x: No such "
                                        "file or directory (give an existing directory)");
  assert_int_equal(svm_datastore_parse("ds=/etc/hostname", &ds), -ENOTDIR);
  assert_null(ds.name);
}

struct seen {
  int good, bad;
  char names[8][64];
  char errs[8][512];
};

static void on_vm(void *opaque, const struct svm_datastore *ds, const char *dir,
                  const char *path, struct svm_desc *desc, const char *err)
{
  struct seen *s = opaque;
  if (desc) {
    snprintf(s->names[s->good++], 64, "%s", desc->name);
    svm_desc_free(desc);
  } else {
    snprintf(s->errs[s->bad++], 512, "%s", err + strlen(root) + 1);
  }
}

static void scan(void **state)
{
  struct svm_datastore ds = { .name = "ds1", .dir = root };
  struct seen s = { 0 };

  sub("vm1");
  put("vm1/vm1.svm", "svm.version = 1\nname = vm1\nuuid = u1\n");
  sub("vm2");
  put("vm2/vm2.svm", "svm.version = 1\nname = vm2\nuuid u2\n");
  sub("vm3");                                  /* no descriptor: not a VM */
  sub("vm4");
  put("vm4/vm4.svm", "svm.version = 1\nname = other\nuuid = u4\n");
  sub(".hidden");
  put(".hidden/.hidden.svm", "garbage");
  put("loose.svm", "svm.version = 1\nname = loose\nuuid = u\n");   /* not in a folder */
  assert_int_equal(svm_datastore_scan(&ds, on_vm, &s), 0);
  assert_int_equal(s.good, 1);
  assert_string_equal(s.names[0], "vm1");
  assert_int_equal(s.bad, 2);
  assert_string_equal(s.errs[0], "vm2/vm2.svm:3: expected 'key = value' but the line has no '='");
  assert_string_equal(s.errs[1], "vm4/vm4.svm: name = other does not match its folder 'vm4'");

  struct svm_datastore gone = { .name = "x", .dir = "/nonexistent/ds" };
  assert_int_equal(svm_datastore_scan(&gone, on_vm, &s), -ENOENT);

  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  assert_int_equal(system(cmd), 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = { cmocka_unit_test(parse), cmocka_unit_test(scan) };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
