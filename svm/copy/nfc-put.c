/* Putting a file over NFC: the file's data is split between N streams (ranges that tile the
 * file, each holding about 1/N of the data), every stream OPENs its range, learns what is
 * already durable on the receiver, and runs a copy engine of its own (a file end reading, an
 * NFC end sending) over what is left of its range, on a thread of its own. When every stream
 * has ENDed, the first one COMMITs the file. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/crc32c.h"
#include "common/error.h"
#include "svm/copy/nfc.h"
#include "svm/disk/extents.h"

enum { RANGE_ALIGN = 1 << 20 };

struct put;

struct stream {
  struct put *p;
  unsigned idx;
  struct nfc_conn *conn;
  struct nfc_open o;          /* this stream's range */
  uint64_t resume;
  struct svm_copy_counters cc;
  uint64_t done;              /* progress of this stream's engine */
  int err;
  char errmsg[512];
  pthread_t th;
  bool started;
};

struct put {
  const struct svm_nfc_put_options *opt;
  const char *path;
  int fd, fd_buffered;
  bool direct;
  uint64_t size;
  struct svm_extent_list map;
  struct stream s[SVM_NFC_MAX_STREAMS];
  unsigned n;
  pthread_mutex_t mu;         /* progress */
  uint64_t resumed_total;
};

/* What identifies the source's content: a receiver's record of another source is void. */
static uint64_t source_id(const struct stat *st)
{
  uint64_t v[5] = { (uint64_t)st->st_dev, (uint64_t)st->st_ino, (uint64_t)st->st_size,
                    (uint64_t)st->st_mtim.tv_sec, (uint64_t)st->st_mtim.tv_nsec };
  return (uint64_t)svm_crc32c(0, v, sizeof v) << 32 | svm_crc32c(0x5eed, v, sizeof v);
}

/* Ranges holding about size/n data bytes each, on 1 MiB boundaries. */
static void split(struct put *p, unsigned want)
{
  uint64_t data = 0, acc = 0, start = 0;
  unsigned k = 0;

  for (size_t i = 0; i < p->map.n; i++)
    if (!(p->map.v[i].flags & SVM_EXTENT_ZERO))
      data += p->map.v[i].len;
  for (size_t i = 0; i < p->map.n && k + 1 < want; i++) {
    const struct svm_extent *e = &p->map.v[i];
    if (e->flags & SVM_EXTENT_ZERO)
      continue;
    uint64_t target = data / want * (k + 1);
    if (acc + e->len >= target) {
      uint64_t cut = e->off + (target - acc);
      cut = (cut + RANGE_ALIGN - 1) / RANGE_ALIGN * RANGE_ALIGN;
      if (cut > start && cut < p->size) {
        p->s[k].o.start = start;
        p->s[k].o.end = cut;
        start = cut;
        k++;
      }
    }
    acc += e->len;
  }
  p->s[k].o.start = start;
  p->s[k].o.end = p->size;
  p->n = k + 1;
}

static void on_progress(void *opaque, uint64_t done, uint64_t total)
{
  struct stream *s = opaque;
  struct put *p = s->p;
  uint64_t sum = p->resumed_total;

  (void)total;
  pthread_mutex_lock(&p->mu);
  s->done = done;
  for (unsigned i = 0; i < p->n; i++)
    sum += p->s[i].done;
  if (p->opt->progress)
    p->opt->progress(p->opt->progress_opaque, sum, p->size);
  pthread_mutex_unlock(&p->mu);
}

static int connect_and_open(struct put *p, struct stream *s)
{
  int r;

  if ((r = p->opt->connect(p->opt->connect_opaque, s->idx, &s->conn)) < 0)
    return r;
  if (p->opt->rate)
    nfc_conn_set_rate(s->conn, p->opt->rate);
  return nfc_send_open(s->conn, &s->o, s->idx == 0, &s->resume);
}

