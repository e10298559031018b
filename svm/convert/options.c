/* svm-convert's options (svmotion/convert.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "svm/convert/internal.h"

void svm_conv_options_defaults(struct svm_convert_options *o)
{
  *o = (struct svm_convert_options){ .prov = SVM_PROVISIONING_THIN,
                                     .request = SVM_COPY_DEFAULT_REQUEST,
                                     .requests = SVM_COPY_DEFAULT_REQUESTS };
}

struct svm_convert_options *svm_convert_options_new(void)
{
  struct svm_convert_options *o = malloc(sizeof *o);

  if (o != NULL)
    svm_conv_options_defaults(o);
  return o;
}

void svm_convert_options_free(struct svm_convert_options *o)
{
  free(o);
}

void svm_convert_options_set_provisioning(struct svm_convert_options *o, enum svm_provisioning p)
{
  o->prov = p;
}

void svm_convert_options_set_force(struct svm_convert_options *o, bool force)
{
  o->force = force;
}

void svm_convert_options_set_progress(struct svm_convert_options *o, svm_convert_progress_fn fn,
                                      void *opaque)
{
  o->progress = fn;
  o->progress_opaque = opaque;
}

int svm_convert_options_set_request_size(struct svm_convert_options *o, uint64_t bytes)
{
  if (bytes < 65536 || bytes > (32 << 20) || bytes % 4096 != 0)
    return svm_error(EINVAL, "request size %" PRIu64 ": must be a multiple of 4096 within "
                     "64K-32M", bytes);
  o->request = bytes;
  return 0;
}

int svm_convert_options_set_requests(struct svm_convert_options *o, unsigned n)
{
  if (n < 1 || n > 256)
    return svm_error(EINVAL, "requests in flight %u: must be within 1-256", n);
  o->requests = n;
  return 0;
}

void svm_convert_options_set_cancel_flag(struct svm_convert_options *o, volatile int *cancel)
{
  o->cancel = cancel;
}

bool svm_convert_is_nbd_uri(const char *s)
{
  return strncmp(s, "nbd://", 6) == 0 || strncmp(s, "nbds://", 7) == 0 ||
         strncmp(s, "nbd+unix://", 11) == 0 || strncmp(s, "nbds+unix://", 12) == 0 ||
         strncmp(s, "nbd+vsock://", 12) == 0 || strncmp(s, "nbds+vsock://", 13) == 0;
}

int svm_conv_check_size(const char *name, uint64_t size)
{
  if (size == 0)
    return svm_error(EINVAL, "%s: the disk is empty (0 bytes): nothing to convert (a disk has "
                     "a size that is a multiple of 512)", name);
  if (size % SVM_CONVERT_SECTOR != 0)
    return svm_error(EINVAL, "%s: size %" PRIu64 " bytes is not a multiple of 512 (pad it: "
                     "truncate -s %" PRIu64 " %s)", name, size,
                     (size + SVM_CONVERT_SECTOR - 1) / SVM_CONVERT_SECTOR * SVM_CONVERT_SECTOR,
                     name);
  return 0;
}
