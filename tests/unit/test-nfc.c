/* The NFC channel over socketpairs: frames round-trip; the receiver refuses a corrupted CRC,
 * truncated frames, oversized lengths, names that would leave its folder and data out of its
 * range; a put cut at a random point resumes and sends only about what was left; the rate cap
 * holds a sender back. The receiver is the real one (svm_nfc_serve: the I/O engine writing
 * into a temporary folder), run on a thread of its own. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/crc32c.h"
#include "nfc/frame.h"
#include "nfc/nfc.h"
#include "nfc/rate.h"
#include "svm/copy/nfc.h"

static char dir[] = "/tmp/test-nfc.XXXXXX";
static int dirfd = -1;

/* ---- a receiver on a thread ----------------------------------------------------------- */

struct server {
  int fd;
  pthread_t th;
  int r;
  struct nfc_recv_counters n;
  struct nfc_recv_options o;
};

static void *serve(void *opaque)
{
  struct server *s = opaque;
  struct nfc_conn *c;

  assert_int_equal(nfc_conn_new_fd(s->fd, "test-peer", &c), 0);
  s->r = svm_nfc_serve(c, dirfd, &s->o, &s->n);
  nfc_conn_free(c);
  return NULL;
}

/* Returns the sender's end; the receiver serves the other. */
static int start_server(struct server *s)
{
  int sv[2];

  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  s->fd = sv[1];
  assert_int_equal(pthread_create(&s->th, NULL, serve, s), 0);
  return sv[0];
}

static int stop_server(struct server *s, int fd)
{
  shutdown(fd, SHUT_WR);
  pthread_join(s->th, NULL);
  close(fd);
  return s->r;
}

/* ---- raw frames, as a hostile sender writes them ----------------------------------------- */

static void put_frame(int fd, uint8_t type, uint16_t flags, uint64_t off, uint64_t count,
                      const void *payload, uint32_t len, uint32_t declared_len, bool bad_crc)
{
  uint8_t h[NFC_HDR_SIZE];
  struct nfc_hdr hd = { .type = type, .flags = flags, .len = declared_len, .off = off,
                        .count = count, .crc = svm_crc32c(0, payload, len) ^ (bad_crc ? 1 : 0) };
  nfc_hdr_encode(h, &hd);
  assert_int_equal(write(fd, h, sizeof h), (ssize_t)sizeof h);
  if (len > 0)
    assert_int_equal(write(fd, payload, len), (ssize_t)len);
}

static void put_open(int fd, const char *name, uint64_t size)
{
  struct nfc_open o = { .size = size, .source_id = 42, .start = 0, .end = size };
  uint8_t buf[NFC_MAX_CTRL];
  snprintf(o.name, sizeof o.name, "%s", name);
  int n = nfc_open_encode(&o, buf, sizeof buf);
  assert_true(n > 0);
  put_frame(fd, NFC_OPEN, NFC_OPEN_CREATE, 0, 0, buf, (uint32_t)n, (uint32_t)n, false);
}

