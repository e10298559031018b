/* The I/O engine contract, run once per backend (tests/io.cmake sets SVM_IO_ENGINE). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
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

#include <svmotion/error.h>

#include "svm/io/io.h"

struct done {
  int count;
  int64_t res[4096];
  int order[4096];
};

struct tag {
  struct done *d;
  int id;
};

static void on_done(void *opaque, int64_t res)
{
  struct tag *t = opaque;

  t->d->res[t->id] = res;
  t->d->order[t->d->count++] = t->id;
}

static char tmpdir[] = "/tmp/svm-test-io-XXXXXX";

static int setup_dir(void **state)
{
  (void)state;
  return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int teardown_dir(void **state)
{
  char cmd[256];
  (void)state;
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  return system(cmd) == 0 ? 0 : -1;
}

static int temp_file(const char *name, char *path, size_t size)
{
  snprintf(path, size, "%s/%s", tmpdir, name);
  return open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
}

static struct svm_io *new_engine(unsigned depth)
{
  struct svm_io *io = NULL;

  assert_int_equal(svm_io_new(SVM_IO_AUTO, depth, &io), 0);
  assert_non_null(io);
  return io;
}

static void test_engine_name(void **state)
{
  const char *want = getenv("SVM_IO_ENGINE");
  struct svm_io *io = new_engine(8);
  struct svm_io *bad = (struct svm_io *)1;
  (void)state;

  if (want != NULL && *want != '\0')
    assert_string_equal(svm_io_name(io), want);
  else
    assert_string_equal(svm_io_name(io), "io_uring");
  assert_int_equal(svm_io_depth(io), 8);
  assert_int_equal(svm_io_in_flight(io), 0);
  svm_io_free(io);

  assert_int_equal(svm_io_new(SVM_IO_AUTO, 0, &bad), -EINVAL);
  assert_null(bad);
  assert_int_equal(svm_io_new(SVM_IO_AUTO, 100000, &bad), -EINVAL);
  assert_int_equal(svm_io_new(SVM_IO_URING, 4, &io), 0);
  assert_string_equal(svm_io_name(io), "io_uring");
  svm_io_free(io);
  assert_int_equal(svm_io_new(SVM_IO_AIO, 4, &io), 0);
  assert_string_equal(svm_io_name(io), "libaio");
  svm_io_free(io);
}

static void fill(unsigned char *p, size_t len, unsigned seed)
{
  for (size_t i = 0; i < len; i++)
    p[i] = (unsigned char)((i * 31 + seed * 7 + (i >> 9)) & 0xff);
}

/* Write N blocks with at most `depth` in flight, queueing until -EAGAIN, then read them back. */
static void rw_at_depth(bool want_direct)
{
  enum { N = 64, BS = 65536, DEPTH = 8 };
  char path[512];
  int fd0 = temp_file(want_direct ? "depth-direct" : "depth", path, sizeof path);
  bool direct = false;
  int fd = svm_io_open_file(path, O_RDWR, 0, want_direct, &direct);
  unsigned char *buf = svm_io_alloc_buffer((size_t)N * BS);
  unsigned char *back = svm_io_alloc_buffer((size_t)N * BS);
  struct svm_io *io = new_engine(DEPTH);
  static struct done d;
  struct tag tags[N];
  int next = 0, saw_eagain = 0;

  assert_true(fd0 >= 0);
  close(fd0);
  assert_true(fd >= 0);
  assert_non_null(buf);
  assert_non_null(back);
  if (want_direct)
    assert_true(direct);   /* /tmp is ext4 or tmpfs, both take O_DIRECT */
  assert_int_equal((uintptr_t)buf % SVM_IO_ALIGN, 0);
  fill(buf, (size_t)N * BS, 1);
  memset(&d, 0, sizeof d);

  while (d.count < N) {
    while (next < N) {
      tags[next] = (struct tag){ &d, next };
      int r = svm_io_pwrite(io, fd, buf + (size_t)next * BS, BS, (uint64_t)next * BS, on_done,
                            &tags[next]);
      if (r == -EAGAIN) {
        saw_eagain++;
        assert_int_equal(svm_io_in_flight(io), DEPTH);
        break;
      }
      assert_int_equal(r, 0);
      next++;
    }
    assert_true(svm_io_in_flight(io) <= DEPTH);
    int n = svm_io_reap(io, 1);
    assert_true(n >= 1);
  }
  assert_true(saw_eagain > 0);
  for (int i = 0; i < N; i++)
    assert_int_equal(d.res[i], BS);

  memset(&d, 0, sizeof d);
  memset(back, 0, (size_t)N * BS);
  next = 0;
  while (d.count < N) {
    while (next < N) {
      tags[next] = (struct tag){ &d, next };
      int r = svm_io_pread(io, fd, back + (size_t)next * BS, BS, (uint64_t)next * BS, on_done,
                           &tags[next]);
      if (r == -EAGAIN)
        break;
      assert_int_equal(r, 0);
      next++;
    }
    assert_true(svm_io_reap(io, 1) >= 1);
  }
  for (int i = 0; i < N; i++)
    assert_int_equal(d.res[i], BS);
  assert_memory_equal(buf, back, (size_t)N * BS);
  assert_int_equal(svm_io_in_flight(io), 0);
  svm_io_free(io);
  free(buf);
  free(back);
  close(fd);
}

