/* The NBD end of a copy: an export reached with libnbd's asynchronous API, many requests in
 * flight on one connection; the extent map comes from base:allocation block status, asked for
 * in windows, several in flight. */
#include <errno.h>
#include <libnbd.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "svm/copy/end.h"

enum {
  STATUS_WINDOW = 1 << 30,  /* ask for at most this much per block status request */
  WINDOWS = 16,             /* block status requests in flight */
  MAX_REQUEST = 32 << 20,   /* when the server names no maximum, or a larger one */
};

struct nbd_end {
  struct svm_copy_end e;    /* first: the engine sees this */
  struct nbd_handle *nbd;
  bool can_zero, can_flush, has_allocation;
};

static struct nbd_end *N(struct svm_copy_end *e)
{
  return (struct nbd_end *)e;
}

static int nbd_fail(const char *uri, const char *what, const char *hint)
{
  int e = nbd_get_errno();
  const char *msg = nbd_get_error();

  return svm_error(e ? e : EIO, "%s: %s: %s%s", uri, what, msg ? msg : "unknown error",
                   hint ? hint : "");
}

/* ---- the extent map -------------------------------------------------------------------- */

struct status_ctx {
  struct svm_extent_list *l;
  uint64_t off;             /* where the next reported extent starts */
  uint64_t end;
  int err;
};