static bool exists(const char *name)
{
  struct stat st;
  return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_frame_roundtrip(void **state)
{
  uint8_t b[NFC_HDR_SIZE];
  struct nfc_hdr in = { .type = NFC_ZERO, .off = 1ull << 40, .count = 12345 }, out;
  (void)state;

  nfc_hdr_encode(b, &in);
  assert_int_equal(nfc_hdr_decode(b, &out), 0);
  assert_int_equal(out.type, NFC_ZERO);
  assert_true(out.off == in.off && out.count == in.count && out.len == 0);

  in = (struct nfc_hdr){ .type = NFC_DATA, .len = NFC_MAX_DATA + 1, .off = 0 };
  nfc_hdr_encode(b, &in);
  assert_int_equal(nfc_hdr_decode(b, &out), -EMSGSIZE);     /* oversized */
  in = (struct nfc_hdr){ .type = NFC_READY, .len = 1 };
  nfc_hdr_encode(b, &in);
  assert_int_equal(nfc_hdr_decode(b, &out), -EMSGSIZE);     /* no payload allowed */
  in = (struct nfc_hdr){ .type = NFC_DATA, .len = 4096, .off = UINT64_MAX - 10 };
  nfc_hdr_encode(b, &in);
  assert_int_equal(nfc_hdr_decode(b, &out), -EPROTO);       /* wraps */
  in = (struct nfc_hdr){ .type = NFC_TYPE_MAX + 1 };
  nfc_hdr_encode(b, &in);
  assert_int_equal(nfc_hdr_decode(b, &out), -EPROTO);
  in = (struct nfc_hdr){ .type = NFC_DONE };
  nfc_hdr_encode(b, &in);
  b[4] = 2;
  assert_int_equal(nfc_hdr_decode(b, &out), -EPROTONOSUPPORT);
  b[4] = 1;
  b[0] ^= 0xff;
  assert_int_equal(nfc_hdr_decode(b, &out), -EPROTO);

  struct nfc_open o = { .size = 100 << 20, .source_id = 7, .end = 100 << 20, .nranges = 2,
                        .provisioning = 1, .ranges = { { 0, 50 << 20 }, { 50 << 20, 100 << 20 } },
                        .name = "disk0.raw" }, o2;
  uint8_t buf[NFC_MAX_CTRL];
  int n = nfc_open_encode(&o, buf, sizeof buf);
  assert_true(n > 0);
  assert_int_equal(nfc_open_decode(buf, (size_t)n, &o2), 0);
  assert_string_equal(o2.name, "disk0.raw");
  assert_true(o2.size == o.size && o2.nranges == 2 && o2.ranges[1][0] == 50 << 20);
  for (int k = 0; k < n; k++)                  /* every truncation is refused */
    assert_int_not_equal(nfc_open_decode(buf, (size_t)k, &o2), 0);
  o.ranges[1][0] = 40 << 20;                   /* ranges that do not tile */
  n = nfc_open_encode(&o, buf, sizeof buf);
  assert_int_equal(nfc_open_decode(buf, (size_t)n, &o2), -EPROTO);
}

static void test_names(void **state)
{
  (void)state;
  assert_true(nfc_name_ok("disk0.raw"));
  assert_true(nfc_name_ok("vm1.svm"));
  assert_true(nfc_name_ok("..x"));
  assert_false(nfc_name_ok(""));
  assert_false(nfc_name_ok("."));
  assert_false(nfc_name_ok(".."));
  assert_false(nfc_name_ok("../etc"));
  assert_false(nfc_name_ok("a/b"));
  assert_false(nfc_name_ok("/etc/passwd"));
  assert_false(nfc_name_ok("a\nb"));
  assert_false(nfc_name_ok(".disk.nfc-0"));

  /* Over the wire: refused, nothing created, here or above. */
  const char *bad[] = { "..", "../escaped", "sub/escaped", "/tmp/escaped" };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    struct server s = { 0 };
    int fd = start_server(&s);
    put_open(fd, bad[i], 1 << 20);
    assert_int_equal(stop_server(&s, fd), -EACCES);
  }
  assert_false(exists("escaped"));
  char up[256];
  snprintf(up, sizeof up, "%s/../escaped", dir);
  assert_int_not_equal(access(up, F_OK), 0);

  /* A symbolic link planted in the folder is not followed. */
  assert_int_equal(symlinkat("/tmp/test-nfc-link-target", dirfd, "link.raw"), 0);
  struct server s = { 0 };
  int fd = start_server(&s);
  put_open(fd, "link.raw", 1 << 20);
  assert_int_equal(stop_server(&s, fd), -ELOOP);
  assert_int_not_equal(access("/tmp/test-nfc-link-target", F_OK), 0);
  unlinkat(dirfd, "link.raw", 0);
}