static void test_rw_depth(void **state)
{
  (void)state;
  rw_at_depth(false);
}

static void test_rw_direct(void **state)
{
  (void)state;
  rw_at_depth(true);
}

static void test_short_read_eof(void **state)
{
  char path[512];
  int fd = temp_file("eof", path, sizeof path);
  unsigned char data[10000], buf[16384];
  struct svm_io *io = new_engine(4);
  static struct done d;
  struct tag t[3] = { { &d, 0 }, { &d, 1 }, { &d, 2 } };
  (void)state;

  fill(data, sizeof data, 3);
  assert_int_equal(pwrite(fd, data, sizeof data, 0), (ssize_t)sizeof data);
  memset(&d, 0, sizeof d);
  assert_int_equal(svm_io_pread(io, fd, buf, sizeof buf, 8192, on_done, &t[0]), 0);
  assert_int_equal(svm_io_pread(io, fd, buf + 8192, 4096, 20000, on_done, &t[1]), 0);
  assert_int_equal(svm_io_pread(io, fd, buf + 12288, 4096, 10000, on_done, &t[2]), 0);
  assert_int_equal(svm_io_reap(io, 3), 3);
  assert_int_equal(d.res[0], 10000 - 8192);
  assert_memory_equal(buf, data + 8192, 10000 - 8192);
  assert_int_equal(d.res[1], 0);
  assert_int_equal(d.res[2], 0);
  svm_io_free(io);
  close(fd);
}

/* An O_DIRECT read across an unaligned end of file returns the bytes that are there. */
static void test_direct_eof(void **state)
{
  char path[512];
  int fd0 = temp_file("direct-eof", path, sizeof path);
  unsigned char data[6000];
  unsigned char *buf = svm_io_alloc_buffer(8192);
  bool direct;
  int fd;
  struct svm_io *io = new_engine(2);
  static struct done d;
  struct tag t = { &d, 0 };
  (void)state;

  fill(data, sizeof data, 5);
  assert_int_equal(pwrite(fd0, data, sizeof data, 0), (ssize_t)sizeof data);
  assert_int_equal(fsync(fd0), 0);
  close(fd0);
  fd = svm_io_open_file(path, O_RDONLY, 0, true, &direct);
  assert_true(fd >= 0);
  assert_true(direct);
  memset(&d, 0, sizeof d);
  assert_int_equal(svm_io_pread(io, fd, buf, 8192, 0, on_done, &t), 0);
  assert_int_equal(svm_io_reap(io, 1), 1);
  assert_int_equal(d.res[0], 6000);
  assert_memory_equal(buf, data, 6000);
  svm_io_free(io);
  free(buf);
  close(fd);
}

static void test_open_errors(void **state)
{
  char path[512];
  bool direct = true;
  (void)state;

  snprintf(path, sizeof path, "%s/does-not-exist", tmpdir);
  assert_int_equal(svm_io_open_file(path, O_RDONLY, 0, true, &direct), -ENOENT);
  assert_false(direct);
  assert_non_null(strstr(svm_last_error(), "does-not-exist"));
  /* O_CREAT|O_EXCL with O_DIRECT asked for creates exactly once */
  snprintf(path, sizeof path, "%s/excl", tmpdir);
  int fd = svm_io_open_file(path, O_RDWR | O_CREAT | O_EXCL, 0600, true, &direct);
  assert_true(fd >= 0);
  close(fd);
  assert_int_equal(svm_io_open_file(path, O_RDWR | O_CREAT | O_EXCL, 0600, true, &direct),
                   -EEXIST);
}

static struct stat stat_fd(int fd)
{
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  return st;
}

