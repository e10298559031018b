/* The NBD side of the converter: connecting with libnbd, and the extent map from
 * base:allocation block status. Reads and writes themselves are asynchronous and live in the
 * copy loop (convert.c). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "svm/convert/internal.h"

enum { STATUS_WINDOW = 1 << 30 };   /* ask for at most this much per block status request */

static int nbd_fail(const char *uri, const char *what, const char *hint)
{
  int e = nbd_get_errno();
  const char *msg = nbd_get_error();

  return svm_error(e ? e : EIO, "%s: %s: %s%s", uri, what, msg ? msg : "unknown error",
                   hint ? hint : "");
}

int svm_conv_nbd_open(struct svm_conv_end *e, const char *uri, bool writable)
{
  int64_t size, max;

  e->is_nbd = true;
  e->name = uri;
  e->fd = e->fd_buffered = -1;
  e->nbd = nbd_create();
  if (e->nbd == NULL)
    return nbd_fail(uri, "cannot create an NBD handle", NULL);
  if (nbd_add_meta_context(e->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0)
    return nbd_fail(uri, "base:allocation", NULL);
  if (nbd_connect_uri(e->nbd, uri) < 0)
    return nbd_fail(uri, "cannot connect",
                    " (is the NBD server running and the URI right? e.g. "
                    "nbd+unix:///NAME?socket=PATH or nbd://HOST:PORT/NAME)");
  size = nbd_get_size(e->nbd);
  if (size < 0)
    return nbd_fail(uri, "cannot get the export size", NULL);
  e->size = (uint64_t)size;
  max = nbd_get_block_size(e->nbd, LIBNBD_SIZE_MAXIMUM);
  e->max_request = max > 0 ? (uint64_t)max : 32 << 20;
  if (e->max_request > (32 << 20))
    e->max_request = 32 << 20;
  e->can_zero = nbd_can_zero(e->nbd) == 1;
  e->can_flush = nbd_can_flush(e->nbd) == 1;
  e->has_allocation = nbd_can_meta_context(e->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
  if (writable && nbd_is_read_only(e->nbd) == 1)
    return svm_error(EROFS, "%s: the NBD export is read-only (serve it writable, e.g. "
                     "qemu-nbd without --read-only)", uri);
  return 0;
}

struct status_ctx {
  struct svm_extent_list *l;
  uint64_t off;         /* where the next reported extent starts */
  uint64_t end;
  int err;
};

static int on_extents(void *opaque, const char *metacontext, uint64_t offset, uint32_t *entries,
                      size_t nr_entries, int *error)
{
  struct status_ctx *s = opaque;

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
  (void)error;
  return 0;
}

/* The map is asked for in windows, WINDOWS of them in flight, with libnbd's asynchronous block
 * status; a reply may cover only part of its window, and then the rest is asked for again.
 * Windows are appended to the list strictly in order, whatever order they complete in. */
enum { WINDOWS = 16 };

struct window {
  struct status_ctx s;
  struct svm_extent_list l;
  uint64_t issued_at;       /* s.off when the request in flight was sent */
  bool used, busy;
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

int svm_conv_nbd_extents(struct svm_conv_end *e, uint64_t size, struct svm_extent_list *l)
{
  struct window *w;
  uint64_t nwin = (size + STATUS_WINDOW - 1) / STATUS_WINDOW, next = 0, appended = 0;
  int r = 0;

  if (!e->has_allocation)
    return svm_extent_list_add(l, 0, size, 0);
  w = calloc(WINDOWS, sizeof *w);
  if (w == NULL)
    return svm_error(ENOMEM, "out of memory");
  while (appended < nwin) {
    /* open windows */
    while (next < nwin && next - appended < WINDOWS) {
      struct window *x = &w[next % WINDOWS];
      uint64_t start = next * STATUS_WINDOW;
      svm_extent_list_init(&x->l);
      x->s = (struct status_ctx){ .l = &x->l, .off = start,
                                  .end = size - start < STATUS_WINDOW ? size : start + STATUS_WINDOW };
      x->used = true;
      x->busy = false;
      next++;
    }
    /* ask for what each open window still lacks */
    for (unsigned i = 0; i < WINDOWS; i++) {
      struct window *x = &w[i];
      if (!x->used || x->busy)
        continue;
      if (x->s.err < 0) {
        r = x->s.err == -EPROTO
              ? svm_error(EPROTO, "%s: bad block status reply near offset %llu", e->name,
                          (unsigned long long)x->s.off)
              : svm_error(-x->s.err, "%s: block status at offset %llu: %s", e->name,
                          (unsigned long long)x->s.off, strerror(-x->s.err));
        goto drain;
      }
      if (x->s.off >= x->s.end)
        continue;
      nbd_extent_callback ecb = { .callback = on_extents, .user_data = &x->s };
      nbd_completion_callback ccb = { .callback = on_status_done, .user_data = x };
      x->issued_at = x->s.off;
      x->busy = true;
      if (nbd_aio_block_status(e->nbd, x->s.end - x->s.off, x->s.off, ecb, ccb, 0) < 0) {
        x->busy = false;
        r = nbd_fail(e->name, "block status", NULL);
        goto drain;
      }
    }
    /* append finished windows in order */
    while (appended < next) {
      struct window *x = &w[appended % WINDOWS];
      if (x->busy || x->s.off < x->s.end || x->s.err < 0)
        break;
      for (size_t k = 0; k < x->l.n && r == 0; k++)
        r = svm_extent_list_add(l, x->l.v[k].off, x->l.v[k].len, x->l.v[k].flags);
      svm_extent_list_free(&x->l);
      x->used = false;
      appended++;
      if (r < 0) {
        r = svm_error(-r, "out of memory");
        goto drain;
      }
    }
    if (appended == nwin)
      break;
    bool any_busy = false;
    for (unsigned i = 0; i < WINDOWS; i++)
      any_busy |= w[i].busy;
    if (any_busy && nbd_poll(e->nbd, -1) < 0) {
      r = nbd_fail(e->name, "block status", " (the NBD server went away?)");
      goto drain;
    }
  }

drain:
  /* Callbacks point into w: let every request in flight finish (or the handle go) first. */
  for (;;) {
    bool any_busy = false;
    for (unsigned i = 0; i < WINDOWS; i++)
      any_busy |= w[i].busy;
    if (!any_busy)
      break;
    if (nbd_poll(e->nbd, -1) < 0) {
      nbd_close(e->nbd);      /* retires what is left; the caller sees a closed end */
      e->nbd = NULL;
      break;
    }
  }
  for (unsigned i = 0; i < WINDOWS; i++)
    svm_extent_list_free(&w[i].l);
  free(w);
  return r;
}

int svm_conv_nbd_close(struct svm_conv_end *e, bool flush)
{
  int r = 0;

  if (e->nbd == NULL)
    return 0;
  if (flush && e->can_flush && nbd_flush(e->nbd, 0) < 0)
    r = nbd_fail(e->name, "flush", NULL);
  if (flush && r == 0 && nbd_shutdown(e->nbd, 0) < 0)
    r = nbd_fail(e->name, "disconnect", NULL);
  nbd_close(e->nbd);
  e->nbd = NULL;
  return r;
}