/* OPEN, then one bad frame: refused, and the data never reaches the file. */
static int bad_frame(const char *name, int kind)
{
  char data[4096];
  struct server s = { 0 };
  int fd = start_server(&s);

  memset(data, 0xab, sizeof data);
  put_open(fd, name, 1 << 20);
  switch (kind) {
  case 0: put_frame(fd, NFC_DATA, 0, 0, 0, data, sizeof data, sizeof data, true); break;
  case 1: put_frame(fd, NFC_DATA, 0, 0, 0, data, 100, sizeof data, false); break;  /* short */
  case 2: assert_int_equal(write(fd, "NFC1\1", 5), 5); break;       /* a header cut short */
  case 3: put_frame(fd, NFC_DATA, 0, 0, 0, data, 0, NFC_MAX_DATA + 1, false); break;
  case 4: put_frame(fd, NFC_DATA, 0, 1 << 20, 0, data, sizeof data, sizeof data, false); break;
  case 5:                                                   /* out of order */
    put_frame(fd, NFC_DATA, 0, 8192, 0, data, sizeof data, sizeof data, false);
    put_frame(fd, NFC_DATA, 0, 0, 0, data, sizeof data, sizeof data, false);
    break;
  }
  int r = stop_server(&s, fd);
  /* nothing of the refused chunk was written */
  char back[4096];
  int f = openat(dirfd, name, O_RDONLY);
  assert_true(f >= 0);
  assert_int_equal(pread(f, back, sizeof back, 0), (ssize_t)sizeof back);
  close(f);
  if (kind != 5)
    for (size_t i = 0; i < sizeof back; i++)
      assert_int_equal(back[i], 0);
  return r;
}

static void test_bad_frames(void **state)
{
  (void)state;
  assert_int_equal(bad_frame("crc.raw", 0), -EBADMSG);
  assert_int_equal(bad_frame("short.raw", 1), -ECONNRESET);
  assert_int_equal(bad_frame("cut.raw", 2), -ECONNRESET);
  assert_int_equal(bad_frame("big.raw", 3), -EMSGSIZE);
  assert_int_equal(bad_frame("outside.raw", 4), -EPROTO);
  assert_int_equal(bad_frame("order.raw", 5), -EPROTO);
}

/* A resume that finds its range still held by a connection that went silent (a link cut
 * without a reset) cuts that one short instead of waiting for its timeout, and goes on from
 * what it had made durable. */
static void test_takeover(void **state)
{
  char data[4096];
  struct server a = { 0 }, b = { 0 };
  uint8_t hdr[NFC_HDR_SIZE];
  struct nfc_hdr h;
  struct timespec t0, t1;
  (void)state;

  memset(data, 0x5a, sizeof data);
  int fa = start_server(&a);
  put_open(fa, "held.raw", 1 << 20);
  put_frame(fa, NFC_DATA, 0, 0, 0, data, sizeof data, sizeof data, false);
  put_frame(fa, NFC_DATA, 0, 4096, 0, data, sizeof data, sizeof data, false);
  /* READY from a; then a's receiver waits for more, for ever: a is silent, not closed */
  assert_int_equal(read(fa, hdr, sizeof hdr), (ssize_t)sizeof hdr);
  assert_int_equal(nfc_hdr_decode(hdr, &h), 0);
  assert_int_equal(h.type, NFC_READY);
  assert_int_equal(h.off, 0);
  /* b resumes the range once a's receiver has taken in every byte sent to it */
  for (int i = 0, queued = 1; queued > 0; i++) {
    struct timespec ts = { 0, 1000 * 1000 };
    assert_true(i < 10000);
    assert_int_equal(ioctl(a.fd, FIONREAD, &queued), 0);
    nanosleep(&ts, NULL);
  }
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int fb = start_server(&b);
  put_open(fb, "held.raw", 1 << 20);
  assert_int_equal(read(fb, hdr, sizeof hdr), (ssize_t)sizeof hdr);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  assert_int_equal(nfc_hdr_decode(hdr, &h), 0);
  assert_int_equal(h.type, NFC_READY);
  assert_int_equal(h.off, 8192);              /* a's two chunks, made durable as it went */
  assert_true(t1.tv_sec - t0.tv_sec < 10);    /* far from the 30 s it would have waited */
  pthread_join(a.th, NULL);
  assert_int_not_equal(a.r, 0);
  close(fa);
  stop_server(&b, fb);
}

