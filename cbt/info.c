/* Information about a tracker, live (cbt_get_info) or from a .ctk file offline
 * (cbt_info_read, used by `svmctl cbt info`), and its text/JSON rendering. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cbt/internal.h"
#include "common/uuid.h"
#include "common/error.h"

static uint64_t count_marked(const uint16_t *ep, uint64_t n)
{
  uint64_t cnt = 0, b = 0;
  while ((b = cbt_scan_above(ep, b, n, 0)) < n) {
    uint64_t e = cbt_scan_not_above(ep, b, n, 0);
    cnt += e - b;
    b = e;
  }
  return cnt;
}

static void fill(struct cbt_info *info, const struct ctk_header *h, uint64_t cur,
                 uint64_t marked)
{
  memset(info, 0, sizeof *info);
  svm_uuid_format(h->uuid, info->uuid);
  info->version = h->version;
  info->granularity = h->granularity;
  info->disk_size = h->disk_size;
  info->epoch = h->base + cur;
  info->blocks_marked = marked;
  info->oldest_changeid = h->floor;
}

int cbt_get_info(struct cbt *t, struct cbt_info *info)
{
  pthread_rwlock_rdlock(&t->shape);
  pthread_mutex_lock(&t->mu);
  struct ctk_header h = t->h;
  uint64_t cur = t->cur;
  pthread_mutex_unlock(&t->mu);
  fill(info, &h, cur, count_marked(t->ep, t->nblocks));
  pthread_rwlock_unlock(&t->shape);
  return 0;
}

int cbt_info_read(const char *ctk_path, struct cbt_info *info)
{
  struct stat st;
  struct ctk_image img;
  int fd = open(ctk_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return svm_error(errno, "%s: %s", ctk_path, strerror(errno));
  if (fstat(fd, &st) < 0) {
    int e = errno;
    close(fd);
    return svm_error(e, "%s: %s", ctk_path, strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return svm_error(EINVAL, "%s: not a regular file", ctk_path);
  }
  struct ctk_src src = { .fd = fd, .size = (uint64_t)st.st_size };
  int r = ctk_load(&src, &img);
  close(fd);
  if (r < 0)
    return svm_error_prefix("%s", ctk_path);
  fill(info, &img.h, img.h.cur, count_marked(img.ep, img.h.nblocks));
  ctk_image_free(&img);
  return 0;
}

int cbt_info_print(const struct cbt_info *info, bool json, FILE *f)
{
  int r;
  if (json)
    r = fprintf(f, "{\"uuid\":\"%s\",\"version\":%" PRIu32 ",\"granularity\":%" PRIu32
                ",\"disk-size\":%" PRIu64 ",\"epoch\":%" PRIu64 ",\"blocks-marked\":%" PRIu64
                ",\"oldest-changeid\":%" PRIu64 "}\n", info->uuid, info->version,
                info->granularity, info->disk_size, info->epoch, info->blocks_marked,
                info->oldest_changeid);
  else
    r = fprintf(f, "uuid:            %s\nversion:         %" PRIu32 "\ngranularity:     %"
                PRIu32 "\ndisk-size:       %" PRIu64 "\nepoch:           %" PRIu64
                "\nblocks-marked:   %" PRIu64 "\noldest-changeid: %" PRIu64 "\n", info->uuid,
                info->version, info->granularity, info->disk_size, info->epoch,
                info->blocks_marked, info->oldest_changeid);
  if (r < 0 || fflush(f) != 0)
    return svm_error(EIO, "writing the tracker information: %s", strerror(errno));
  return 0;
}
