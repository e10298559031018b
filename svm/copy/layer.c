/* The layer end of a copy: a disk layer stack (svm/disk/layer.h) read or written through an I/O
 * engine of the copying thread. The mirror's bulk pass reads the source below the mirror layer
 * and writes the destination through it.
 *
 * Every completion reaches the engine from poll_done or wait (end.h): a layer may complete a
 * request inline, inside the call, so each request's result is posted to the end's own I/O
 * engine and delivered from there.
 *
 * A gate (end.h) may hold a read back: the read then waits, parked, until the gate lets it go;
 * once through, the read asks the layer's block status for its range (the range cannot change
 * under a gate that excludes writers) and fills what reads as zeros without reading it - so a
 * single data extent over the whole disk costs no I/O for its holes, and a map taken at the
 * start can never hide data written into a hole later. Through read_sparse (the engine's way),
 * whole blocks of holes are not even filled: the engine is told, and skips them unscanned. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "svm/copy/copy.h"
#include "svm/copy/end.h"
#include "svm/disk/layer.h"

struct lreq {
  struct layer_end *le;
  struct lreq *prev, *next;   /* the end's live requests */
  struct svm_io_posted node;  /* gate resume, then the completion */
  void *buf;
  uint64_t *zmap;             /* read_sparse: the engine's map of blocks left unfilled */
  size_t len;
  uint64_t off;
  svm_io_cb cb;
  void *opaque;
  unsigned parts;             /* a read split around holes: its reads not yet done */
  int64_t err;                /* the first of those that failed */
};

struct layer_end {
  struct svm_copy_end e;      /* first: the engine sees this */
  struct svm_layer *l;
  struct svm_copy_gate gate;
  struct svm_io *io;
  struct lreq *live;
  unsigned pending;           /* requests whose callback has not run yet */
  bool dying;                 /* being freed: results go nowhere */
};

/* PARTS_MAX: the engine holds this many requests per chunk in flight (layer_start), and a
 * chunk read around its holes issues at most this many reads (read_parts). */
enum { MAX_EXTENTS = 64, PARTS_MAX = 8 };

static struct layer_end *LE(struct svm_copy_end *e)
{
  return (struct layer_end *)e;
}

static int layer_start(struct svm_copy_end *e, unsigned requests)
{
  struct layer_end *le = LE(e);
  unsigned depth = requests * PARTS_MAX > 4096 ? 4096 : requests * PARTS_MAX;

  if (le->io != NULL)
    return 0;
  depth = depth < 64 ? 64 : depth;
  /* Writes through libaio where there is one, as the file end does (file.c): io_submit()
   * allocates O_DIRECT blocks in the order issued, a compact extent tree. */
  if (e->writable && svm_io_new(SVM_IO_AIO, depth, &le->io) == 0)
    return 0;
  svm_error_clear();
  if (svm_io_new(SVM_IO_AUTO, depth, &le->io) < 0)
    return svm_error_prefix("%s", e->name);
  return 0;
}

static int layer_extents(struct svm_copy_end *e, uint64_t size, struct svm_extent_list *l)
{
  struct svm_layer_extent ext[MAX_EXTENTS];
  uint64_t off = 0;

  while (off < size) {
    size_t n = 0;
    int r = svm_layer_block_status(LE(e)->l, off, size - off, ext, MAX_EXTENTS, &n);
    if (r < 0)
      return svm_error_prefix("%s: cannot map its extents", e->name);
    if (n == 0)
      return svm_error(EIO, "%s: block status at offset %llu reported nothing", e->name,
                       (unsigned long long)off);
    for (size_t i = 0; i < n && off < size; i++) {
      uint64_t len = ext[i].length < size - off ? ext[i].length : size - off;
      if ((r = svm_extent_list_add(l, off, len, ext[i].flags)) < 0)
        return svm_error(-r, "%s: out of memory for its extent map", e->name);
      off += len;
    }
  }
  return 0;
}

/* ---- requests ------------------------------------------------------------------------------ */

static struct lreq *lreq_new(struct layer_end *le, void *buf, size_t len, uint64_t off,
                             svm_io_cb cb, void *opaque)
{
  struct lreq *q = calloc(1, sizeof *q);

  if (q == NULL)
    return NULL;
  *q = (struct lreq){ .le = le, .buf = buf, .len = len, .off = off, .cb = cb,
                      .opaque = opaque, .next = le->live };
  if (le->live)
    le->live->prev = q;
  le->live = q;
  le->pending++;
  return q;
}

static void lreq_free(struct lreq *q)
{
  struct layer_end *le = q->le;

  if (q->prev)
    q->prev->next = q->next;
  else
    le->live = q->next;
  if (q->next)
    q->next->prev = q->prev;
  free(q);
}

/* Posted: hand the result to the engine. */
static void lreq_deliver(void *opaque, int64_t res)
{
  struct lreq *q = opaque;
  svm_io_cb cb = q->cb;
  void *cb_opaque = q->opaque;

  bool dying = q->le->dying;

  q->le->pending--;
  lreq_free(q);
  if (!dying)
    cb(cb_opaque, res);
}

