/* Image locks (svm/disk/lock.h): one process may open an image several times (a live move
 * builds its new stack over the file before it frees the old one), another process may not
 * write it meanwhile, and the lock goes with the process's last open. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "svm/disk/layer.h"
#include "svm/disk/lock.h"

static char path[64];

/* What another open file gets when it asks for the lock: 0 or -EBUSY. A plain fcntl in a
 * child: svm_disk_lock() there would see the table inherited from this process (and indeed
 * share its lock, through the inherited descriptor). */
static int lock_in_child(bool exclusive)
{
  pid_t pid = fork();
  int st;

  assert_true(pid >= 0);
  if (pid == 0) {
    struct flock fl = { .l_type = exclusive ? F_WRLCK : F_RDLCK, .l_whence = SEEK_SET };
    int fd = open(path, O_RDWR);
    if (fd < 0)
      _exit(2);
    if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
      _exit(0);
    _exit(errno == EAGAIN || errno == EACCES ? 1 : 2);
  }
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  return WEXITSTATUS(st) == 0 ? 0 : WEXITSTATUS(st) == 1 ? -EBUSY : -EIO;
}

static int setup(void **state)
{
  (void)state;
  strcpy(path, "/tmp/svm-test-lock-XXXXXX");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(ftruncate(fd, 1 << 20), 0);
  close(fd);
  return 0;
}

static int teardown(void **state)
{
  (void)state;
  unlink(path);
  return 0;
}

/* Two writable opens in this process, closed in either order: no self-conflict, and the file
 * stays locked against others until the last one goes. */
static void test_reopen_in_process(void **state)
{
  struct svm_layer *a = NULL, *b = NULL;

  (void)state;
  assert_int_equal(svm_layer_open_raw(path, false, &a), 0);
  assert_int_equal(lock_in_child(false), -EBUSY);
  assert_int_equal(svm_layer_open_raw(path, false, &b), 0);
  svm_layer_free(a);                          /* the first open goes first */
  assert_int_equal(lock_in_child(false), -EBUSY);
  assert_int_equal(lock_in_child(true), -EBUSY);
  svm_layer_free(b);
  assert_int_equal(lock_in_child(true), 0);
}

/* A reader upgraded by this process's writer; another reader keeps the upgrade out. */
static void test_upgrade(void **state)
{
  struct svm_layer *r = NULL, *w = NULL;

  (void)state;
  assert_int_equal(svm_layer_open_raw(path, true, &r), 0);
  assert_int_equal(lock_in_child(false), 0);  /* readers share */
  assert_int_equal(lock_in_child(true), -EBUSY);
  assert_int_equal(svm_layer_open_raw(path, false, &w), 0);
  assert_int_equal(lock_in_child(false), -EBUSY);
  svm_layer_free(w);
  svm_layer_free(r);
  assert_int_equal(lock_in_child(true), 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_reopen_in_process, setup, teardown),
    cmocka_unit_test_setup_teardown(test_upgrade, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