/* ---- put, cut and resume ------------------------------------------------------------------ */

struct link {
  struct server s[SVM_NFC_MAX_STREAMS];
  unsigned n;
  uint64_t cut_after;           /* bytes on the wire, all streams (0: never) */
  uint64_t wire;
  pthread_mutex_t mu;
};

struct cut_fd {
  int fd;
  struct link *l;
};

static ssize_t cut_read(void *opaque, void *buf, size_t len)
{
  struct cut_fd *c = opaque;
  ssize_t n = read(c->fd, buf, len);
  return n < 0 ? -errno : n;
}

static ssize_t cut_write(void *opaque, const void *buf, size_t len)
{
  struct cut_fd *c = opaque;
  struct link *l = c->l;

  pthread_mutex_lock(&l->mu);
  if (l->cut_after > 0 && l->wire >= l->cut_after) {
    pthread_mutex_unlock(&l->mu);
    shutdown(c->fd, SHUT_RDWR);
    return -ECONNRESET;
  }
  if (l->cut_after > 0 && len > l->cut_after - l->wire)
    len = l->cut_after - l->wire;
  l->wire += len;
  pthread_mutex_unlock(&l->mu);
  ssize_t n = write(c->fd, buf, len);
  return n < 0 ? -errno : n;
}

static void cut_close(void *opaque)
{
  struct cut_fd *c = opaque;
  close(c->fd);
  free(c);
}

static const struct nfc_transport_ops cut_ops = { "test", cut_read, cut_write, cut_close,
                                                  NULL };

static int connect_pair(void *opaque, unsigned stream, struct nfc_conn **out)
{
  struct link *l = opaque;
  struct cut_fd *c = malloc(sizeof *c);

  pthread_mutex_lock(&l->mu);     /* streams connect from their own threads */
  struct server *s = &l->s[l->n++];
  pthread_mutex_unlock(&l->mu);

  (void)stream;
  assert_non_null(c);
  s->o.sync_bytes = 1 << 20;
  c->fd = start_server(s);
  c->l = l;
  return nfc_conn_new(&cut_ops, c, "test-receiver", out);
}

static void stop_link(struct link *l)
{
  for (unsigned i = 0; i < l->n; i++)
    pthread_join(l->s[i].th, NULL);
  l->n = 0;
}

static void make_source(const char *path, uint64_t size, unsigned seed)
{
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  char *b = malloc(1 << 20);
  assert_true(fd >= 0 && b != NULL);
  assert_int_equal(ftruncate(fd, (off_t)size), 0);
  srand(seed);
  /* every other MiB is data, some of it zeros */
  for (uint64_t off = 0; off < size; off += 2 << 20) {
    for (size_t i = 0; i < (1 << 20); i++)
      b[i] = (char)(i < 8192 ? 0 : rand());
    assert_int_equal(pwrite(fd, b, 1 << 20, (off_t)off), 1 << 20);
  }
  free(b);
  close(fd);
}

static void assert_same(const char *a, const char *name)
{
  int fa = open(a, O_RDONLY), fb = openat(dirfd, name, O_RDONLY);
  char *x = malloc(1 << 20), *y = malloc(1 << 20);
  ssize_t n;
  assert_true(fa >= 0 && fb >= 0);
  while ((n = read(fa, x, 1 << 20)) > 0) {
    assert_int_equal(read(fb, y, (size_t)n), n);
    assert_memory_equal(x, y, (size_t)n);
  }
  assert_int_equal(read(fb, y, 1), 0);
  free(x);
  free(y);
  close(fa);
  close(fb);
}

