/* The layer stack: filters, the calls that walk a stack down to the first layer implementing
 * an operation, and freeing a stack top-down. The layers themselves live in files of their own
 * (raw.c, track.c). */
#include <errno.h>
#include <stdlib.h>

#include "common/error.h"
#include "svm/disk/layer.h"

/* The first layer from l down that implements the operation at `field`. A stack always ends
 * in a base layer, which implements every operation. */
#define FIND(l, field)                                    \
  ({                                                      \
    struct svm_layer *f_ = (l);                           \
    while (f_->ops->field == NULL && f_->below != NULL)   \
      f_ = f_->below;                                     \
    f_;                                                   \
  })

int svm_layer_read(struct svm_layer *l, struct svm_io *io, void *buf, size_t len, uint64_t off,
                   svm_io_cb cb, void *opaque)
{
  l = FIND(l, read);
  return l->ops->read(l, io, buf, len, off, cb, opaque);
}

int svm_layer_write(struct svm_layer *l, struct svm_io *io, const void *buf, size_t len,
                    uint64_t off, unsigned flags, svm_io_cb cb, void *opaque)
{
  l = FIND(l, write);
  return l->ops->write(l, io, buf, len, off, flags, cb, opaque);
}

int svm_layer_zero(struct svm_layer *l, struct svm_io *io, uint64_t off, uint64_t len,
                   unsigned flags, svm_io_cb cb, void *opaque)
{
  l = FIND(l, zero);
  return l->ops->zero(l, io, off, len, flags, cb, opaque);
}

int svm_layer_trim(struct svm_layer *l, struct svm_io *io, uint64_t off, uint64_t len,
                   unsigned flags, svm_io_cb cb, void *opaque)
{
  l = FIND(l, trim);
  return l->ops->trim(l, io, off, len, flags, cb, opaque);
}

int svm_layer_flush(struct svm_layer *l, struct svm_io *io, svm_io_cb cb, void *opaque)
{
  l = FIND(l, flush);
  return l->ops->flush(l, io, cb, opaque);
}

int svm_layer_block_status(struct svm_layer *l, uint64_t off, uint64_t len,
                           struct svm_layer_extent *ext, size_t max, size_t *n)
{
  l = FIND(l, block_status);
  return l->ops->block_status(l, off, len, ext, max, n);
}

int svm_layer_flush_sync(struct svm_layer *l)
{
  l = FIND(l, flush_sync);
  return l->ops->flush_sync(l);
}

void svm_layer_writeback(struct svm_layer *l)
{
  l = FIND(l, writeback);
  if (l->ops->writeback != NULL)
    l->ops->writeback(l);
}

int svm_layer_new_filter(const struct svm_layer_ops *ops, void *priv, struct svm_layer *below,
                         struct svm_layer **out)
{
  struct svm_layer *l;

  *out = NULL;
  if (ops == NULL || below == NULL)
    return svm_error(EINVAL, "a filter layer needs its operations and a layer below it");
  l = calloc(1, sizeof *l);
  if (l == NULL)
    return svm_error(ENOMEM, "%s layer over %s: out of memory", ops->kind,
                     svm_layer_path(below));
  l->ops = ops;
  l->below = below;
  l->priv = priv;
  l->size = below->size;
  l->readonly = below->readonly;
  *out = l;
  return 0;
}

void svm_layer_free(struct svm_layer *l)
{
  while (l != NULL) {
    struct svm_layer *below = l->below;
    if (l->ops->close)
      l->ops->close(l);
    free(l->path);
    free(l);
    l = below;
  }
}

uint64_t svm_layer_size(const struct svm_layer *l)
{
  return l->size;
}

const char *svm_layer_path(const struct svm_layer *l)
{
  while (l->path == NULL && l->below != NULL)
    l = l->below;
  return l->path ? l->path : "(no file)";
}