/* The layer's completion, perhaps inline: deliver it from the next reap. */
static void lreq_done(void *opaque, int64_t res)
{
  struct lreq *q = opaque;

  svm_io_post_node(q->le->io, &q->node, lreq_deliver, q, res);
}

/* The reads q's range needs around its holes: one per data extent and one past the last
 * extent reported; *hole: block status says some of it reads as zeros. */
static size_t read_parts(const struct lreq *q, const struct svm_layer_extent *ext, size_t n,
                         bool *hole)
{
  uint64_t pos = q->off, end = q->off + q->len;
  size_t parts = 0;

  *hole = false;
  for (size_t i = 0; i < n && pos < end; pos += ext[i].length, i++) {
    if (ext[i].flags & SVM_EXTENT_ZERO)
      *hole = true;
    else
      parts++;
  }
  return parts + (pos < end);
}

/* One of a split read's parts is done (on the copier's thread, as every part was issued on
 * its engine); the last one completes the request. */
static void lreq_part_done(void *opaque, int64_t res)
{
  struct lreq *q = opaque;

  if (res < 0 && q->err == 0)
    q->err = res;
  if (--q->parts == 0)
    lreq_done(q, q->err ? q->err : (int64_t)q->len);
}

/* [pos, pos + len) of q reads as zeros: say so in q's zmap for its whole blocks (read_sparse),
 * fill the rest. */
static void fill_zero(struct lreq *q, uint64_t pos, uint64_t len)
{
  uint64_t rel = pos - q->off, end = rel + len;

  if (q->zmap != NULL) {
    uint64_t b0 = (rel + SVM_COPY_ZERO_BLOCK - 1) / SVM_COPY_ZERO_BLOCK;
    uint64_t b1 = end / SVM_COPY_ZERO_BLOCK;      /* whole blocks [b0, b1) */
    if (b0 < b1) {
      memset((char *)q->buf + rel, 0, b0 * SVM_COPY_ZERO_BLOCK - rel);
      for (uint64_t b = b0; b < b1; b++)
        q->zmap[b / 64] |= UINT64_C(1) << (b % 64);
      rel = b1 * SVM_COPY_ZERO_BLOCK;
    }
  }
  memset((char *)q->buf + rel, 0, end - rel);
}

/* A chunk that is partly holes (a thin disk's common case): fill the zero extents and read only
 * the data ones, as the engine does with a map for a file end, so that holes cost neither a
 * read nor a zero check. Past the last extent reported, read. */
static void read_around_holes(struct lreq *q, const struct svm_layer_extent *ext, size_t n)
{
  struct layer_end *le = q->le;
  uint64_t pos = q->off, end = q->off + q->len;
  size_t i = 0;

  q->parts = 1;                 /* ours, until every part is issued */
  while (pos < end && q->err == 0) {
    uint64_t len = i < n ? ext[i].length : end - pos;
    bool zero = i < n && (ext[i].flags & SVM_EXTENT_ZERO);
    len = len < end - pos ? len : end - pos;
    if (zero) {
      fill_zero(q, pos, len);
    } else {
      q->parts++;
      int r = svm_layer_read(le->l, le->io, (char *)q->buf + (pos - q->off), len, pos,
                             lreq_part_done, q);
      if (r < 0) {
        svm_error(-r, "%s: read at offset %llu: %s", le->e.name, (unsigned long long)pos,
                  strerror(-r));
        q->parts--;
        q->err = r;
      }
    }
    pos += len;
    i++;
  }
  lreq_part_done(q, 0);
}

/* Through the gate: read what holds data, fill what reads as zeros. */
static void lreq_read(void *opaque, int64_t res)
{
  struct lreq *q = opaque;
  struct layer_end *le = q->le;
  struct svm_layer_extent ext[MAX_EXTENTS];
  size_t n = 0;
  int r;

  if (res < 0) {                /* the gate refused (e.g. the copy was cancelled) */
    lreq_done(q, res);
    return;
  }
  bool hole = false;
  r = svm_layer_block_status(le->l, q->off, q->len, ext, MAX_EXTENTS, &n);
  svm_error_clear();            /* block status is a hint here: when in doubt, read */
  /* A chunk cut into more pieces than the engine holds per chunk (a guest's 4 KiB writes
   * into holes) is read whole: a hole reads as zeros without costing the device anything,
   * where its reads one by one would run the engine out of requests (EAGAIN, the move
   * failed). A chunk that is all hole needs no read at all. */
  if (r == 0 && read_parts(q, ext, n, &hole) <= PARTS_MAX && hole) {
    read_around_holes(q, ext, n);
    return;
  }
  r = svm_layer_read(le->l, le->io, q->buf, q->len, q->off, lreq_done, q);
  if (r < 0) {
    svm_error(-r, "%s: read at offset %llu: %s", le->e.name, (unsigned long long)q->off,
              strerror(-r));
    lreq_done(q, r);
  }
}