static void put_cut_resume(unsigned streams)
{
  char src[256], rec[300];
  uint64_t size = 64 << 20;
  struct link l = { .mu = PTHREAD_MUTEX_INITIALIZER };
  struct svm_nfc_put_options o = { .connect = connect_pair, .connect_opaque = &l,
                                   .streams = streams, .request_size = 256 << 10,
                                   .requests = 8 };
  struct svm_nfc_put_counters full = { 0 }, a = { 0 }, b = { 0 };

  snprintf(src, sizeof src, "%s.src", dir);
  make_source(src, size, streams);
  /* The whole copy once, to know what it costs on the wire. */
  assert_int_equal(svm_nfc_put_file(src, "full.raw", &o, &full), 0);
  stop_link(&l);
  assert_same(src, "full.raw");

  /* Cut somewhere between 10% and 90%, then again. */
  srand((unsigned)time(NULL));
  l.cut_after = full.bytes_wire / 10 + (uint64_t)rand() % (full.bytes_wire * 8 / 10);
  l.wire = 0;
  assert_int_not_equal(svm_nfc_put_file(src, "cut.raw", &o, &a), 0);
  stop_link(&l);
  uint64_t cut = l.cut_after;
  l.cut_after = 0;
  snprintf(rec, sizeof rec, ".cut.raw.nfc-0");
  assert_true(exists(rec));                    /* what was durable is recorded */
  assert_int_equal(svm_nfc_put_file(src, "cut.raw", &o, &b), 0);
  stop_link(&l);
  assert_same(src, "cut.raw");
  assert_false(exists(rec));                   /* committed: records gone */
  print_message("streams %u: full %llu B on the wire; cut at %llu; resumed with %llu "
                "(%llu B were durable)\n", streams, (unsigned long long)full.bytes_wire,
                (unsigned long long)cut, (unsigned long long)b.bytes_wire,
                (unsigned long long)b.bytes_resumed);
  /* Only about the rest travels again: what was sent in the first try but not yet durable
   * is at most one sync interval (1 MiB) per stream plus what sat in the socket buffers. */
  uint64_t rest = full.bytes_wire - cut;
  assert_true(b.bytes_wire >= rest / 2);
  assert_true(b.bytes_wire <= rest + streams * (3ull << 20));
  assert_true(b.bytes_resumed > 0);
  unlink(src);
}

/* A file of that name already there (an older copy, another disk): nothing of it survives
 * where the new source has holes or zeros. */
static void test_overwrite(void **state)
{
  char src[256];
  struct link l = { .mu = PTHREAD_MUTEX_INITIALIZER };
  struct svm_nfc_put_options o = { .connect = connect_pair, .connect_opaque = &l,
                                   .streams = 2 };
  char *junk = malloc(16 << 20);
  (void)state;

  assert_non_null(junk);
  memset(junk, 0xee, 16 << 20);
  int fd = openat(dirfd, "over.raw", O_RDWR | O_CREAT | O_TRUNC, 0600);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, junk, 16 << 20), 16 << 20);
  close(fd);
  free(junk);
  snprintf(src, sizeof src, "%s.over", dir);
  make_source(src, 16 << 20, 5);
  assert_int_equal(svm_nfc_put_file(src, "over.raw", &o, NULL), 0);
  stop_link(&l);
  assert_same(src, "over.raw");
  unlink(src);
}

static void test_resume_one_stream(void **state)
{
  (void)state;
  put_cut_resume(1);
}

static void test_resume_four_streams(void **state)
{
  (void)state;
  put_cut_resume(4);
}

