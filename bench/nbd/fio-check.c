/* fio-check: verify a time-based fio write cell of bench/nbd.sh, then undo it.
 *
 *   fio-check MASTER IOLOG DISK < the disk as the server returns it (nbdcopy URI -)
 *
 * Before the cell the disk equals MASTER. fio wrote blocks with --verify=crc32c headers and
 * logged every write (--write_iolog, ramp included). The disk read back through the server
 * must hold, at every offset fio wrote, a fio block of that cell's size for that offset with
 * a good crc32c (a lost, misplaced, torn or corrupted write fails), and everywhere else
 * MASTER's bytes. Then the written blocks are copied back from MASTER into DISK (the file,
 * written directly: buffered, coherent with the server's page cache), so the next cell starts
 * from MASTER again. Exit 0 ok, 1 verification failed (first problems on stderr), 2 usage/IO.
 *
 * fio's block (fio 3.x verify.h): struct verify_header { u16 magic 0xacca; u16 verify_type;
 * u32 len; u64 rand_seed; u64 offset; u32 time_sec, time_nsec; u16 thread, numberio;
 * u32 crc32 (of the header before it) } (40 bytes), then struct vhdr_crc32 { u32 crc32 } over
 * the rest of the block (bytes 44 .. len). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static uint32_t table[256];

static uint32_t crc32c(const unsigned char *p, size_t n)
{
  uint32_t c = ~0u;
  while (n--)
    c = table[(c ^ *p++) & 0xff] ^ (c >> 8);
  return c;                      /* fio: init ~0, no final inversion */
}

static uint32_t get32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

int main(int argc, char **argv)
{
  if (argc != 4) {
    fprintf(stderr, "usage: fio-check MASTER IOLOG DISK < disk-as-served\n");
    return 2;
  }
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    table[i] = c;
  }
  int mfd = open(argv[1], O_RDONLY), dfd = open(argv[3], O_WRONLY);
  struct stat st;
  if (mfd < 0 || dfd < 0 || fstat(mfd, &st) < 0) {
    perror("fio-check: open");
    return 2;
  }
  size_t size = (size_t)st.st_size;
  const unsigned char *master = mmap(NULL, size, PROT_READ, MAP_SHARED, mfd, 0);
  if (master == MAP_FAILED) {
    perror("fio-check: mmap");
    return 2;
  }
  /* the writes: per 512-byte sector, the length of the fio block starting there (0: none) */
  size_t nsec = size / 512;
  uint32_t *blk = calloc(nsec, sizeof *blk);
  FILE *log = fopen(argv[2], "r");
  if (!blk || !log) {
    perror("fio-check: iolog");
    return 2;
  }
  char line[512], file[256], act[32];
  unsigned long long off, len, writes = 0;
  while (fgets(line, sizeof line, log)) {
    unsigned long long ts;
    if (sscanf(line, "%llu %255s %31s %llu %llu", &ts, file, act, &off, &len) != 5 ||
        strcmp(act, "write") != 0)
      continue;
    if (off % 512 || len % 512 || off + len > size || len > UINT32_MAX) {
      fprintf(stderr, "fio-check: bad write in the iolog: %s", line);
      return 2;
    }
    blk[off / 512] = (uint32_t)len;
    writes++;
  }
  fclose(log);
  if (writes == 0) {
    fprintf(stderr, "fio-check: no write in %s\n", argv[2]);
    return 1;
  }
  /* the disk as served, sequentially from stdin */
  size_t bufsz = 64u << 20, pos = 0, errors = 0, checked = 0;
  unsigned char *buf = malloc(bufsz);
  size_t have = 0;                     /* bytes of the disk read so far */
  while (pos < size) {
    /* read the next chunk (whole) */
    size_t want = size - have < bufsz ? size - have : bufsz, got = 0;
    while (got < want) {
      ssize_t r = read(0, buf + got, want - got);
      if (r <= 0) {
        fprintf(stderr, "fio-check: the disk read back ends at %zu of %zu bytes\n", have + got, size);
        return 1;
      }
      got += (size_t)r;
    }
    size_t base = have;
    have += got;
    /* a block never straddles chunks: chunks are 64 MiB, blocks at most 32 MiB and aligned
     * to their size in every cell of bench/nbd.sh; check it anyway */
    while (pos < have) {
      uint32_t l = blk[pos / 512];
      if (l && pos + l > have) {
        fprintf(stderr, "fio-check: a block at %zu straddles a chunk\n", pos);
        return 2;
      }
      const unsigned char *p = buf + (pos - base);
      if (l) {
        const char *why = NULL;
        if ((get32(p) & 0xffff) != 0xacca)
          why = "no fio block (a lost write?)";
        else if (get32(p + 4) != l)
          why = "wrong length";
        else if (get64(p + 16) != pos)
          why = "a block of another offset (a misplaced write?)";
        else if (get32(p + 40) != crc32c(p + 44, l - 44))
          why = "bad crc32c (a torn or corrupted write?)";
        if (why && errors++ < 10)
          fprintf(stderr, "fio-check: offset %zu length %u: %s\n", pos, l, why);
        checked++;
        pos += l;
      } else {
        if (memcmp(p, master + pos, 512) != 0 && errors++ < 10)
          fprintf(stderr, "fio-check: offset %zu: differs from the preconditioned data, "
                  "and fio did not write there\n", pos);
        pos += 512;
      }
    }
  }
  if (errors) {
    fprintf(stderr, "fio-check: %zu bad blocks (%zu fio blocks checked)\n", errors, checked);
    return 1;
  }
  /* undo: the written blocks back to the master's bytes */
  for (size_t s = 0; s < nsec; s++)
    if (blk[s]) {
      size_t o = s * 512;
      if (pwrite(dfd, master + o, blk[s], (off_t)o) != (ssize_t)blk[s]) {
        perror("fio-check: restore");
        return 2;
      }
    }
  if (fdatasync(dfd) < 0) {
    perror("fio-check: fdatasync");
    return 2;
  }
  printf("%zu\n", checked);
  return 0;
}