static void test_fallocate(void **state)
{
  enum { MB = 1 << 20 };
  char path[512];
  int fd = temp_file("falloc", path, sizeof path);
  struct svm_io *io = new_engine(4);
  static struct done d;
  struct tag t = { &d, 0 };
  unsigned char *buf = malloc(MB);
  struct stat st;
  (void)state;

  assert_non_null(buf);
  memset(&d, 0, sizeof d);
  /* mode 0: allocate 4 MiB and grow the file */
  assert_int_equal(svm_io_fallocate(io, fd, 0, 0, 4 * MB, on_done, &t), 0);
  assert_int_equal(svm_io_reap(io, 1), 1);
  assert_int_equal(d.res[0], 0);
  st = stat_fd(fd);
  assert_int_equal(st.st_size, 4 * MB);
  assert_true((int64_t)st.st_blocks * 512 >= 4 * MB);

  /* write data, then punch a hole in the middle: blocks drop, size stays, hole reads zero */
  fill(buf, MB, 9);
  assert_int_equal(pwrite(fd, buf, MB, MB), MB);
  d.count = 0;
  assert_int_equal(svm_io_fallocate(io, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, MB, MB,
                                    on_done, &t), 0);
  assert_int_equal(svm_io_reap(io, 1), 1);
  assert_int_equal(d.res[0], 0);
  st = stat_fd(fd);
  assert_int_equal(st.st_size, 4 * MB);
  assert_true((int64_t)st.st_blocks * 512 <= 3 * MB);
  assert_int_equal(pread(fd, buf, MB, MB), MB);
  for (int i = 0; i < MB; i++)
    assert_int_equal(buf[i], 0);

  /* KEEP_SIZE beyond end of file allocates without growing */
  d.count = 0;
  assert_int_equal(svm_io_fallocate(io, fd, FALLOC_FL_KEEP_SIZE, 4 * MB, MB, on_done, &t), 0);
  assert_int_equal(svm_io_reap(io, 1), 1);
  assert_int_equal(d.res[0], 0);
  assert_int_equal(stat_fd(fd).st_size, 4 * MB);

  /* ZERO_RANGE over data reads back zeros */
  fill(buf, MB, 11);
  assert_int_equal(pwrite(fd, buf, MB, 0), MB);
  d.count = 0;
  assert_int_equal(svm_io_fallocate(io, fd, FALLOC_FL_ZERO_RANGE, 4096, 8192, on_done, &t), 0);
  assert_int_equal(svm_io_reap(io, 1), 1);
  if (d.res[0] != -EOPNOTSUPP) {
    assert_int_equal(d.res[0], 0);
    assert_int_equal(pread(fd, buf, 16384, 0), 16384);
    for (int i = 4096; i < 12288; i++)
      assert_int_equal(buf[i], 0);
    assert_int_not_equal(buf[12288] | buf[12289] | buf[12290], 0);
  }

  /* an invalid mode is reported through the callback */
  d.count = 0;
  assert_int_equal(svm_io_fallocate(io, fd, FALLOC_FL_PUNCH_HOLE, 0, 4096, on_done, &t), 0);
  assert_int_equal(svm_io_reap(io, 1), 1);
  assert_int_equal(d.res[0], -EOPNOTSUPP);
  svm_io_free(io);
  free(buf);
  close(fd);
}

static void test_fsync(void **state)
{
  char path[512];
  int fd = temp_file("fsync", path, sizeof path);
  struct svm_io *io = new_engine(4);
  static struct done d;
  struct tag t[2] = { { &d, 0 }, { &d, 1 } };
  char data[4096];
  (void)state;

  memset(data, 'x', sizeof data);
  memset(&d, 0, sizeof d);
  assert_int_equal(svm_io_pwrite(io, fd, data, sizeof data, 0, on_done, &t[0]), 0);
  assert_int_equal(svm_io_reap(io, 1), 1);
  assert_int_equal(svm_io_fsync(io, fd, false, on_done, &t[0]), 0);
  assert_int_equal(svm_io_fsync(io, fd, true, on_done, &t[1]), 0);
  assert_int_equal(svm_io_reap(io, 2), 2);
  assert_int_equal(d.res[0], 0);
  assert_int_equal(d.res[1], 0);
  svm_io_free(io);
  close(fd);
}

/* A bad fd fails at queue time or in the callback, with -EBADF either way, and the engine
 * keeps working afterwards. */
