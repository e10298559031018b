/* The receiver's side of the NFC protocol (see nfc.h): a state machine per connection that
 * trusts nothing from the network - names are checked and confined to the folder, every frame
 * is checked against the open range and the order before its data is used - and a small
 * durable progress record per range that makes a dropped copy resumable.
 *
 * Progress record ".NAME.nfc-START" (48 bytes, big-endian, CRC-32C last):
 *     magic "NFCPROG1", size, source id, start, end, durable high-water mark, crc (4) + pad.
 * Written after the data below the mark was made durable; a torn or foreign record is void
 * and the range starts over. Data arrives in file order per range, so everything below the
 * mark is there. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/error.h"
#include "nfc/nfc.h"

enum { REC_SIZE = 56 };
static const char REC_MAGIC[8] = "NFCPROG1";

/* Connections holding a range, by their record's inode: a resume that finds its range held
 * cuts the holder short rather than waiting for its timeout. */
struct holder {
  dev_t dev;
  ino_t ino;
  struct nfc_conn *c;
  struct holder *next;
};
static pthread_mutex_t holders_mu = PTHREAD_MUTEX_INITIALIZER;
static struct holder *holders;

struct range_state {
  struct holder h;            /* on the holders list while the range is locked */
  bool held;
  struct nfc_open o;
  void *file;
  int recfd;
  uint64_t pos;               /* where the next frame may start (file order) */
  uint64_t durable;           /* the record's mark */
  uint64_t unsynced;          /* bytes since the last sync */
  uint64_t last_sync_ns;
};

static void put64(uint8_t *p, uint64_t v)
{
  for (int i = 7; i >= 0; i--, v >>= 8)
    p[i] = (uint8_t)v;
}

static uint64_t get64(const uint8_t *p)
{
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = v << 8 | p[i];
  return v;
}

