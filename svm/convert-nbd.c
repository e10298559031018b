/* The NBD side of the converter: connecting with libnbd, and the extent map from
 * base:allocation block status. Reads and writes themselves are asynchronous and live in the
 * copy loop (convert.c). */
#include <errno.h>
#include <string.h>

#include "common/error.h"
#include "svm/convert-internal.h"

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

int svm_conv_nbd_extents(struct svm_conv_end *e, uint64_t size, struct svm_extent_list *l)
{
  struct status_ctx s = { .l = l, .off = 0, .end = size };

  if (!e->has_allocation)
    return svm_extent_list_add(l, 0, size, 0);
  while (s.off < size) {
    uint64_t start = s.off, n = size - s.off;
    if (n > STATUS_WINDOW)
      n = STATUS_WINDOW;
    nbd_extent_callback cb = { .callback = on_extents, .user_data = &s };
    if (nbd_block_status(e->nbd, n, s.off, cb, 0) < 0) {
      if (s.err < 0)
        return svm_error(-s.err, "%s: bad block status reply at offset %llu", e->name,
                         (unsigned long long)start);
      return nbd_fail(e->name, "block status", NULL);
    }
    if (s.off == start)
      return svm_error(EPROTO, "%s: the server's block status made no progress at offset %llu",
                       e->name, (unsigned long long)start);
  }
  return 0;
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