static void test_bad_fd(void **state)
{
  struct svm_io *io = new_engine(4);
  static struct done d;
  struct tag t[4] = { { &d, 0 }, { &d, 1 }, { &d, 2 }, { &d, 3 } };
  char buf[4096];
  int closed_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  int queued = 0, fail_at_queue = 0, r;
  (void)state;

  assert_true(closed_fd >= 0);
  close(closed_fd);
  memset(&d, 0, sizeof d);
  for (int i = 0; i < 4; i++) d.res[i] = 12345;
  r = svm_io_pread(io, -1, buf, sizeof buf, 0, on_done, &t[0]);
  assert_int_equal(r, -EBADF);    /* a negative fd never reaches the kernel */
  r = svm_io_pread(io, closed_fd, buf, sizeof buf, 0, on_done, &t[1]);
  r == 0 ? queued++ : (assert_int_equal(r, -EBADF), fail_at_queue++);
  r = svm_io_pwrite(io, closed_fd, buf, sizeof buf, 0, on_done, &t[2]);
  r == 0 ? queued++ : (assert_int_equal(r, -EBADF), fail_at_queue++);
  r = svm_io_fsync(io, closed_fd, false, on_done, &t[3]);
  r == 0 ? queued++ : (assert_int_equal(r, -EBADF), fail_at_queue++);
  assert_int_equal(svm_io_reap(io, (unsigned)queued), queued);
  for (int i = 1; i < 4; i++)
    if (d.res[i] != 12345)
      assert_int_equal(d.res[i], -EBADF);
  assert_int_equal(d.count, queued);
  assert_int_equal(svm_io_in_flight(io), 0);
  assert_int_equal(svm_io_pread(io, 0, buf, 0, 0, on_done, &t[0]), -EINVAL);
  svm_io_free(io);
}

/* Completions make the event fd readable; reading it and reaping with 0 runs the callbacks. */
static void test_event_fd(void **state)
{
  char path[512];
  int fd = temp_file("eventfd", path, sizeof path);
  struct svm_io *io = new_engine(4);
  static struct done d;
  struct tag t[2] = { { &d, 0 }, { &d, 1 } };
  char data[8192];
  struct pollfd p = { .fd = svm_io_event_fd(io), .events = POLLIN };
  uint64_t count;
  int got = 0;
  (void)state;

  assert_true(p.fd >= 0);
  assert_int_equal(poll(&p, 1, 0), 0);    /* nothing yet */
  memset(data, 'y', sizeof data);
  memset(&d, 0, sizeof d);
  assert_int_equal(svm_io_pwrite(io, fd, data, sizeof data, 0, on_done, &t[0]), 0);
  assert_int_equal(svm_io_fsync(io, fd, true, on_done, &t[1]), 0);
  assert_true(svm_io_submit(io) >= 0);
  while (got < 2) {
    assert_int_equal(poll(&p, 1, 10000), 1);
    assert_int_equal(read(p.fd, &count, sizeof count), (ssize_t)sizeof count);
    assert_true(count >= 1);
    int n = svm_io_reap(io, 0);
    assert_true(n >= 0);
    got += n;
  }
  assert_int_equal(d.res[0], 8192);
  assert_int_equal(d.res[1], 0);
  assert_int_equal(svm_io_reap(io, 0), 0);
  svm_io_free(io);
  close(fd);
}

/* Callbacks may queue new requests: a chain of 100 writes, each queued by the previous one. */
struct chain {
  struct svm_io *io;
  int fd;
  char *buf;
  int left;
  int64_t last;
};

static void chain_cb(void *opaque, int64_t res)
{
  struct chain *c = opaque;

  c->last = res;
  if (res < 0 || --c->left == 0)
    return;
  c->last = svm_io_pwrite(c->io, c->fd, c->buf, 512, (uint64_t)c->left * 512, chain_cb, c);
}

static void test_requeue_from_callback(void **state)
{
  char path[512];
  struct chain c = { .left = 100 };
  char buf[512];
  (void)state;

  c.fd = temp_file("chain", path, sizeof path);
  c.io = new_engine(2);
  c.buf = buf;
  memset(buf, 'z', sizeof buf);
  assert_int_equal(svm_io_pwrite(c.io, c.fd, buf, 512, 100 * 512, chain_cb, &c), 0);
  while (svm_io_in_flight(c.io) > 0)
    assert_true(svm_io_reap(c.io, 1) >= 1);
  assert_int_equal(c.left, 0);
  assert_int_equal(c.last, 512);
  assert_int_equal(stat_fd(c.fd).st_size, 101 * 512);
  svm_io_free(c.io);
  close(c.fd);
}