/* The engine over what is left of the range: [resume, end). */
static int copy_range(struct put *p, struct stream *s)
{
  struct svm_extent_list l;
  struct svm_copy_end *src = NULL, *dst = NULL;
  struct svm_copy *c = NULL;
  int r;

  svm_extent_list_init(&l);
  for (size_t i = 0; i < p->map.n; i++) {
    const struct svm_extent *e = &p->map.v[i];
    uint64_t a = e->off > s->resume ? e->off : s->resume;
    uint64_t b = e->off + e->len < s->o.end ? e->off + e->len : s->o.end;
    if (a < b && (r = svm_extent_list_add(&l, a, b - a, e->flags)) < 0)
      goto out;
  }
  /* The engine copies [0, size) of its map: its ends say the file's size, the map says what. */
  /* The default depth is shared by the streams: N streams keep about as much in flight (and
   * as many buffers to fault in) as one. */
  unsigned requests = p->opt->requests;
  if (requests == 0)
    requests = SVM_COPY_DEFAULT_REQUESTS / p->n < 8 ? 8 : SVM_COPY_DEFAULT_REQUESTS / p->n;
  struct svm_copy_options co = { .request_size = p->opt->request_size,
                                 .requests = requests,
                                 .dst_reads_zero = false,   /* zero ranges travel as frames */
                                 .progress = on_progress, .progress_opaque = s,
                                 .cancel = p->opt->cancel };
  if ((r = svm_copy_file_end_new(p->path, p->fd, p->fd_buffered, p->direct, p->size, false,
                                 &src)) < 0 ||
      (r = svm_copy_nfc_end_new(s->o.name, s->conn, p->size, &dst)) < 0 ||
      (r = svm_copy_new(src, dst, &co, &c)) < 0)
    goto out;
  r = svm_copy_run(c, &l);
  svm_copy_get_counters(c, &s->cc);
  if (r == 0)
    r = svm_copy_end_finish(dst);
out:
  svm_copy_end_free(src);     /* ends first: see svm_copy_free() */
  svm_copy_end_free(dst);
  svm_copy_free(c);
  svm_extent_list_free(&l);
  return r;
}

static void *stream_main(void *opaque)
{
  struct stream *s = opaque;
  int r = 0;

  if (s->conn == NULL)
    r = connect_and_open(s->p, s);
  if (r == 0)
    r = copy_range(s->p, s);
  if (r < 0) {
    s->err = r;
    snprintf(s->errmsg, sizeof s->errmsg, "%s", svm_last_error());
  }
  return NULL;
}

/* Open the source: a path, or a name confined to dirfd (a GET from the network). */
static int open_source(struct put *p, int dirfd, const char *path)
{
  int fl;

  p->fd_buffered = dirfd >= 0 ? openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
                              : open(path, O_RDONLY | O_CLOEXEC);
  if (p->fd_buffered < 0)
    return svm_error(errno, "%s: %s", path, strerror(errno));
  /* A second descriptor for O_DIRECT reads where the file system allows them. */
  p->fd = dirfd >= 0 ? openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
                     : open(path, O_RDONLY | O_CLOEXEC);
  if (p->fd < 0)
    return svm_error(errno, "%s: %s", path, strerror(errno));
  fl = fcntl(p->fd, F_GETFL);
  p->direct = fl >= 0 && fcntl(p->fd, F_SETFL, fl | O_DIRECT) == 0;
  return 0;
}

/* borrowed: send on this connection (one stream), which stays the caller's. */
static int put(int dirfd, const char *path, const char *name,
               const struct svm_nfc_put_options *o, struct nfc_conn *borrowed,
               struct svm_nfc_put_counters *n)
{
  struct put *p;
  struct stat st;
  int r;

