/* VM descriptor: round trip, unknown keys kept, and every kind of malformed file with its exact
 * message. */
#include <errno.h>
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
#include "common/uuid.h"
#include "svm/agent/descriptor.h"

static const char good[] =
  "# svmotion VM descriptor\n"
  "svm.version = 1\n"
  "name = vm1\n"
  "uuid = 11111111-2222-4333-8444-555555555555\n"
  "\n"
  "   # an indented comment\n"
  "guest.os=debian12\n"
  "disk0.file = disk0.raw\n"
  "disk0.size =   1048576\t\n"
  "disk0.provisioning = thick\n"
  "disk0.uuid = aaaaaaaa-2222-4333-8444-555555555555\n"
  "disk0.vendor-note = keep me\n"
  "disk1.file = data.raw\n"
  "disk1.size = 4096\n"
  "disk1.uuid = bbbbbbbb-2222-4333-8444-555555555555\n"
  "disk1.ctk = data.ctk\n"
  "diskless.note = not a disk key\n"
  "zz.unknown.last = x = y\n";

static void round_trip(void **state)
{
  struct svm_desc *d;
  char *out;
  size_t len;

  assert_int_equal(svm_desc_parse("vm1.svm", good, strlen(good), &d), 0);
  assert_string_equal(d->name, "vm1");
  assert_int_equal(d->ndisks, 2);
  assert_string_equal(d->disks[0].file, "disk0.raw");
  assert_true(d->disks[0].size == 1048576);
  assert_int_equal(d->disks[0].provisioning, SVM_DESC_THICK);
  assert_string_equal(d->disks[0].ctk, "disk0.ctk");   /* the default */
  assert_int_equal(d->disks[1].provisioning, SVM_DESC_THIN);
  assert_string_equal(d->disks[1].ctk, "data.ctk");
  assert_string_equal(svm_desc_get(d, "guest.os"), "debian12");
  assert_string_equal(svm_desc_get(d, "zz.unknown.last"), "x = y");
  assert_null(d->tcp);
  assert_int_equal(svm_desc_format(d, &out, &len), 0);
  assert_int_equal(len, strlen(good));
  assert_memory_equal(out, good, len);
  free(out);
  svm_desc_free(d);
}

static void set_keeps_unknown(void **state)
{
  struct svm_desc *d;
  char *out;
  size_t len;

  assert_int_equal(svm_desc_parse("vm1.svm", good, strlen(good), &d), 0);
  assert_int_equal(svm_desc_set(d, "disk0.size", "2097152"), 0);
  assert_int_equal(svm_desc_set(d, "export.tcp", "127.0.0.1:0"), 0);
  assert_int_equal(svm_desc_validate(d), 0);
  assert_true(d->disks[0].size == 2097152);
  assert_string_equal(d->tcp, "127.0.0.1:0");
  assert_int_equal(svm_desc_format(d, &out, &len), 0);
  /* the changed line is rewritten in place, the rest byte for byte, the new key appended */
  assert_non_null(strstr(out, "disk0.provisioning = thick\n"));
  assert_non_null(strstr(out, "\ndisk0.size = 2097152\ndisk0.provisioning"));
  assert_non_null(strstr(out, "guest.os=debian12\n"));
  assert_non_null(strstr(out, "   # an indented comment\n"));
  assert_non_null(strstr(out, "disk0.vendor-note = keep me\n"));
  assert_non_null(strstr(out, "zz.unknown.last = x = y\nexport.tcp = 127.0.0.1:0\n"));
  free(out);
  assert_true(svm_desc_set(d, "name", " padded") < 0);
  assert_true(svm_desc_set(d, "name", "a\nb") < 0);
  assert_true(svm_desc_set(d, "bad key", "x") < 0);
  svm_desc_free(d);
}

static void save_and_load(void **state)
{
  char dir[] = "/tmp/test-descriptor.XXXXXX", path[256], tmp[300];
  struct svm_desc *d, *d2;
  char *a, *b;
  size_t la, lb;
  struct stat st;

  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/vm1.svm", dir);
  assert_int_equal(svm_desc_parse(path, good, strlen(good), &d), 0);
  assert_int_equal(svm_desc_save(d, path), 0);
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  assert_int_not_equal(stat(tmp, &st), 0);      /* no temp file left behind */
  assert_int_equal(svm_desc_load(path, &d2), 0);
  assert_int_equal(svm_desc_format(d, &a, &la), 0);
  assert_int_equal(svm_desc_format(d2, &b, &lb), 0);
  assert_int_equal(la, lb);
  assert_memory_equal(a, b, la);
  free(a);
  free(b);
  svm_desc_free(d);
  svm_desc_free(d2);
  assert_int_equal(svm_desc_load("/nonexistent/vm.svm", &d), -ENOENT);
  assert_null(d);
  unlink(path);
  rmdir(dir);
}