/* Freeing an engine with requests in flight waits for them and runs no callback. */
static void test_free_in_flight(void **state)
{
  char path[512];
  int fd = temp_file("free", path, sizeof path);
  struct svm_io *io = new_engine(16);
  static struct done d;
  struct tag t[16];
  static char buf[16][4096];
  (void)state;

  memset(&d, 0, sizeof d);
  for (int i = 0; i < 16; i++) {
    t[i] = (struct tag){ &d, i };
    assert_int_equal(svm_io_pwrite(io, fd, buf[i], 4096, (uint64_t)i * 4096, on_done, &t[i]), 0);
  }
  assert_true(svm_io_submit(io) >= 0);
  svm_io_free(io);
  assert_int_equal(d.count, 0);
  close(fd);
}

/* A step refused for want of room waits for a completion: svm_io_post_on_room on a full engine
 * runs nothing and wakes nobody (a retry from every turn would spin for as long as the engine
 * stays full), and runs in the reap that completes a request, where the step finds room. Reads
 * of a pipe stay in flight until the test writes to it: io_uring only (libaio cannot read a
 * pipe). */
struct room_step {
  struct svm_io *io;
  int fd;
  char *buf;
  int runs;
  int queued;
};

static void room_cb(void *opaque, int64_t res)
{
  struct room_step *st = opaque;

  assert_int_equal(res, 0);
  st->runs++;
  st->queued = svm_io_pread(st->io, st->fd, st->buf, 1, 0, NULL, NULL);
}

static void test_post_on_room(void **state)
{
  struct svm_io *io = new_engine(2);
  struct svm_io_posted node = { 0 }, node2 = { 0 };
  static struct done d;
  struct tag t[2] = { { &d, 0 }, { &d, 1 } };
  char b[4];
  int p[2];
  struct room_step st = { .io = io, .buf = &b[2] };
  struct pollfd pe = { .fd = svm_io_event_fd(io), .events = POLLIN };
  (void)state;

  if (strcmp(svm_io_name(io), "io_uring") != 0) {
    svm_io_free(io);
    skip();
  }
  assert_int_equal(pipe(p), 0);
  st.fd = p[0];
  memset(&d, 0, sizeof d);
  assert_int_equal(svm_io_pread(io, p[0], &b[0], 1, 0, on_done, &t[0]), 0);
  assert_int_equal(svm_io_pread(io, p[0], &b[1], 1, 0, on_done, &t[1]), 0);
  assert_int_equal(svm_io_pread(io, p[0], &b[2], 1, 0, on_done, &t[1]), -EAGAIN);
  svm_io_post_on_room(io, &node, room_cb, &st);
  assert_true(svm_io_reap(io, 0) >= 0);
  assert_int_equal(st.runs, 0);                 /* full: it waits ... */
  assert_int_equal(poll(&pe, 1, 0), 0);         /* ... without waking the engine's owner */
  assert_int_equal(write(p[1], "a", 1), 1);     /* one read completes */
  assert_true(svm_io_reap(io, 1) >= 1);
  assert_int_equal(d.count, 1);
  assert_int_equal(st.runs, 1);                 /* run by that reap, and found room */
  assert_int_equal(st.queued, 0);
  assert_int_equal(svm_io_in_flight(io), 2);
  /* with room, it runs from the next reap, as a post */
  assert_int_equal(write(p[1], "bc", 2), 2);
  while (svm_io_in_flight(io) > 0)
    assert_true(svm_io_reap(io, 1) >= 0);
  svm_io_post_on_room(io, &node2, room_cb, &st);
  assert_true(svm_io_reap(io, 0) >= 1);
  assert_int_equal(st.runs, 2);
  assert_int_equal(st.queued, 0);
  assert_int_equal(write(p[1], "d", 1), 1);
  while (svm_io_in_flight(io) > 0)
    assert_true(svm_io_reap(io, 1) >= 0);
  assert_int_equal(d.count, 2);
  svm_io_free(io);
  close(p[0]);
  close(p[1]);
}

/* Model check: random reads and writes, up to the full depth in flight, against a shadow copy.
 * Requests in flight never overlap (each holds its blocks), so every read has one right
 * answer: the shadow at the time it was queued. */
enum { M_BLOCKS = 256, M_BS = 4096, M_OPS = 3000 };

struct mop {
  unsigned char *buf;
  unsigned first, n;
  bool write;
  bool busy;
  int64_t res;
};