static uint64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int nfc_record_name(const char *name, uint64_t start, char *out, size_t cap)
{
  int n = snprintf(out, cap, ".%s.nfc-%" PRIx64, name, start);
  return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

static int open_record(int dirfd, const struct nfc_open *o, uint64_t start, int flags)
{
  char rec[NFC_MAX_NAME + 32];
  int fd;

  if (nfc_record_name(o->name, start, rec, sizeof rec) < 0)
    return svm_error(ENAMETOOLONG, "%s: name too long for a progress record", o->name);
  fd = openat(dirfd, rec, flags | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  return fd;
}

/* The durable mark the record holds for this range of this source, or start. */
static uint64_t read_record(int fd, const struct nfc_open *o)
{
  uint8_t b[REC_SIZE];

  if (pread(fd, b, sizeof b, 0) != (ssize_t)sizeof b || memcmp(b, REC_MAGIC, 8) != 0 ||
      get64(b + 48) != svm_crc32c(0, b, 48))
    return o->start;
  uint64_t mark = get64(b + 40);
  if (get64(b + 8) != o->size || get64(b + 16) != o->source_id || get64(b + 24) != o->start ||
      get64(b + 32) != o->end || mark < o->start || mark > o->end)
    return o->start;
  return mark;
}

static int write_record(int fd, const struct nfc_open *o, uint64_t mark)
{
  uint8_t b[REC_SIZE] = { 0 };

  memcpy(b, REC_MAGIC, 8);
  put64(b + 8, o->size);
  put64(b + 16, o->source_id);
  put64(b + 24, o->start);
  put64(b + 32, o->end);
  put64(b + 40, mark);
  put64(b + 48, svm_crc32c(0, b, 48));
  if (pwrite(fd, b, sizeof b, 0) != (ssize_t)sizeof b || fdatasync(fd) < 0)
    return svm_error(errno ? errno : EIO, "%s: cannot write its progress record: %s",
                     o->name, strerror(errno ? errno : EIO));
  return 0;
}

/* Make the data durable, then move the record's mark to pos. */
static int checkpoint(const struct nfc_sink_ops *sink, struct range_state *st)
{
  int r;

  if ((r = sink->sync(st->file)) < 0)
    return r;
  st->unsynced = 0;
  st->last_sync_ns = now_ns();
  if (st->pos == st->durable)
    return 0;
  if ((r = write_record(st->recfd, &st->o, st->pos)) < 0)
    return r;
  st->durable = st->pos;
  return 0;
}

static void unhold(struct range_state *st)
{
  if (!st->held)
    return;
  pthread_mutex_lock(&holders_mu);
  for (struct holder **p = &holders; *p != NULL; p = &(*p)->next) {
    if (*p == &st->h) {
      *p = st->h.next;
      break;
    }
  }
  pthread_mutex_unlock(&holders_mu);
  st->held = false;
}

static void range_close(const struct nfc_sink_ops *sink, struct range_state *st)
{
  unhold(st);
  if (st->file != NULL)
    sink->close(st->file);
  if (st->recfd >= 0)
    close(st->recfd);
  st->file = NULL;
  st->recfd = -1;
}

/* One connection per range at a time: a sender that resumes right after a cut may reach us
 * before the dropped connection's thread has made its last data durable and moved the mark, or
 * while that connection still waits on a link that was cut without a reset. The lock (on the
 * record, per open file description) is held until the range is closed; a newcomer aborts the
 * holder's transport (the newest sender wins), lets it checkpoint and close, then goes on. A
 * holder that cannot be aborted keeps the range until its transport's timeout; after
 * lock_wait_ms the newcomer gives up and the sender may try again. */
static int lock_range(struct nfc_conn *c, struct range_state *st, unsigned wait_ms)
{
  struct stat sb;

  if (fstat(st->recfd, &sb) < 0)
    return svm_error(errno, "%s: progress record: %s", st->o.name, strerror(errno));
  for (unsigned waited = 0; flock(st->recfd, LOCK_EX | LOCK_NB) < 0; waited += 10) {
    if (errno != EWOULDBLOCK)
      return svm_error(errno, "%s: cannot lock its progress record: %s", st->o.name,
                       strerror(errno));
    if (waited == 0) {          /* the holder is a connection of ours: cut it short */
      pthread_mutex_lock(&holders_mu);
      for (struct holder *h = holders; h != NULL; h = h->next)
        if (h->dev == sb.st_dev && h->ino == sb.st_ino)
          nfc_conn_abort(h->c);
      pthread_mutex_unlock(&holders_mu);
    }
    if (waited >= wait_ms)
      return svm_error(EBUSY, "%s: %s: another connection still receives this range: try "
                       "again once it has timed out", nfc_conn_peer(c), st->o.name);
    struct timespec ts = { 0, 10 * 1000 * 1000 };
    nanosleep(&ts, NULL);
  }
  st->h = (struct holder){ .dev = sb.st_dev, .ino = sb.st_ino, .c = c };
  pthread_mutex_lock(&holders_mu);
  st->h.next = holders;
  holders = &st->h;
  pthread_mutex_unlock(&holders_mu);
  st->held = true;
  return 0;
}

/* OPEN: the range's durable mark from its record; a fresh first stream starts the file. */
static int do_open(struct nfc_conn *c, int dirfd, const struct nfc_sink_ops *sink, void *opaque,
                   const struct nfc_hdr *h, const uint8_t *payload, struct range_state *st,
                   unsigned lock_wait_ms)
{
  bool create = h->flags & NFC_OPEN_CREATE;
  int r = nfc_open_decode(payload, h->len, &st->o);

  if (r == -EACCES)
    return svm_error(EACCES, "%s: refused a file name that would leave the folder or is not "
                     "a plain name", nfc_conn_peer(c));
  if (r < 0 || st->o.nranges != 0)
    return svm_error(EPROTO, "%s: protocol error: bad OPEN", nfc_conn_peer(c));
  if ((st->recfd = open_record(dirfd, &st->o, st->o.start, O_RDWR | O_CREAT)) < 0)
    return svm_error(-st->recfd, "%s: cannot open its progress record: %s", st->o.name,
                     strerror(-st->recfd));
  if ((r = lock_range(c, st, lock_wait_ms)) < 0)
    return r;
  st->durable = read_record(st->recfd, &st->o);
  /* A first stream with nothing durable starts the file anew; anything else resumes it. */
  bool fresh = create && st->durable == st->o.start;
  if ((r = sink->open(opaque, dirfd, &st->o, fresh, &st->file)) < 0)
    return r;
  /* Whatever an earlier attempt (or an older file of that name) holds past the mark is not
   * trusted: it reads as zeros again (zero ranges of the source are then never written). */
  if (st->durable < st->o.end &&
      (r = sink->discard(st->file, st->durable, st->o.end - st->durable)) < 0)
    return r;
  if ((r = write_record(st->recfd, &st->o, st->durable)) < 0)
    return r;
  st->pos = st->durable;
  st->unsynced = 0;
  st->last_sync_ns = now_ns();
  struct nfc_hdr ready = { .type = NFC_READY, .off = st->durable };
  if ((r = nfc_conn_send(c, &ready, NULL)) < 0)
    return svm_error(-r, "%s: sending READY: %s", nfc_conn_peer(c), strerror(-r));
  return 0;
}

/* DATA or ZERO: inside the range, in file order. */
static int check_place(struct nfc_conn *c, const struct range_state *st, uint64_t off,
                       uint64_t len)
{
  if (st->file == NULL)
    return svm_error(EPROTO, "%s: protocol error: data before OPEN", nfc_conn_peer(c));
  if (off < st->pos || off > st->o.end || len > st->o.end - off)
    return svm_error(EPROTO, "%s: protocol error: %s: %" PRIu64 " bytes at offset %" PRIu64
                     " outside the range [%" PRIu64 ", %" PRIu64 ") or out of order",
                     nfc_conn_peer(c), st->o.name, len, off, st->pos, st->o.end);
  return 0;
}

static int do_data(struct nfc_conn *c, const struct nfc_sink_ops *sink,
                   const struct nfc_recv_options *o, const struct nfc_hdr *h,
                   struct range_state *st, struct nfc_recv_counters *n)
{
  void *buf;
  int r;

  if ((r = check_place(c, st, h->off, h->type == NFC_DATA ? h->len : h->count)) < 0)
    return r;
  if (h->type == NFC_DATA) {
    if ((r = sink->buffer(st->file, h->len, &buf)) < 0)
      return r;
    r = nfc_conn_recv_payload(c, h, buf);
    if (r == -EBADMSG)
      return svm_error(EBADMSG, "%s: %s: the chunk at offset %" PRIu64 " failed its CRC-32C "
                       "check: nothing of it was written", nfc_conn_peer(c), st->o.name,
                       h->off);
    if (r < 0)
      return svm_error(-r, "%s: %s: receiving offset %" PRIu64 ": %s", nfc_conn_peer(c),
                       st->o.name, h->off, r == -ECONNRESET ? "connection closed"
                                                             : strerror(-r));
    if ((r = sink->write(st->file, buf, h->len, h->off)) < 0)
      return r;
    st->pos = h->off + h->len;
    st->unsynced += h->len;
    n->bytes_data += h->len;
  } else {
    /* The range reads as zeros already (fresh, or discarded at OPEN). */
    st->pos = h->off + h->count;
    n->bytes_zero += h->count;
  }
  if (st->unsynced >= o->sync_bytes ||
      now_ns() - st->last_sync_ns >= (uint64_t)o->sync_ms * 1000000u)
    return checkpoint(sink, st);
  return 0;
}

static int do_end(struct nfc_conn *c, const struct nfc_sink_ops *sink, struct range_state *st)
{
  int r;

  if (st->file == NULL)
    return svm_error(EPROTO, "%s: protocol error: END before OPEN", nfc_conn_peer(c));
  st->pos = st->o.end;          /* what was not sent reads as zeros */
  if ((r = checkpoint(sink, st)) < 0)
    return r;
  range_close(sink, st);
  struct nfc_hdr done = { .type = NFC_DONE };
  return nfc_conn_send(c, &done, NULL);
}

/* Every record of the file goes, also those an earlier attempt with another number of
 * streams left. */
static void remove_records(int dirfd, const char *name)
{
  char prefix[NFC_MAX_NAME + 8];
  int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
  struct dirent *e;

  if (d == NULL) {
    if (fd >= 0)
      close(fd);
    return;
  }
  snprintf(prefix, sizeof prefix, ".%s.nfc-", name);
  while ((e = readdir(d)) != NULL)
    if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
      unlinkat(dirfd, e->d_name, 0);
  closedir(d);
}

/* COMMIT: every range must be durable to its end; then the records go. */
static int do_commit(struct nfc_conn *c, int dirfd, const struct nfc_sink_ops *sink,
                     void *opaque, const struct nfc_hdr *h, const uint8_t *payload,
                     struct nfc_recv_counters *n)
{
  struct nfc_open o, ro;
  int r = nfc_open_decode(payload, h->len, &o);

  if (r == -EACCES)
    return svm_error(EACCES, "%s: refused a file name that would leave the folder",
                     nfc_conn_peer(c));
  if (r < 0 || o.nranges == 0)
    return svm_error(EPROTO, "%s: protocol error: bad COMMIT", nfc_conn_peer(c));
  for (uint32_t i = 0; i < o.nranges; i++) {
    ro = o;
    ro.start = o.ranges[i][0];
    ro.end = o.ranges[i][1];
    int fd = open_record(dirfd, &o, ro.start, O_RDONLY);
    uint64_t mark = fd >= 0 ? read_record(fd, &ro) : ro.start;
    if (fd >= 0)
      close(fd);
    if (mark != ro.end && ro.end > ro.start)
      return svm_error(EPROTO, "%s: COMMIT of %s, but its range [%" PRIu64 ", %" PRIu64
                       ") is durable only up to %" PRIu64, nfc_conn_peer(c), o.name,
                       ro.start, ro.end, mark);
  }
  if ((r = sink->commit(opaque, dirfd, &o)) < 0)
    return r;
  remove_records(dirfd, o.name);
  if (fsync(dirfd) < 0)
    return svm_error(errno, "%s: fsync of its folder: %s", o.name, strerror(errno));
  n->files++;
  struct nfc_hdr done = { .type = NFC_DONE };
  return nfc_conn_send(c, &done, NULL);
}

/* GET: the roles turn for one file. */
static int do_get(struct nfc_conn *c, int dirfd, const struct nfc_sink_ops *sink, void *opaque,
                  const struct nfc_hdr *h, const uint8_t *payload)
{
  struct nfc_open o;
  int r = nfc_open_decode(payload, h->len, &o);

  if (r == -EACCES)
    return svm_error(EACCES, "%s: refused a GET of a name that would leave the folder",
                     nfc_conn_peer(c));
  if (r < 0)
    return svm_error(EPROTO, "%s: protocol error: bad GET", nfc_conn_peer(c));
  if (sink->get == NULL)
    return svm_error(EPERM, "%s: GET of %s: this receiver does not send files",
                     nfc_conn_peer(c), o.name);
  return sink->get(opaque, dirfd, &o, c);
}

/* The receiver's loop; one_file: return after the first COMMIT (the client side of a GET). */
static int serve(struct nfc_conn *c, int dirfd, const struct nfc_sink_ops *sink, void *opaque,
                 const struct nfc_recv_options *opts, struct nfc_recv_counters *n,
                 bool one_file)
{
  struct nfc_recv_options o = opts ? *opts : (struct nfc_recv_options){ 0 };
  struct nfc_recv_counters dummy;
  struct range_state st = { .recfd = -1 };
  uint8_t ctrl[NFC_MAX_CTRL];
  struct nfc_hdr h;
  int r;

  if (o.sync_bytes == 0)
    o.sync_bytes = 64 << 20;
  if (o.sync_ms == 0)
    o.sync_ms = 1000;
  if (o.lock_wait_ms == 0)
    o.lock_wait_ms = 30000;
  if (n == NULL)
    n = &dummy;
  memset(n, 0, sizeof *n);
  for (;;) {
    h = (struct nfc_hdr){ 0 };
    r = nfc_conn_recv_hdr(c, &h);
    if (r == -ENODATA && st.file == NULL && !one_file) {
      r = 0;                    /* the sender is done with this connection */
      break;
    }
    if (r < 0) {
      const char *why = r == -ENODATA || r == -ECONNRESET ? "connection dropped"
                        : r == -EMSGSIZE ? "a frame longer than the protocol allows"
                        : r == -EPROTO || r == -EPROTONOSUPPORT ? "protocol error: bad frame header"
                                                                : strerror(-r);
      if (st.file != NULL)
        r = svm_error(-r, "%s: %s: %s at offset %" PRIu64 " (durable up to %" PRIu64 "; the "
                      "sender may resume)", nfc_conn_peer(c), st.o.name, why, st.pos,
                      st.durable);
      else
        r = svm_error(-r, "%s: %s", nfc_conn_peer(c), why);
      break;
    }
    if (h.type == NFC_DATA || h.type == NFC_ZERO) {
      r = do_data(c, sink, &o, &h, &st, n);
    } else if (h.type == NFC_OPEN || h.type == NFC_COMMIT || (h.type == NFC_GET && !one_file)) {
      if ((r = nfc_conn_recv_payload(c, &h, ctrl)) < 0) {
        r = svm_error(-r, "%s: %s", nfc_conn_peer(c),
                      r == -EBADMSG ? "a control frame failed its CRC-32C check"
                                    : "connection dropped");
      } else if (st.file != NULL) {
        r = svm_error(EPROTO, "%s: protocol error: %s while %s is open", nfc_conn_peer(c),
                      h.type == NFC_OPEN ? "OPEN" : "COMMIT", st.o.name);
      } else {
        if (h.type == NFC_OPEN)
          r = do_open(c, dirfd, sink, opaque, &h, ctrl, &st, o.lock_wait_ms);
        else if (h.type == NFC_GET)
          r = do_get(c, dirfd, sink, opaque, &h, ctrl);
        else
          r = do_commit(c, dirfd, sink, opaque, &h, ctrl, n);
        if (r == 0 && one_file && h.type == NFC_COMMIT)
          break;
      }
    } else if (h.type == NFC_END) {
      r = do_end(c, sink, &st);
    } else if (h.type == NFC_ERROR) {
      char msg[NFC_MAX_MSG + 1];
      if (nfc_conn_recv_payload(c, &h, msg) == 0) {
        msg[h.len] = '\0';
        r = svm_error(h.off > 0 && h.off < 4096 ? (int)h.off : ECONNABORTED, "%s: %s",
                      nfc_conn_peer(c), msg);
      } else {
        r = svm_error(ECONNABORTED, "%s gave up", nfc_conn_peer(c));
      }
    } else {
      r = svm_error(EPROTO, "%s: protocol error: unexpected frame type %u", nfc_conn_peer(c),
                    h.type);
    }
    if (r < 0) {
      /* Tell the peer why (a failed GET's put names the file), unless it is the one that
       * gave up; the message stays ours whatever the send meets. */
      char why[NFC_MAX_MSG];
      snprintf(why, sizeof why, "%s", svm_last_error());
      if (h.type != NFC_ERROR)
        nfc_conn_send_error(c, -r, "%s", why);
      svm_error(-r, "%s", why);
      break;
    }
  }
  /* A dropped copy: what was durable stays recorded, the rest is sent again. */
  if (st.file != NULL && r < 0 && sink->sync(st.file) == 0 && st.pos != st.durable)
    write_record(st.recfd, &st.o, st.pos);
  range_close(sink, &st);
  return r;
}

int nfc_recv_serve(struct nfc_conn *c, int dirfd, const struct nfc_sink_ops *sink,
                   void *opaque, const struct nfc_recv_options *o,
                   struct nfc_recv_counters *n)
{
  return serve(c, dirfd, sink, opaque, o, n, false);
}

int nfc_recv_get(struct nfc_conn *c, const char *name, uint32_t provisioning, int dirfd,
                 const struct nfc_sink_ops *sink, void *opaque,
                 const struct nfc_recv_options *o, struct nfc_recv_counters *n)
{
  struct nfc_open req = { .provisioning = provisioning };
  uint8_t buf[NFC_MAX_CTRL];
  int len, r;

  if (!nfc_name_ok(name))
    return svm_error(EINVAL, "'%s': not a plain file name (no '/', not '..')", name);
  snprintf(req.name, sizeof req.name, "%s", name);
  if ((len = nfc_open_encode(&req, buf, sizeof buf)) < 0)
    return svm_error(EINVAL, "'%s': name too long", name);
  struct nfc_hdr h = { .type = NFC_GET, .len = (uint32_t)len };
  if ((r = nfc_conn_send(c, &h, buf)) < 0)
    return svm_error(-r, "%s: sending GET %s: %s", nfc_conn_peer(c), name, strerror(-r));
  return serve(c, dirfd, sink, opaque, o, n, true);
}
