/* The mirror under a real NBD export, as a datastore move uses it: libnbd clients (threads,
 * QD requests in flight each, overlapping writes, zeroes, trims and flushes) write to an export
 * served by 2 I/O threads; the stack raw_src is swapped for raw_src -> mirror(dst), the bulk
 * copy runs while they write, then the switchover: pause the export, check the mirror's status,
 * flush, and - with the clients still connected and their next requests waiting - the source
 * and the destination files must be identical byte for byte (every acknowledged request is on
 * both, none is half on one). Then the export swaps to the destination and resumes; the
 * clients go on writing there, and no request of any client fails at any point. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <time.h>

#include <cmocka.h>
#include <libnbd.h>

#include <svmotion/error.h>

#include "svm/mirror/mirror.h"
#include "svm/nbd/export.h"
#include "test-mirror-common.h"

enum { DISK = 32 << 20, NCLIENT = 3, QD = 8, MAXLEN = 128 << 10 };

struct ctx;

struct slot {
  struct client *c;
  bool busy;
  char *buf;
};

struct client {
  struct ctx *x;
  struct nbd_handle *h;
  pthread_t thread;
  unsigned seed;
  unsigned inflight;
  struct slot slots[QD];
};

struct ctx {
  char dir[64], src[128], dst[128], sock[128], uri[256];
  struct svm_export *e;
  struct client clients[NCLIENT];
  atomic_bool stop;
  atomic_uint_fast64_t done;
  atomic_int errors;
};

static int req_done(void *opaque, int *error)
{
  struct slot *s = opaque;

  if (*error) {
    print_error("request failed: %s\n", strerror(*error));
    atomic_fetch_add(&s->c->x->errors, 1);
  }
  s->busy = false;
  s->c->inflight--;
  atomic_fetch_add(&s->c->x->done, 1);
  return 1;
}

static void *client_main(void *arg)
{
  struct client *c = arg;
  struct ctx *x = c->x;

  while (!atomic_load(&x->stop) || c->inflight > 0) {
    for (unsigned i = 0; i < QD && !atomic_load(&x->stop); i++) {
      struct slot *s = &c->slots[i];
      nbd_completion_callback cb = { .callback = req_done, .user_data = s };
      unsigned r = (unsigned)rand_r(&c->seed) % 100;
      uint64_t len = 512 * (1 + (uint64_t)rand_r(&c->seed) % (MAXLEN / 512));
      uint64_t off = 512 * ((uint64_t)rand_r(&c->seed) % ((DISK - len) / 512 + 1));
      int64_t rc;

      if (s->busy)
        continue;
      for (uint64_t j = 0; j < len; j++)
        s->buf[j] = (char)rand_r(&c->seed);
      if (r < 70)
        rc = nbd_aio_pwrite(c->h, s->buf, len, off, cb,
                            r < 7 ? LIBNBD_CMD_FLAG_FUA : 0);
      else if (r < 85)
        rc = nbd_aio_zero(c->h, len, off, cb, r < 78 ? LIBNBD_CMD_FLAG_NO_HOLE : 0);
      else if (r < 95)
        rc = nbd_aio_trim(c->h, len, off, cb, 0);
      else
        rc = nbd_aio_flush(c->h, cb, 0);
      if (rc < 0) {
        print_error("sending a request: %s\n", nbd_get_error());
        atomic_fetch_add(&x->errors, 1);
        atomic_store(&x->stop, true);
        break;
      }
      s->busy = true;
      c->inflight++;
    }
    if (c->inflight > 0 && nbd_poll(c->h, -1) < 0) {
      print_error("nbd_poll: %s\n", nbd_get_error());
      atomic_fetch_add(&x->errors, 1);
      break;
    }
  }
  return NULL;
}

/* Wait (bounded) until the clients have completed n more requests. */
static void wait_requests(struct ctx *x, uint64_t n)
{
  uint64_t until = atomic_load(&x->done) + n;

  for (int i = 0; i < 60000 && atomic_load(&x->done) < until && !atomic_load(&x->errors); i++)
    nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
  assert_true(atomic_load(&x->done) >= until);
}