static void new_descriptor(void **state)
{
  struct svm_desc *d = svm_desc_new("x/vm2.svm");
  char uuid[37];

  assert_non_null(d);
  assert_int_equal(svm_desc_validate(d), -EINVAL);
  assert_string_equal(svm_last_error(), "x/vm2.svm: missing key 'svm.version'");
  svm_uuid_generate(uuid);
  assert_int_equal(strlen(uuid), 36);
  assert_int_equal(uuid[14], '4');
  assert_int_equal(svm_desc_comment(d, "made by a test"), 0);
  assert_true(svm_desc_comment(d, "two\nlines") < 0);
  assert_int_equal(svm_desc_set(d, "svm.version", "1"), 0);
  assert_int_equal(svm_desc_set(d, "name", "vm2"), 0);
  assert_int_equal(svm_desc_set(d, "uuid", uuid), 0);
  assert_int_equal(svm_desc_validate(d), 0);
  assert_int_equal(d->ndisks, 0);
  char *out;
  size_t len;
  assert_int_equal(svm_desc_format(d, &out, &len), 0);
  char want[200];
  snprintf(want, sizeof want, "# made by a test\nsvm.version = 1\nname = vm2\nuuid = %s\n", uuid);
  assert_string_equal(out, want);
  free(out);
  svm_desc_free(d);
}

struct bad_case {
  const char *text;
  size_t len;        /* 0 = strlen(text) */
  int err;
  const char *msg;
};

#define HEAD "svm.version = 1\nname = vm1\nuuid = u\n"
#define DISK0 "disk0.file = d0.raw\ndisk0.size = 4096\ndisk0.uuid = d0\n"