static unsigned char m_shadow[M_BLOCKS * M_BS];
static unsigned char m_expect[16][8 * M_BS];
static bool m_held[M_BLOCKS];
static int m_done;

static void m_cb(void *opaque, int64_t res)
{
  struct mop *op = opaque;
  op->res = res;
  op->busy = false;
  m_done++;
}

static void test_random_model(void **state)
{
  char path[512];
  int fd = temp_file("model", path, sizeof path);
  struct svm_io *io = new_engine(16);
  struct mop ops[16];
  int issued = 0, checked = 0;
  (void)state;

  srand(1234);
  memset(m_shadow, 0, sizeof m_shadow);
  memset(m_held, 0, sizeof m_held);
  assert_int_equal(ftruncate(fd, sizeof m_shadow), 0);
  for (int i = 0; i < 16; i++) {
    ops[i] = (struct mop){ .buf = malloc(8 * M_BS) };
    assert_non_null(ops[i].buf);
  }
  m_done = 0;
  while (checked < M_OPS) {
    /* queue into every idle op that finds free blocks */
    for (int i = 0; i < 16 && issued < M_OPS; i++) {
      struct mop *op = &ops[i];
      if (op->busy || op->n != 0)
        continue;
      unsigned n = 1 + (unsigned)rand() % 8, first = (unsigned)rand() % (M_BLOCKS - n + 1);
      bool free_run = true;
      for (unsigned b = first; b < first + n; b++)
        free_run &= !m_held[b];
      if (!free_run)
        continue;
      for (unsigned b = first; b < first + n; b++)
        m_held[b] = true;
      op->first = first;
      op->n = n;
      op->write = rand() % 2;
      op->busy = true;
      if (op->write) {
        for (unsigned k = 0; k < n * M_BS; k++)
          op->buf[k] = (unsigned char)rand();
        memcpy(m_shadow + (size_t)first * M_BS, op->buf, (size_t)n * M_BS);
        assert_int_equal(svm_io_pwrite(io, fd, op->buf, (size_t)n * M_BS,
                                       (uint64_t)first * M_BS, m_cb, op), 0);
      } else {
        memcpy(m_expect[i], m_shadow + (size_t)first * M_BS, (size_t)n * M_BS);
        assert_int_equal(svm_io_pread(io, fd, op->buf, (size_t)n * M_BS,
                                      (uint64_t)first * M_BS, m_cb, op), 0);
      }
      issued++;
    }
    assert_true(svm_io_in_flight(io) <= 16);
    if (rand() % 4 == 0)
      assert_true(svm_io_reap(io, 0) >= 0);     /* sometimes just look */
    else
      assert_true(svm_io_reap(io, 1 + (unsigned)rand() % 3) >= 1);
    /* check and release what completed */
    for (int i = 0; i < 16; i++) {
      struct mop *op = &ops[i];
      if (op->busy || op->n == 0)
        continue;
      assert_int_equal(op->res, (int64_t)op->n * M_BS);
      if (!op->write)
        assert_memory_equal(op->buf, m_expect[i], (size_t)op->n * M_BS);
      for (unsigned b = op->first; b < op->first + op->n; b++)
        m_held[b] = false;
      op->n = 0;
      checked++;
    }
  }
  assert_int_equal(m_done, M_OPS);
  assert_int_equal(svm_io_in_flight(io), 0);
  /* the file is the shadow */
  unsigned char *whole = malloc(sizeof m_shadow);
  assert_non_null(whole);
  assert_int_equal(pread(fd, whole, sizeof m_shadow, 0), (ssize_t)sizeof m_shadow);
  assert_memory_equal(whole, m_shadow, sizeof m_shadow);
  free(whole);
  for (int i = 0; i < 16; i++)
    free(ops[i].buf);
  svm_io_free(io);
  close(fd);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_engine_name),
    cmocka_unit_test(test_rw_depth),
    cmocka_unit_test(test_rw_direct),
    cmocka_unit_test(test_short_read_eof),
    cmocka_unit_test(test_direct_eof),
    cmocka_unit_test(test_open_errors),
    cmocka_unit_test(test_fallocate),
    cmocka_unit_test(test_fsync),
    cmocka_unit_test(test_bad_fd),
    cmocka_unit_test(test_event_fd),
    cmocka_unit_test(test_requeue_from_callback),
    cmocka_unit_test(test_free_in_flight),
    cmocka_unit_test(test_post_on_room),
    cmocka_unit_test(test_random_model),
  };
  return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
