/* libFuzzer target for the NFC frame parser and the receiver's state machine (nfc/frame.c,
 * nfc/conn.c, nfc/recv.c): whatever bytes a sender sends, the receiver must neither crash nor
 * read out of bounds, must only open names that stay in its folder, and must only write inside
 * the range it opened, below the file's size. The sink here checks those promises and writes
 * nothing; the progress records go to a temporary folder. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "nfc/nfc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct mem {
  const uint8_t *p;
  size_t left;
};

static ssize_t mem_read(void *opaque, void *buf, size_t len)
{
  struct mem *m = opaque;
  if (len > m->left)
    len = m->left;
  /* short reads, as a network gives them */
  if (len > 7 && (m->left & 1))
    len = len / 2;
  memcpy(buf, m->p, len);
  m->p += len;
  m->left -= len;
  return (ssize_t)len;
}

static ssize_t mem_write(void *opaque, const void *buf, size_t len)
{
  (void)opaque, (void)buf;
  return (ssize_t)len;
}

static const struct nfc_transport_ops mem_ops = { "fuzz", mem_read, mem_write, NULL, NULL };

struct file {
  struct nfc_open o;
  char buf[NFC_MAX_DATA];
  bool lent;
};

static struct file the_file;

static int f_open(void *opaque, int dirfd, const struct nfc_open *o, bool fresh, void **file)
{
  (void)opaque, (void)dirfd, (void)fresh;
  if (!nfc_name_ok(o->name) || strchr(o->name, '/') != NULL || strcmp(o->name, "..") == 0)
    abort();
  if (o->start > o->end || o->end > o->size)
    abort();
  the_file.o = *o;
  *file = &the_file;
  return 0;
}

static int f_buffer(void *file, uint32_t len, void **buf)
{
  struct file *f = file;
  if (len == 0 || len > NFC_MAX_DATA)
    abort();
  f->lent = true;
  *buf = f->buf;
  return 0;
}

static int f_write(void *file, void *buf, uint32_t len, uint64_t off)
{
  struct file *f = file;
  if (!f->lent || buf != f->buf || off < f->o.start || off > f->o.end ||
      len > f->o.end - off)
    abort();
  f->lent = false;
  return 0;
}

static int f_discard(void *file, uint64_t off, uint64_t len)
{
  struct file *f = file;
  if (off < f->o.start || off + len > f->o.end)
    abort();
  return 0;
}

static int f_sync(void *file) { (void)file; return 0; }
static void f_close(void *file) { (void)file; }

static int f_commit(void *opaque, int dirfd, const struct nfc_open *o)
{
  (void)opaque, (void)dirfd;
  if (!nfc_name_ok(o->name))
    abort();
  return 0;
}

/* A GET must only ever name a file of the folder. */
static int f_get(void *opaque, int dirfd, const struct nfc_open *o, struct nfc_conn *c)
{
  (void)opaque, (void)dirfd, (void)c;
  if (!nfc_name_ok(o->name))
    abort();
  return 0;
}

static const struct nfc_sink_ops sink = { f_open, f_buffer, f_write, f_discard, f_sync,
                                          f_close, f_commit, f_get };

static int dirfd = -1;
static char dir[] = "/tmp/fuzz-nfc.XXXXXX";

static void remove_dir(void)
{
  char cmd[64];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0)
    return;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct nfc_hdr h;
  struct nfc_open o;

  if (dirfd < 0) {
    if (mkdtemp(dir) == NULL || (dirfd = open(dir, O_RDONLY | O_DIRECTORY)) < 0)
      abort();
    atexit(remove_dir);
  }
  /* The pieces alone. */
  if (size >= NFC_HDR_SIZE && nfc_hdr_decode(data, &h) == 0 && h.type == NFC_DATA &&
      (h.len == 0 || h.len > NFC_MAX_DATA))
    abort();
  if (nfc_open_decode(data, size, &o) == 0) {
    if (!nfc_name_ok(o.name) || o.start > o.end || o.end > o.size)
      abort();
    uint64_t prev = 0;
    for (uint32_t i = 0; i < o.nranges; prev = o.ranges[i][1], i++)
      if (o.ranges[i][0] != prev || o.ranges[i][1] < o.ranges[i][0])
        abort();
  }
  /* The receiver over the whole input as a stream. With the first byte odd, the rest is taken
   * as frames whose magic, version and CRCs are made right first, so that the fuzzer reaches
   * the state machine behind the checks rather than only the checks. */
  uint8_t *fixed = NULL;
  struct mem m = { data, size };
  if (size > 1 && (data[0] & 1)) {
    if ((fixed = malloc(size - 1)) == NULL)
      return 0;
    memcpy(fixed, data + 1, size - 1);
    for (size_t at = 0; at + NFC_HDR_SIZE <= size - 1;) {
      uint8_t *f = fixed + at;
      uint32_t len = (uint32_t)f[8] << 24 | (uint32_t)f[9] << 16 | (uint32_t)f[10] << 8 | f[11];
      size_t avail = size - 1 - at - NFC_HDR_SIZE;
      uint32_t crc = svm_crc32c(0, f + NFC_HDR_SIZE, len < avail ? len : avail);
      memcpy(f, "NFC1", 4);
      f[4] = NFC_VERSION;
      f[12] = (uint8_t)(crc >> 24), f[13] = (uint8_t)(crc >> 16);
      f[14] = (uint8_t)(crc >> 8), f[15] = (uint8_t)crc;
      if (len > avail)
        break;
      at += NFC_HDR_SIZE + len;
    }
    m = (struct mem){ fixed, size - 1 };
  }
  struct nfc_conn *c;
  if (nfc_conn_new(&mem_ops, &m, "fuzz", &c) < 0)
    return 0;
  nfc_recv_serve(c, dirfd, &sink, NULL, NULL, NULL);
  nfc_conn_free(c);
  free(fixed);
  return 0;
}