  if (!nfc_name_ok(name))
    return svm_error(EINVAL, "'%s': not a plain file name (no '/', not '..')", name);
  if (o->streams > SVM_NFC_MAX_STREAMS)
    return svm_error(EINVAL, "--nfc-streams %u: at most %d", o->streams, SVM_NFC_MAX_STREAMS);
  if (borrowed == NULL && o->connect == NULL)
    return svm_error(EINVAL, "internal error: no way to connect");
  if ((p = calloc(1, sizeof *p)) == NULL)
    return svm_error(ENOMEM, "out of memory");
  p->opt = o;
  p->path = path;
  p->fd = p->fd_buffered = -1;
  pthread_mutex_init(&p->mu, NULL);
  svm_extent_list_init(&p->map);
  if ((r = open_source(p, dirfd, path)) < 0)
    goto out;
  if (fstat(p->fd_buffered, &st) < 0 || !S_ISREG(st.st_mode)) {
    r = svm_error(EINVAL, "%s: not a regular file", path);
    goto out;
  }
  p->size = (uint64_t)st.st_size;
  if ((r = svm_extents_scan(p->fd_buffered, 0, p->size, &p->map)) < 0) {
    r = svm_error(-r, "%s: cannot map its extents: %s", path, strerror(-r));
    goto out;
  }
  split(p, borrowed != NULL || o->streams == 0 ? 1 : o->streams);
  struct nfc_open commit = { .size = p->size, .source_id = source_id(&st),
                             .provisioning = (uint32_t)o->provisioning, .end = p->size,
                             .nranges = p->n };
  snprintf(commit.name, sizeof commit.name, "%s", name);
  for (unsigned i = 0; i < p->n; i++) {
    struct stream *s = &p->s[i];
    s->p = p;
    s->idx = i;
    commit.ranges[i][0] = s->o.start;
    commit.ranges[i][1] = s->o.end;
    uint64_t start = s->o.start, end = s->o.end;
    s->o = commit;
    s->o.start = start;
    s->o.end = end;
    s->o.nranges = 0;
  }
  /* The first stream creates the file before any other opens it. */
  if (borrowed != NULL) {
    p->s[0].conn = borrowed;
    if (o->rate)
      nfc_conn_set_rate(borrowed, o->rate);
    if ((r = nfc_send_open(borrowed, &p->s[0].o, true, &p->s[0].resume)) < 0)
      goto out;
  } else if ((r = connect_and_open(p, &p->s[0])) < 0) {
    goto out;
  }
  p->resumed_total = p->s[0].resume - p->s[0].o.start;
  for (unsigned i = 0; i < p->n; i++) {
    if (pthread_create(&p->s[i].th, NULL, stream_main, &p->s[i]) != 0) {
      r = svm_error(EAGAIN, "cannot start a thread for stream %u", i);
      break;
    }
    p->s[i].started = true;
  }
  for (unsigned i = 0; i < p->n; i++)
    if (p->s[i].started)
      pthread_join(p->s[i].th, NULL);
  for (unsigned i = 0; i < p->n && r == 0; i++)
    if (p->s[i].err < 0)
      r = svm_error(-p->s[i].err, "%s", p->s[i].errmsg);
  if (r == 0)
    r = nfc_send_commit(p->s[0].conn, &commit);
out:
  if (n != NULL) {
    for (unsigned i = 0; i < p->n; i++) {
      struct stream *s = &p->s[i];
      if (s->conn != NULL)
        n->bytes_wire += nfc_conn_bytes_sent(s->conn);
      n->bytes_data += s->cc.bytes_written;
      n->bytes_zero += s->cc.bytes_zeroed + s->cc.bytes_skipped_zero;
      if (s->conn != NULL)
        n->bytes_resumed += s->resume - s->o.start;
    }
    if (r == 0)
      n->files++;
  }
  for (unsigned i = 0; i < p->n; i++)
    if (p->s[i].conn != borrowed)
      nfc_conn_free(p->s[i].conn);
  if (p->fd >= 0)
    close(p->fd);
  if (p->fd_buffered >= 0)
    close(p->fd_buffered);
  svm_extent_list_free(&p->map);
  pthread_mutex_destroy(&p->mu);
  free(p);
  return r;
}

int svm_nfc_put_file(const char *path, const char *name, const struct svm_nfc_put_options *o,
                     struct svm_nfc_put_counters *n)
{
  return put(-1, path, name, o, NULL, n);
}

int svm_nfc_put_on(struct nfc_conn *c, int dirfd, const char *name,
                   const struct svm_nfc_put_options *o, struct svm_nfc_put_counters *n)
{
  if (!nfc_name_ok(name))
    return svm_error(EINVAL, "'%s': not a plain file name (no '/', not '..')", name);
  return put(dirfd, name, name, o, c, n);
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
  return strcmp((*a)->d_name, (*b)->d_name);
}

int svm_nfc_put_folder(const char *dir, const struct svm_nfc_put_options *o,
                       struct svm_nfc_put_counters *n)
{
  struct dirent **ents = NULL;
  int k = scandir(dir, &ents, NULL, by_name), r = 0;

  if (k < 0)
    return svm_error(errno, "%s: %s", dir, strerror(errno));
  for (int i = 0; i < k; i++) {
    CLEANUP_FREE char *path = NULL;
    struct stat st;
    if (r == 0 && strcmp(ents[i]->d_name, ".") != 0 && strcmp(ents[i]->d_name, "..") != 0 &&
        asprintf(&path, "%s/%s", dir, ents[i]->d_name) > 0 && lstat(path, &st) == 0 &&
        S_ISREG(st.st_mode))
      r = svm_nfc_put_file(path, ents[i]->d_name, o, n);
    free(ents[i]);
  }
  free(ents);
  return r;
}
