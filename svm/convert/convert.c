/* svm_convert(): copy a disk from a raw file or NBD export to another in the provisioning
 * asked for. The steps: open and map the source (source.c), check and open the destination
 * (dest.c), copy with the copy engine (svm/copy/), complete the destination (dest.c).
 *
 * Work follows data: the source's extent map comes first, which also gives the data size the
 * free-space check needs. Safety: the source is opened read-only; a raw destination is written
 * as DST.svm-part-PID and renamed over DST only after everything is written and fsynced. */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "common/error.h"
#include "svm/convert/internal.h"

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void init(struct svm_conv *c, const char *src, const char *dst,
                 const struct svm_convert_options *o)
{
  memset(c, 0, sizeof *c);
  c->o = o;
  c->src_name = src;
  c->dst_name = dst;
  c->src_file.fd = c->src_file.fd_buffered = c->src_file.lock_fd = -1;
  c->dst_file.fd = c->dst_file.fd_buffered = c->dst_file.lock_fd = -1;
  c->dst_lock_fd = -1;
  c->src_mode = 0600;       /* an NBD source has no mode: private, like svmd's disks */
  svm_extent_list_init(&c->map);
}

static int copy(struct svm_conv *c)
{
  const struct svm_convert_options *o = c->o;
  struct svm_copy_options co = {
    .request_size = o->request, .requests = o->requests,
    .dst_reads_zero = c->dst_reads_zero,
    .zero_allocates = o->prov != SVM_PROVISIONING_THIN,
    .progress = o->progress, .progress_opaque = o->progress_opaque, .cancel = o->cancel,
  };
  struct svm_copy_counters n;
  int r;

  if ((r = svm_copy_new(c->src, c->dst, &co, &c->copy)) < 0)
    return r;
  r = svm_copy_run(c->copy, &c->map);
  svm_copy_get_counters(c->copy, &n);
  c->st.bytes_read = n.bytes_read;
  c->st.bytes_written = n.bytes_written;
  c->st.bytes_skipped_zero = n.bytes_skipped_zero;
  if (r == -ECANCELED)
    return svm_error(ECANCELED, "conversion cancelled");
  return r;
}

int svm_convert(const char *src, const char *dst, const struct svm_convert_options *o,
                struct svm_convert_stats *stats)
{
  struct svm_convert_options defaults;
  struct svm_conv c;
  double t0 = now();
  int r;

  if (o == NULL) {
    svm_conv_options_defaults(&defaults);
    o = &defaults;
  }
  init(&c, src, dst, o);
  r = svm_conv_open_source(&c);
  if (r == 0)
    r = svm_conv_open_dest(&c, svm_extent_list_bytes(&c.map, SVM_EXTENT_ZERO, 0));
  if (r == 0)
    r = copy(&c);
  if (r == 0)
    r = svm_conv_finish_dest(&c);
  svm_conv_close(&c);
  c.st.seconds = now() - t0;
  if (stats != NULL)
    *stats = c.st;
  return r;
}