static void test_move(void **state)
{
  struct ctx *x = calloc(1, sizeof *x);
  struct svm_export_opts eo = { .name = "vm1/disk0", .threads = 2, .queue_depth = 16 };
  struct svm_mirror_opts mo = { .request_size = 256 << 10, .requests = 8,
                                .dst_reads_zero = true };
  struct svm_layer *raw, *dst, *top, *old;
  struct svm_mirror *m;
  struct svm_mirror_counters c;
  char *a, *b, *junk;
  int fd;

  (void)state;
  assert_non_null(x);
  strcpy(x->dir, "/tmp/svm-mirror-export-XXXXXX");
  assert_non_null(mkdtemp(x->dir));
  snprintf(x->src, sizeof x->src, "%s/src.raw", x->dir);
  snprintf(x->dst, sizeof x->dst, "%s/dst.raw", x->dir);
  snprintf(x->sock, sizeof x->sock, "%s/nbd.sock", x->dir);
  snprintf(x->uri, sizeof x->uri, "nbd+unix:///vm1/disk0?socket=%s", x->sock);
  /* a half-allocated source, a fresh sparse destination */
  junk = malloc(DISK / 2);
  assert_non_null(junk);
  for (size_t i = 0; i < DISK / 2; i++)
    junk[i] = (char)(i * 7 + 3);
  fd = open(x->src, O_RDWR | O_CREAT | O_EXCL, 0600);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, junk, DISK / 2, DISK / 4), DISK / 2);
  assert_int_equal(ftruncate(fd, DISK), 0);
  close(fd);
  free(junk);
  fd = open(x->dst, O_RDWR | O_CREAT | O_EXCL, 0600);
  assert_true(fd >= 0 && ftruncate(fd, DISK) == 0);
  close(fd);

  assert_int_equal(svm_layer_open_raw(x->src, false, &raw), 0);
  assert_int_equal(svm_export_new(&eo, raw, &x->e), 0);
  assert_int_equal(svm_export_listen_unix(x->e, x->sock), 0);
  for (unsigned i = 0; i < NCLIENT; i++) {
    struct client *cl = &x->clients[i];
    cl->x = x;
    cl->seed = 17u * i + 1;
    cl->h = nbd_create();
    assert_non_null(cl->h);
    if (nbd_connect_uri(cl->h, x->uri) < 0)
      fail_msg("connect %s: %s", x->uri, nbd_get_error());
    for (unsigned j = 0; j < QD; j++) {
      cl->slots[j].c = cl;
      cl->slots[j].buf = malloc(MAXLEN);
      assert_non_null(cl->slots[j].buf);
    }
    assert_int_equal(pthread_create(&cl->thread, NULL, client_main, cl), 0);
  }
  wait_requests(x, 200);

  /* the mirror goes in under the writing clients */
  assert_int_equal(svm_layer_open_raw(x->src, false, &raw), 0);
  assert_int_equal(svm_layer_open_raw(x->dst, false, &dst), 0);
  assert_int_equal(svm_mirror_new(raw, dst, &mo, &top, &m), 0);
  assert_int_equal(svm_export_swap(x->e, top, &old, NULL), 0);
  svm_layer_free(old);
  if (svm_mirror_run(m) != 0)
    fail_msg("the bulk copy failed: %s", svm_last_error());
  wait_requests(x, 300);                  /* mirrored: every write to both */

  /* the switchover */
  assert_int_equal(svm_export_pause(x->e, 60ull * 1000 * 1000 * 1000), 0);
  assert_int_equal(svm_mirror_status(m), 0);
  svm_mirror_get_counters(m, &c);
  assert_int_equal(svm_layer_flush_sync(dst), 0);
  a = file_read_all(x->src, DISK);
  b = file_read_all(x->dst, DISK);
  for (uint64_t i = 0; i < DISK; i++)
    if (a[i] != b[i])
      fail_msg("paused: the destination differs from the source at offset %llu",
               (unsigned long long)i);
  free(a);
  free(b);
  assert_int_equal(svm_layer_open_raw(x->dst, false, &raw), 0);
  assert_int_equal(svm_export_swap(x->e, raw, &old, NULL), 0);   /* nested in the pause */
  assert_int_equal(svm_export_resume(x->e, NULL), 0);
  svm_layer_free(old);                    /* the mirror and the source */
  svm_layer_free(dst);                    /* the mirror's destination, after the mirror */
  wait_requests(x, 200);                  /* on the destination now */

  atomic_store(&x->stop, true);
  for (unsigned i = 0; i < NCLIENT; i++) {
    pthread_join(x->clients[i].thread, NULL);
    nbd_close(x->clients[i].h);
    for (unsigned j = 0; j < QD; j++)
      free(x->clients[i].slots[j].buf);
  }
  svm_export_free(x->e);
  assert_int_equal(atomic_load(&x->errors), 0);
  print_message("mirror under an export: %" PRIu64 " requests, %" PRIu64 " bytes copied, %"
                PRIu64 " mirrored, %" PRIu64 " parked\n", (uint64_t)atomic_load(&x->done),
                c.bytes_copied, c.bytes_mirrored, c.writes_parked);
  unlink(x->src);
  unlink(x->dst);
  unlink(x->sock);
  rmdir(x->dir);
  free(x);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_move),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