static int layer_read_sparse(struct svm_copy_end *e, void *buf, size_t len, uint64_t off,
                             uint64_t *zmap, svm_io_cb cb, void *opaque)
{
  struct layer_end *le = LE(e);
  struct lreq *q = lreq_new(le, buf, len, off, cb, opaque);

  if (q == NULL)
    return svm_error(ENOMEM, "%s: out of memory", e->name);
  q->zmap = zmap;
  if (le->gate.enter != NULL &&
      le->gate.enter(le->gate.opaque, off, len, le->io, &q->node, lreq_read, q) > 0)
    return 0;                   /* parked: the gate posts lreq_read when the range is free */
  lreq_read(q, 0);
  return 0;
}

static int layer_read(struct svm_copy_end *e, void *buf, size_t len, uint64_t off, svm_io_cb cb,
                      void *opaque)
{
  return layer_read_sparse(e, buf, len, off, NULL, cb, opaque);
}

static int layer_write(struct svm_copy_end *e, const void *buf, size_t len, uint64_t off,
                       svm_io_cb cb, void *opaque)
{
  struct layer_end *le = LE(e);
  struct lreq *q = lreq_new(le, (void *)buf, len, off, cb, opaque);
  int r;

  if (q == NULL)
    return svm_error(ENOMEM, "%s: out of memory", e->name);
  r = svm_layer_write(le->l, le->io, buf, len, off, 0, lreq_done, q);
  if (r < 0) {
    le->pending--;
    lreq_free(q);
    if (r != -EAGAIN)
      svm_error(-r, "%s: write at offset %llu: %s", e->name, (unsigned long long)off,
                strerror(-r));
  }
  return r;
}

static int layer_zero(struct svm_copy_end *e, uint64_t off, uint64_t len, bool allocate,
                      svm_io_cb cb, void *opaque)
{
  struct layer_end *le = LE(e);
  struct lreq *q = lreq_new(le, NULL, 0, off, cb, opaque);
  int r;

  if (q == NULL)
    return svm_error(ENOMEM, "%s: out of memory", e->name);
  r = svm_layer_zero(le->l, le->io, off, len, allocate ? SVM_LAYER_NO_HOLE : 0, lreq_done, q);
  if (r < 0) {
    le->pending--;
    lreq_free(q);
    if (r != -EAGAIN)
      svm_error(-r, "%s: zero at offset %llu: %s", e->name, (unsigned long long)off,
                strerror(-r));
  }
  return r;
}

/* ---- the event loop ------------------------------------------------------------------------ */

/* pending, not the engine's count: a posted result (gate, inline completion) is still owed */
static int layer_poll_prepare(struct svm_copy_end *e, struct pollfd *pfd)
{
  return svm_copy_io_poll_prepare(e, LE(e)->io, LE(e)->pending > 0, pfd);
}

static int layer_poll_done(struct svm_copy_end *e, const struct pollfd *pfd)
{
  return svm_copy_io_poll_done(e, LE(e)->io, pfd);
}

/* Results arrive from the engine or as posts (gates, inline completions): wait on the event
 * fd, which both signal. */
static int layer_wait(struct svm_copy_end *e)
{
  struct pollfd p;
  int r = layer_poll_prepare(e, &p);

  if (r <= 0)
    return r;
  if (poll(&p, 1, -1) < 0)
    return errno == EINTR ? 0 : svm_error(errno, "poll: %s", strerror(errno));
  return layer_poll_done(e, &p);
}

static int layer_finish(struct svm_copy_end *e)
{
  return svm_layer_flush_sync(LE(e)->l);
}

/* Requests still in the engine are run to completion, callbacks included, so that a layer's
 * multi-step request (a write, then its sync) ends and frees its state; their results go
 * nowhere. svm_io_free() then drops posts never reaped. Requests the layer holds elsewhere
 * (parked at the gate) are the gate owner's to withdraw first. */
static void layer_free(struct svm_copy_end *e)
{
  struct layer_end *le = LE(e);

  le->dying = true;
  if (le->io != NULL) {
    while (svm_io_in_flight(le->io) > 0 && svm_io_reap(le->io, 1) >= 0)
      ;
    svm_io_free(le->io);
  }
  while (le->live)
    lreq_free(le->live);
  free(le);
}

static const struct svm_copy_end_ops layer_ops = {
  .kind = "layer",
  .start = layer_start,
  .extents = layer_extents,
  .read = layer_read,
  .read_sparse = layer_read_sparse,
  .write = layer_write,
  .zero = layer_zero,
  .poll_prepare = layer_poll_prepare,
  .poll_done = layer_poll_done,
  .wait = layer_wait,
  .finish = layer_finish,
  .free = layer_free,
};

int svm_copy_layer_end_new(const char *name, struct svm_layer *l, bool writable,
                           const struct svm_copy_gate *gate, struct svm_copy_end **out)
{
  struct layer_end *le = calloc(1, sizeof *le);

  if (le == NULL)
    return svm_error(ENOMEM, "%s: out of memory", name);
  le->e = (struct svm_copy_end){ .ops = &layer_ops, .name = name, .size = svm_layer_size(l),
                                 .writable = writable };
  le->l = l;
  if (gate != NULL)
    le->gate = *gate;
  *out = &le->e;
  return 0;
}

struct svm_io *svm_copy_layer_end_io(struct svm_copy_end *e)
{
  return LE(e)->io;
}