/* Get: the other direction on one connection; the server only sends files of its folder. */
static void test_get(void **state)
{
  char src[300], local[] = "/tmp/test-nfc-get.XXXXXX", cmd[300];
  struct server s = { 0 };
  struct nfc_conn *c;
  struct nfc_recv_counters n;
  (void)state;

  snprintf(src, sizeof src, "%s/served.raw", dir);
  make_source(src, 8 << 20, 3);
  assert_non_null(mkdtemp(local));
  int lfd = open(local, O_RDONLY | O_DIRECTORY);
  assert_true(lfd >= 0);

  int fd = start_server(&s);
  assert_int_equal(nfc_conn_new_fd(fd, "test-server", &c), 0);
  assert_int_equal(svm_nfc_get(c, "served.raw", SVM_PROVISIONING_THIN, lfd, NULL, &n), 0);
  assert_true(n.bytes_data > 0 && n.files == 1);
  /* a second file on the same connection; names that leave the folder are refused here */
  assert_int_equal(svm_nfc_get(c, "../served.raw", SVM_PROVISIONING_THIN, lfd, NULL, &n),
                   -EINVAL);
  nfc_conn_free(c);
  pthread_join(s.th, NULL);
  assert_int_equal(s.r, 0);
  int tmp = dirfd;
  dirfd = lfd;
  assert_same(src, "served.raw");
  dirfd = tmp;

  /* A hostile client: GET of names that leave the folder, or of a link, refused. */
  assert_int_equal(symlinkat("served.raw", dirfd, "link-to-served"), 0);
  const char *bad[] = { "..", "../test-nfc-x", "a/b", "link-to-served", "missing.raw" };
  int want[] = { -EACCES, -EACCES, -EACCES, -ELOOP, -ENOENT };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    struct server s2 = { 0 };
    struct nfc_open o = { .provisioning = 0 };
    uint8_t buf[NFC_MAX_CTRL];
    snprintf(o.name, sizeof o.name, "%s", bad[i]);
    /* encode by hand: the encoder would not check, the decoder must */
    int len = nfc_open_encode(&o, buf, sizeof buf);
    assert_true(len > 0);
    int f = start_server(&s2);
    put_frame(f, NFC_GET, 0, 0, 0, buf, (uint32_t)len, (uint32_t)len, false);
    assert_int_equal(stop_server(&s2, f), want[i]);
  }
  unlinkat(dirfd, "link-to-served", 0);
  close(lfd);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", local);
  assert_int_equal(system(cmd), 0);
  unlink(src);
}

/* The cap: 8 MiB through a 32 MiB/s bucket cannot take less than about 0.25 s (the bucket's
 * 50 ms burst aside). Only a lower bound: a slow machine cannot make it fail. */
static void test_rate(void **state)
{
  struct nfc_rate *r;
  struct timespec t0, t1;
  (void)state;

  assert_int_equal(nfc_rate_new(0, &r), -EINVAL);
  assert_int_equal(nfc_rate_new(32 << 20, &r), 0);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < 64; i++)
    nfc_rate_take(r, 128 << 10);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  print_message("8 MiB at 32 MiB/s: %.3f s\n", s);
  assert_true(s >= 0.25 - 0.05 - 0.01);
  nfc_rate_free(r);
}

static int setup(void **state)
{
  (void)state;
  if (mkdtemp(dir) == NULL || (dirfd = open(dir, O_RDONLY | O_DIRECTORY)) < 0)
    return -1;
  return 0;
}

static int teardown(void **state)
{
  char cmd[300];
  (void)state;
  close(dirfd);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_frame_roundtrip),
    cmocka_unit_test(test_names),
    cmocka_unit_test(test_bad_frames),
    cmocka_unit_test(test_takeover),
    cmocka_unit_test(test_overwrite),
    cmocka_unit_test(test_resume_one_stream),
    cmocka_unit_test(test_resume_four_streams),
    cmocka_unit_test(test_get),
    cmocka_unit_test(test_rate),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