static const struct bad_case bad[] = {
  { HEAD "just words\n", 0, EINVAL, "t.svm:4: expected 'key = value' but the line has no '='" },
  { HEAD " = value\n", 0, EINVAL, "t.svm:4: no key before '='" },
  { HEAD "my key = value\n", 0, EINVAL,
    "t.svm:4: bad key 'my key' (letters, digits, '.', '_', '-' only)" },
  { HEAD DISK0 "disk0.size = 12abc\n", 0, EINVAL,
    "t.svm:7: duplicate key 'disk0.size' (first on line 5)" },
  { HEAD "disk0.file = d0.raw\ndisk0.size = 12abc\n", 0, EINVAL,
    "t.svm:5: disk0.size: '12abc' is not a number" },
  { HEAD "disk0.file = d0.raw\ndisk0.size = 99999999999999999999999\n", 0, EINVAL,
    "t.svm:5: disk0.size: '99999999999999999999999' is not a number" },
  { HEAD "disk0.file = d0.raw\ndisk0.size = 1000\n", 0, EINVAL,
    "t.svm:5: disk0.size: 1000 is not a disk size (a non-zero multiple of 512)" },
  { "svm.version = x\nname = vm1\nuuid = u\n", 0, EINVAL,
    "t.svm:1: svm.version: 'x' is not a number" },
  { "svm.version = 2\nname = vm1\nuuid = u\n", 0, EINVAL,
    "t.svm:1: svm.version = 2 is not supported (this svmotion reads version 1)" },
  { HEAD "name = vm2\n", 0, EINVAL, "t.svm:4: duplicate key 'name' (first on line 2)" },
  { HEAD "disk01.file = x\n", 0, EINVAL,
    "t.svm:4: bad disk index in 'disk01.file' (disk0 ... disk63, no leading zeros)" },
  { HEAD "disk64.file = x\n", 0, EINVAL,
    "t.svm:4: bad disk index in 'disk64.file' (disk0 ... disk63, no leading zeros)" },
  { HEAD "disk1x.file = x\n", 0, EINVAL,
    "t.svm:4: bad disk index in 'disk1x.file' (disk0 ... disk63, no leading zeros)" },
  { HEAD "disk7 = x\n", 0, EINVAL,
    "t.svm:4: bad disk index in 'disk7' (disk0 ... disk63, no leading zeros)" },
  { HEAD "disk.file = x\n", 0, EINVAL,
    "t.svm:4: bad disk index in 'disk.file' (disk0 ... disk63, no leading zeros)" },
  { HEAD DISK0 "disk2.file = d2.raw\n", 0, EINVAL,
    "t.svm:7: disk2 without disk1 (disks are numbered 0, 1, ...)" },
  { HEAD "disk0.file = ../../etc/passwd\n", 0, EINVAL,
    "t.svm:4: disk0.file: '../../etc/passwd' must be a file name inside the VM folder" },
  { HEAD "disk0.file = d0.raw\ndisk0.provisioning = fat\n", 0, EINVAL,
    "t.svm:5: disk0.provisioning: 'fat' is not a provisioning (thin, thick or "
    "eager-zeroed-thick)" },
  { HEAD "disk0.file = d0.raw\ndisk0.uuid = x\n", 0, EINVAL, "t.svm: missing key 'disk0.size'" },
  { "svm.version = 1\nuuid = u\n", 0, EINVAL, "t.svm: missing key 'name'" },
  { "svm.version = 1\nname = vm1\n", 0, EINVAL, "t.svm: missing key 'uuid'" },
  { "name = vm1\nuuid = u\n", 0, EINVAL, "t.svm: missing key 'svm.version'" },
  { "svm.version = 1\nname = .hidden\nuuid = u\n", 0, EINVAL,
    "t.svm:2: name: '.hidden' is not a valid VM name (1-64 of [A-Za-z0-9._-], not starting "
    "with '.' or '-')" },
  { HEAD "note = a\0b\n", sizeof(HEAD "note = a\0b\n") - 1, EINVAL,
    "t.svm:4: the line holds a NUL byte (not a text file?)" },
  { HEAD "disk0.file = d0.r", 0, EINVAL,
    "t.svm:4: truncated file: the last line has no newline" },
  { HEAD "export.tcp = localhost\n", 0, EINVAL,
    "t.svm:4: export.tcp: 'localhost' is not ADDR:PORT" },
  { HEAD "disk0.file = a.raw\ndisk0.size = 512\ndisk0.uuid = x\ndisk0.ctk = a.raw\n", 0,
    EINVAL, "t.svm: disk0: file and ctk are the same file" },
  /* no file named twice across every disk's file and ctk keys, nor as the descriptor */
  { HEAD "disk0.file = a.raw\ndisk0.size = 512\ndisk0.uuid = x\ndisk0.ctk = b.raw\n"
    "disk1.file = b.raw\ndisk1.size = 512\ndisk1.uuid = y\n", 0,
    EINVAL, "t.svm: disk0.ctk names b.raw, which is disk1's file" },
  { HEAD "disk0.file = a.raw\ndisk0.size = 512\ndisk0.uuid = x\n"
    "disk1.file = disk0.ctk\ndisk1.size = 512\ndisk1.uuid = y\n", 0,
    EINVAL, "t.svm: disk0.ctk names disk0.ctk, which is disk1's file" },
  { HEAD "disk0.file = a.raw\ndisk0.size = 512\ndisk0.uuid = x\n"
    "disk1.file = a.raw\ndisk1.size = 512\ndisk1.uuid = y\n", 0,
    EINVAL, "t.svm: disk0.file names a.raw, which is disk1's file" },
  { HEAD "disk0.file = vm1.svm\ndisk0.size = 512\ndisk0.uuid = x\n", 0,
    EINVAL, "t.svm: disk0.file names vm1.svm, which is the descriptor itself" },
};

static void malformed(void **state)
{
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct svm_desc *d = (void *)1;
    size_t len = bad[i].len ? bad[i].len : strlen(bad[i].text);
    int r = svm_desc_parse("t.svm", bad[i].text, len, &d);
    if (r != -bad[i].err || strcmp(svm_last_error(), bad[i].msg) != 0)
      fail_msg("case %zu: got %d '%s', want %d '%s'", i, r, svm_last_error(), -bad[i].err,
               bad[i].msg);
    assert_null(d);
  }
}

static void too_long(void **state)
{
  size_t n = strlen(HEAD) + 5000 + 1;
  char *buf = malloc(n + 1);
  struct svm_desc *d;

  strcpy(buf, HEAD "note = ");
  memset(buf + strlen(HEAD) + 7, 'x', n - strlen(HEAD) - 7 - 1);
  buf[n - 1] = '\n';
  buf[n] = '\0';
  assert_int_equal(svm_desc_parse("t.svm", buf, n, &d), -EINVAL);
  assert_string_equal(svm_last_error(), "t.svm:4: line longer than 4096 bytes");
  free(buf);
  /* a whole file beyond the limit */
  assert_int_equal(svm_desc_parse("t.svm", good, SVM_DESC_MAX_FILE + 1, &d), -EFBIG);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(round_trip),    cmocka_unit_test(set_keeps_unknown),
    cmocka_unit_test(save_and_load), cmocka_unit_test(new_descriptor),
    cmocka_unit_test(malformed),     cmocka_unit_test(too_long),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