static int on_extents(void *opaque, const char *metacontext, uint64_t offset, uint32_t *entries,
                      size_t nr_entries, int *error)
{
  struct status_ctx *s = opaque;

  (void)error;
  if (strcmp(metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
    return 0;
  if (offset != s->off) {
    s->err = -EPROTO;
    return -1;
  }
  for (size_t i = 0; i + 1 < nr_entries && s->off < s->end; i += 2) {
    uint64_t len = entries[i];
    uint32_t flags = entries[i + 1] & (SVM_EXTENT_HOLE | SVM_EXTENT_ZERO);
    if (len == 0) {
      s->err = -EPROTO;
      return -1;
    }
    if (len > s->end - s->off)
      len = s->end - s->off;
    int r = svm_extent_list_add(s->l, s->off, len, flags);
    if (r < 0) {
      s->err = r;
      return -1;
    }
    s->off += len;
  }
  return 0;
}

/* A reply may cover only part of its window, and then the rest is asked for again. Windows are
 * appended to the list strictly in order, whatever order they complete in. */
struct window {
  struct status_ctx s;
  struct svm_extent_list l;
  uint64_t issued_at;       /* s.off when the request in flight was sent */
  bool used, busy;
};

struct status_walk {
  struct nbd_end *n;
  struct window w[WINDOWS];
  uint64_t size, nwin, next, appended;
};

static int on_status_done(void *opaque, int *error)
{
  struct window *w = opaque;

  w->busy = false;
  if (*error != 0 && w->s.err == 0)
    w->s.err = -*error;
  else if (w->s.err == 0 && w->s.off == w->issued_at)
    w->s.err = -EPROTO;     /* a reply that covers nothing would have us ask for ever */
  return 1;
}

static void open_windows(struct status_walk *sw)
{
  while (sw->next < sw->nwin && sw->next - sw->appended < WINDOWS) {
    struct window *x = &sw->w[sw->next % WINDOWS];
    uint64_t start = sw->next * STATUS_WINDOW;
    svm_extent_list_init(&x->l);
    x->s = (struct status_ctx){ .l = &x->l, .off = start,
                                .end = sw->size - start < STATUS_WINDOW ? sw->size
                                                                        : start + STATUS_WINDOW };
    x->used = true;
    x->busy = false;
    sw->next++;
  }
}

/* Ask for what each open window still lacks. */
static int ask_windows(struct status_walk *sw)
{
  const char *name = sw->n->e.name;

  for (unsigned i = 0; i < WINDOWS; i++) {
    struct window *x = &sw->w[i];
    if (!x->used || x->busy)
      continue;
    if (x->s.err == -EPROTO)
      return svm_error(EPROTO, "%s: bad block status reply near offset %llu", name,
                       (unsigned long long)x->s.off);
    if (x->s.err < 0)
      return svm_error(-x->s.err, "%s: block status at offset %llu: %s", name,
                       (unsigned long long)x->s.off, strerror(-x->s.err));
    if (x->s.off >= x->s.end)
      continue;
    nbd_extent_callback ecb = { .callback = on_extents, .user_data = &x->s };
    nbd_completion_callback ccb = { .callback = on_status_done, .user_data = x };
    x->issued_at = x->s.off;
    x->busy = true;
    if (nbd_aio_block_status(sw->n->nbd, x->s.end - x->s.off, x->s.off, ecb, ccb, 0) < 0) {
      x->busy = false;
      return nbd_fail(name, "block status", NULL);
    }
  }
  return 0;
}

/* Append finished windows to l, in order. */
static int append_windows(struct status_walk *sw, struct svm_extent_list *l)
{
  int r = 0;

  while (sw->appended < sw->next) {
    struct window *x = &sw->w[sw->appended % WINDOWS];
    if (x->busy || x->s.off < x->s.end || x->s.err < 0)
      break;
    for (size_t k = 0; k < x->l.n && r == 0; k++)
      r = svm_extent_list_add(l, x->l.v[k].off, x->l.v[k].len, x->l.v[k].flags);
    svm_extent_list_free(&x->l);
    x->used = false;
    sw->appended++;
    if (r < 0)
      return svm_error(-r, "out of memory");
  }
  return 0;
}

static bool windows_busy(const struct status_walk *sw)
{
  for (unsigned i = 0; i < WINDOWS; i++)
    if (sw->w[i].busy)
      return true;
  return false;
}

/* Callbacks point into sw: let every request in flight finish (or the handle go) first. */
static void drain_windows(struct status_walk *sw)
{
  while (windows_busy(sw)) {
    if (nbd_poll(sw->n->nbd, -1) < 0) {
      nbd_close(sw->n->nbd);  /* retires what is left; the caller sees a closed end */
      sw->n->nbd = NULL;
      break;
    }
  }
  for (unsigned i = 0; i < WINDOWS; i++)
    svm_extent_list_free(&sw->w[i].l);
}

static int end_extents(struct svm_copy_end *e, uint64_t size, struct svm_extent_list *l)
{
  struct nbd_end *n = N(e);
  CLEANUP_FREE struct status_walk *sw = NULL;
  int r = 0;

  if (!n->has_allocation)
    return svm_extent_list_add(l, 0, size, 0);
  if (n->nbd == NULL)
    return svm_error(ENOTCONN, "%s: the connection is closed", e->name);
  sw = calloc(1, sizeof *sw);
  if (sw == NULL)
    return svm_error(ENOMEM, "out of memory");
  *sw = (struct status_walk){ .n = n, .size = size,
                              .nwin = (size + STATUS_WINDOW - 1) / STATUS_WINDOW };
  while (r == 0 && sw->appended < sw->nwin) {
    open_windows(sw);
    if ((r = ask_windows(sw)) < 0 || (r = append_windows(sw, l)) < 0)
      break;
    if (sw->appended < sw->nwin && windows_busy(sw) && nbd_poll(n->nbd, -1) < 0)
      r = nbd_fail(e->name, "block status", " (the NBD server went away?)");
  }
  drain_windows(sw);
  return r;
}

/* ---- data --------------------------------------------------------------------------------- */

/* What a completion needs to call back in the engine's terms. */
struct req {
  svm_io_cb cb;
  void *opaque;
  int64_t ok;               /* the result when the server says yes */
};

static int on_req_done(void *user_data, int *error)
{
  struct req *q = user_data;

  q->cb(q->opaque, *error ? -*error : q->ok);
  return 1;                 /* retire the command */
}

static struct req *new_req(svm_io_cb cb, void *opaque, int64_t ok, nbd_completion_callback *ccb)
{
  struct req *q = malloc(sizeof *q);

  if (q != NULL) {
    *q = (struct req){ .cb = cb, .opaque = opaque, .ok = ok };
    /* libnbd frees it when the command is retired, also when abandoned by nbd_close */
    *ccb = (nbd_completion_callback){ .callback = on_req_done, .user_data = q, .free = free };
  }
  return q;
}

/* After a failed block status the handle may be gone (drain_windows()). */
static struct nbd_handle *handle(struct svm_copy_end *e)
{
  if (N(e)->nbd == NULL)
    svm_error(ENOTCONN, "%s: the connection is closed", e->name);
  return N(e)->nbd;
}

static int queued(struct svm_copy_end *e, int64_t cookie, const char *what, uint64_t off)
{
  struct nbd_handle *h = N(e)->nbd;

  if (cookie >= 0)
    return 0;
  /* A connection that died while sending says so here, not through poll(). */
  if (nbd_aio_is_dead(h) == 1 || nbd_aio_is_closed(h) == 1)
    return svm_error(ENOTCONN, "%s: %s at offset %llu: the connection is lost (the NBD "
                     "server went away?)", e->name, what, (unsigned long long)off);
  return svm_error(nbd_get_errno() ? nbd_get_errno() : EIO, "%s: %s at offset %llu: %s",
                   e->name, what, (unsigned long long)off, nbd_get_error());
}

static int end_read(struct svm_copy_end *e, void *buf, size_t len, uint64_t off, svm_io_cb cb,
                    void *opaque)
{
  struct nbd_handle *h = handle(e);
  nbd_completion_callback ccb;

  if (h == NULL)
    return -ENOTCONN;
  if (new_req(cb, opaque, (int64_t)len, &ccb) == NULL)
    return svm_error(ENOMEM, "out of memory");
  return queued(e, nbd_aio_pread(h, buf, len, off, ccb, 0), "read", off);
}

static int end_write(struct svm_copy_end *e, const void *buf, size_t len, uint64_t off,
                     svm_io_cb cb, void *opaque)
{
  struct nbd_handle *h = handle(e);
  nbd_completion_callback ccb;

  if (h == NULL)
    return -ENOTCONN;
  if (new_req(cb, opaque, (int64_t)len, &ccb) == NULL)
    return svm_error(ENOMEM, "out of memory");
  return queued(e, nbd_aio_pwrite(h, buf, len, off, ccb, 0), "write", off);
}

static int end_zero(struct svm_copy_end *e, uint64_t off, uint64_t len, bool allocate,
                    svm_io_cb cb, void *opaque)
{
  struct nbd_handle *h = handle(e);
  nbd_completion_callback ccb;

  if (h == NULL)
    return -ENOTCONN;
  if (new_req(cb, opaque, 0, &ccb) == NULL)
    return svm_error(ENOMEM, "out of memory");
  return queued(e, nbd_aio_zero(h, len, off, ccb,
                                allocate ? LIBNBD_CMD_FLAG_NO_HOLE : 0), "write", off);
}

/* ---- the event loop ------------------------------------------------------------------------ */

static int end_poll_prepare(struct svm_copy_end *e, struct pollfd *pfd)
{
  struct nbd_handle *h = N(e)->nbd;

  if (h == NULL)
    return 0;
  unsigned dir = nbd_aio_get_direction(h);
  short ev = (short)(((dir & LIBNBD_AIO_DIRECTION_READ) ? POLLIN : 0) |
                     ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? POLLOUT : 0));

  if (nbd_aio_in_flight(h) <= 0 && !(ev & POLLOUT))
    return 0;
  *pfd = (struct pollfd){ .fd = nbd_aio_get_fd(h), .events = ev };
  return 1;
}

static int end_poll_done(struct svm_copy_end *e, const struct pollfd *pfd)
{
  struct nbd_handle *h = N(e)->nbd;

  if ((pfd->revents & (POLLIN | POLLHUP | POLLERR)) && nbd_aio_notify_read(h) < 0)
    return nbd_fail(e->name, "connection", " (the NBD server went away?)");
  if ((pfd->revents & POLLOUT) && nbd_aio_notify_write(h) < 0)
    return nbd_fail(e->name, "connection", " (the NBD server went away?)");
  return 0;
}

static int end_finish(struct svm_copy_end *e)
{
  struct nbd_end *n = N(e);

  if (n->nbd == NULL)
    return svm_error(ENOTCONN, "%s: the connection is closed", e->name);
  if (n->can_flush && nbd_flush(n->nbd, 0) < 0)
    return nbd_fail(e->name, "flush", NULL);
  if (nbd_shutdown(n->nbd, 0) < 0)
    return nbd_fail(e->name, "disconnect", NULL);
  return 0;
}

static void end_free(struct svm_copy_end *e)
{
  struct nbd_end *n = N(e);

  if (n->nbd != NULL)
    nbd_close(n->nbd);
  free(n);
}

#define NBD_OPS(zero_op)                                                                  \
  {                                                                                       \
    .kind = "nbd", .extents = end_extents, .read = end_read, .write = end_write,          \
    .zero = (zero_op), .poll_prepare = end_poll_prepare, .poll_done = end_poll_done,      \
    .wait = NULL /* poll() on the socket */, .finish = end_finish, .free = end_free,      \
  }
static const struct svm_copy_end_ops nbd_ops = NBD_OPS(end_zero);
/* A server without WRITE_ZEROES: the engine writes zeros from a buffer instead. */
static const struct svm_copy_end_ops nbd_ops_nozero = NBD_OPS(NULL);

static int connect_end(struct nbd_end *n, const char *uri)
{
  int64_t size, max;

  n->nbd = nbd_create();
  if (n->nbd == NULL)
    return nbd_fail(uri, "cannot create an NBD handle", NULL);
  if (nbd_add_meta_context(n->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0)
    return nbd_fail(uri, "base:allocation", NULL);
  if (nbd_connect_uri(n->nbd, uri) < 0)
    return nbd_fail(uri, "cannot connect",
                    " (is the NBD server running and the URI right? e.g. "
                    "nbd+unix:///NAME?socket=PATH or nbd://HOST:PORT/NAME)");
  size = nbd_get_size(n->nbd);
  if (size < 0)
    return nbd_fail(uri, "cannot get the export size", NULL);
  n->e.size = (uint64_t)size;
  max = nbd_get_block_size(n->nbd, LIBNBD_SIZE_MAXIMUM);
  n->e.max_request = max > 0 && max < MAX_REQUEST ? (uint64_t)max : MAX_REQUEST;
  n->can_zero = nbd_can_zero(n->nbd) == 1;
  n->can_flush = nbd_can_flush(n->nbd) == 1;
  n->has_allocation = nbd_can_meta_context(n->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
  return 0;
}

int svm_copy_nbd_end_open(const char *uri, bool writable, struct svm_copy_end **out)
{
  struct nbd_end *n = calloc(1, sizeof *n);
  int r;

  if (n == NULL)
    return svm_error(ENOMEM, "out of memory");
  n->e = (struct svm_copy_end){ .ops = &nbd_ops, .name = uri, .writable = writable,
                                .lost_hint = " (the NBD server went away?)" };
  r = connect_end(n, uri);
  if (r == 0 && writable && nbd_is_read_only(n->nbd) == 1)
    r = svm_error(EROFS, "%s: the NBD export is read-only (serve it writable, e.g. "
                  "qemu-nbd without --read-only)", uri);
  if (r < 0) {
    end_free(&n->e);
    return r;
  }
  if (!n->can_zero)
    n->e.ops = &nbd_ops_nozero;
  *out = &n->e;
  return 0;
}
