/* The VM descriptor `<vm>.svm` (format documented in descriptor.h).
 *
 * The file is kept as a list of lines, each with its original text, so that comments, unknown
 * keys and spacing survive a load/save round trip byte for byte; only lines set through
 * svm_desc_set are rewritten (as "key = value"). The typed view (name, disks, ...) points into
 * the lines and is rebuilt by svm_desc_validate. Descriptors come from disk and are not trusted:
 * every line is length-checked and a disk file name may not leave the VM folder. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/error.h"
#include "common/filekind.h"
#include "svm/agent/descriptor.h"

static const char *const prov_names[] = {
  [SVM_DESC_THIN] = "thin",
  [SVM_DESC_THICK] = "thick",
  [SVM_DESC_EAGER] = "eager-zeroed-thick",
};

const char *svm_desc_prov_name(enum svm_desc_prov p)
{
  return (unsigned)p < 3 ? prov_names[p] : "?";
}

int svm_desc_prov_parse(const char *s, enum svm_desc_prov *out)
{
  for (unsigned i = 0; i < 3; i++)
    if (strcmp(s, prov_names[i]) == 0) {
      *out = (enum svm_desc_prov)i;
      return 0;
    }
  return svm_error(EINVAL, "'%s' is not a provisioning (thin, thick or eager-zeroed-thick)", s);
}

bool svm_vm_name_valid(const char *name)
{
  size_t n = strlen(name);

  if (n == 0 || n > 64 || name[0] == '.' || name[0] == '-')
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '.' || c == '_' || c == '-'))
      return false;
  }
  return true;
}

struct svm_desc *svm_desc_new(const char *path)
{
  struct svm_desc *d = calloc(1, sizeof *d);

  if (!d)
    return NULL;
  d->path = strdup(path ? path : "(descriptor)");
  if (!d->path) {
    free(d);
    return NULL;
  }
  return d;
}

void svm_desc_free(struct svm_desc *d)
{
  if (!d)
    return;
  for (size_t i = 0; i < d->nlines; i++) {
    free(d->lines[i].text);
    free(d->lines[i].key);
    free(d->lines[i].value);
  }
  free(d->lines);
  free(d->path);
  free(d);
}

static bool key_char(char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '.' || c == '_' || c == '-';
}

static bool blank(char c)
{
  return c == ' ' || c == '\t' || c == '\r';
}

static struct svm_desc_line *add_line(struct svm_desc *d)
{
  if (d->nlines == d->cap) {
    size_t ncap = d->cap ? d->cap * 2 : 16;
    struct svm_desc_line *n = realloc(d->lines, ncap * sizeof *n);
    if (!n)
      return NULL;
    d->lines = n;
    d->cap = ncap;
  }
  struct svm_desc_line *l = &d->lines[d->nlines++];
  memset(l, 0, sizeof *l);
  return l;
}

static const struct svm_desc_line *find_key(const struct svm_desc *d, const char *key)
{
  for (size_t i = 0; i < d->nlines; i++)
    if (d->lines[i].key && strcmp(d->lines[i].key, key) == 0)
      return &d->lines[i];
  return NULL;
}

const char *svm_desc_get(const struct svm_desc *d, const char *key)
{
  const struct svm_desc_line *l = find_key(d, key);
  return l ? l->value : NULL;
}

/* Split one line (no '\n', no NUL) into key and value; comments leave key NULL. */
static int parse_line(struct svm_desc *d, struct svm_desc_line *l, const char *s, size_t n)
{
  size_t i = 0, ks, ke, vs, ve;

  l->text = strndup(s, n);
  if (!l->text)
    return svm_error(ENOMEM, "out of memory");
  while (i < n && blank(s[i]))
    i++;
  if (i == n || s[i] == '#')
    return 0;
  const char *eq = memchr(s, '=', n);
  if (!eq)
    return svm_error(EINVAL, "%s:%u: expected 'key = value' but the line has no '='", d->path,
                     l->lineno);
  ks = i;
  ke = (size_t)(eq - s);
  while (ke > ks && blank(s[ke - 1]))
    ke--;
  if (ke == ks)
    return svm_error(EINVAL, "%s:%u: no key before '='", d->path, l->lineno);
  for (size_t k = ks; k < ke; k++)
    if (!key_char(s[k]))
      return svm_error(EINVAL, "%s:%u: bad key '%.*s' (letters, digits, '.', '_', '-' only)",
                       d->path, l->lineno, (int)(ke - ks), s + ks);
  vs = (size_t)(eq - s) + 1;
  ve = n;
  while (vs < ve && blank(s[vs]))
    vs++;
  while (ve > vs && blank(s[ve - 1]))
    ve--;
  l->key = strndup(s + ks, ke - ks);
  l->value = strndup(s + vs, ve - vs);
  if (!l->key || !l->value)
    return svm_error(ENOMEM, "out of memory");
  const struct svm_desc_line *first = find_key(d, l->key);
  if (first && first != l)
    return svm_error(EINVAL, "%s:%u: duplicate key '%s' (first on line %u)", d->path, l->lineno,
                     l->key, first->lineno);
  return 0;
}

int svm_desc_parse(const char *path, const char *buf, size_t len, struct svm_desc **out)
{
  CLEANUP_DESC struct svm_desc *d = svm_desc_new(path);
  unsigned lineno = 0;
  size_t pos = 0;
  int r;

  *out = NULL;
  if (!d)
    return svm_error(ENOMEM, "out of memory");
  if (len > SVM_DESC_MAX_FILE)
    return svm_error(EFBIG, "%s: %zu bytes, larger than the %d bytes a descriptor may have",
                     path, len, SVM_DESC_MAX_FILE);
  while (pos < len) {
    const char *s = buf + pos;
    const char *nl = memchr(s, '\n', len - pos);
    size_t n = nl ? (size_t)(nl - s) : len - pos;

    lineno++;
    if (memchr(s, '\0', n))
      return svm_error(EINVAL, "%s:%u: the line holds a NUL byte (not a text file?)", path,
                       lineno);
    if (n > SVM_DESC_MAX_LINE)
      return svm_error(EINVAL, "%s:%u: line longer than %d bytes", path, lineno,
                       SVM_DESC_MAX_LINE);
    if (!nl)
      return svm_error(EINVAL, "%s:%u: truncated file: the last line has no newline", path,
                       lineno);
    struct svm_desc_line *l = add_line(d);
    if (!l)
      return svm_error(ENOMEM, "out of memory");
    l->lineno = lineno;
    r = parse_line(d, l, s, n);
    if (r < 0)
      return r;
    pos += n + 1;
  }
  r = svm_desc_validate(d);
  if (r < 0)
    return r;
  *out = TAKE_PTR(d);
  return 0;
}

int svm_desc_load(const char *path, struct svm_desc **out)
{
  /* no symbolic link followed; O_NONBLOCK: a FIFO is refused below instead of blocking here */
  CLEANUP_CLOSE int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
  CLEANUP_FREE char *buf = NULL;
  struct stat st;
  size_t got = 0;

  *out = NULL;
  if (fd < 0 && errno == ELOOP)
    return svm_error(ELOOP, "%s: is a symbolic link; svmd follows none (a descriptor is a "
                     "plain file in its VM folder)", path);
  if (fd < 0)
    return svm_error(errno, "%s: %s", path, strerror(errno));
  if (fstat(fd, &st) < 0)
    return svm_error(errno, "%s: stat: %s", path, strerror(errno));
  if (!S_ISREG(st.st_mode))
    return svm_error(EINVAL, "%s: is %s, not a regular file (a descriptor is a plain file)",
                     path, svm_file_kind(st.st_mode));
  if (st.st_size > SVM_DESC_MAX_FILE)
    return svm_error(EFBIG, "%s: %jd bytes, larger than the %d bytes a descriptor may have",
                     path, (intmax_t)st.st_size, SVM_DESC_MAX_FILE);
  buf = malloc((size_t)st.st_size + 1);
  if (!buf)
    return svm_error(ENOMEM, "out of memory");
  while (got < (size_t)st.st_size) {
    ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return svm_error(errno, "%s: %s", path, strerror(errno));
    if (n == 0)
      break;
    got += (size_t)n;
  }
  return svm_desc_parse(path, buf, got, out);
}

static int parse_u64(const char *s, uint64_t *out)
{
  uint64_t v = 0;

  if (!*s)
    return -EINVAL;
  for (; *s; s++) {
    if (*s < '0' || *s > '9')
      return -EINVAL;
    unsigned dgt = (unsigned)(*s - '0');
    if (v > (UINT64_MAX - dgt) / 10)
      return -ERANGE;
    v = v * 10 + dgt;
  }
  *out = v;
  return 0;
}

/* "diskN.field" -> index N and field. 0 = not a disk key, 1 = disk key, <0 = bad index.
 * "disk" followed by a digit or '.' is a disk key; other keys that merely start with "disk"
 * ("diskless", "disks.note") are unknown keys like any other. */
static int disk_key(const char *key, unsigned *index, const char **field)
{
  if (strncmp(key, "disk", 4) != 0 || !(key[4] == '.' || (key[4] >= '0' && key[4] <= '9')))
    return 0;
  const char *dot = strchr(key + 4, '.');
  if (!dot)
    return -EINVAL;
  size_t n = (size_t)(dot - (key + 4));
  if (n == 0 || n > 2 || (n > 1 && key[4] == '0'))
    return -EINVAL;
  unsigned v = 0;
  for (size_t i = 0; i < n; i++) {
    char c = key[4 + i];
    if (c < '0' || c > '9')
      return -EINVAL;
    v = v * 10 + (unsigned)(c - '0');
  }
  if (v >= SVM_DESC_MAX_DISKS)
    return -EINVAL;
  *index = v;
  *field = dot + 1;
  return 1;
}

static bool plain_file_name(const char *s)
{
  return *s && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* What svm_desc_validate has seen so far of the disk keys (and svm.version). */
struct desc_seen {
  unsigned first_line[SVM_DESC_MAX_DISKS];   /* first line of diskN.*, 0 = none */
  bool has_size[SVM_DESC_MAX_DISKS];
  unsigned max_index;
  bool any_disk, version;
};

/* svm.version, name, uuid, export.tcp: 1 if l is one of them (and valid), 0 if not, or <0. */
static int check_vm_key(struct svm_desc *d, const struct svm_desc_line *l, struct desc_seen *seen)
{
  uint64_t v;

  if (strcmp(l->key, "svm.version") == 0) {
    if (parse_u64(l->value, &v) < 0)
      return svm_error(EINVAL, "%s:%u: svm.version: '%s' is not a number", d->path, l->lineno,
                       l->value);
    if (v != SVM_DESC_VERSION)
      return svm_error(EINVAL, "%s:%u: svm.version = %s is not supported (this svmotion reads "
                       "version %d)", d->path, l->lineno, l->value, SVM_DESC_VERSION);
    d->version = (unsigned)v;
    seen->version = true;
  } else if (strcmp(l->key, "name") == 0) {
    if (!svm_vm_name_valid(l->value))
      return svm_error(EINVAL, "%s:%u: name: '%s' is not a valid VM name (1-64 of "
                       "[A-Za-z0-9._-], not starting with '.' or '-')", d->path, l->lineno,
                       l->value);
    d->name = l->value;
  } else if (strcmp(l->key, "uuid") == 0) {
    d->uuid = l->value;
  } else if (strcmp(l->key, "export.tcp") == 0) {
    if (!strchr(l->value, ':'))
      return svm_error(EINVAL, "%s:%u: export.tcp: '%s' is not ADDR:PORT", d->path, l->lineno,
                       l->value);
    d->tcp = l->value;
  } else {
    return 0;
  }
  return 1;
}

/* One field of diskN: file, size, provisioning, uuid, ctk (other fields are kept, unread). */
static int check_disk_field(struct svm_desc *d, const struct svm_desc_line *l, unsigned idx,
                            const char *field, struct desc_seen *seen)
{
  struct svm_desc_disk *dk = &d->disks[idx];
  uint64_t v;

  if (strcmp(field, "file") == 0 || strcmp(field, "ctk") == 0) {
    if (!plain_file_name(l->value))
      return svm_error(EINVAL, "%s:%u: %s: '%s' must be a file name inside the VM folder",
                       d->path, l->lineno, l->key, l->value);
    *(strcmp(field, "file") == 0 ? &dk->file : &dk->ctk) = l->value;
  } else if (strcmp(field, "size") == 0) {
    if (parse_u64(l->value, &v) < 0)
      return svm_error(EINVAL, "%s:%u: %s: '%s' is not a number", d->path, l->lineno, l->key,
                       l->value);
    if (v == 0 || v % 512 || v > (UINT64_C(1) << 62))
      return svm_error(EINVAL, "%s:%u: %s: %s is not a disk size (a non-zero multiple of "
                       "512)", d->path, l->lineno, l->key, l->value);
    dk->size = v;
    seen->has_size[idx] = true;
  } else if (strcmp(field, "provisioning") == 0) {
    if (svm_desc_prov_parse(l->value, &dk->provisioning) < 0)
      return svm_error_prefix("%s:%u: %s", d->path, l->lineno, l->key);
  } else if (strcmp(field, "uuid") == 0) {
    dk->uuid = l->value;
  }
  return 0;
}

/* A line with a key: the VM's keys, a disk's, or one kept unread. */
static int check_line(struct svm_desc *d, const struct svm_desc_line *l, struct desc_seen *seen)
{
  unsigned idx;
  const char *field;
  int k = check_vm_key(d, l, seen);

  if (k != 0)
    return k < 0 ? k : 0;
  k = disk_key(l->key, &idx, &field);
  if (k < 0)
    return svm_error(EINVAL, "%s:%u: bad disk index in '%s' (disk0 ... disk%d, no leading "
                     "zeros)", d->path, l->lineno, l->key, SVM_DESC_MAX_DISKS - 1);
  if (k == 0)
    return 0;
  if (!seen->first_line[idx])
    seen->first_line[idx] = l->lineno ? l->lineno : 1;
  if (!seen->any_disk || idx > seen->max_index)
    seen->max_index = idx;
  seen->any_disk = true;
  return check_disk_field(d, l, idx, field, seen);
}

/* Disk i once every line is read: numbered without a gap, its required keys, the default
 * ctk, and no file shared with an earlier disk. */
static int check_disk(struct svm_desc *d, unsigned i, const struct desc_seen *seen)
{
  struct svm_desc_disk *dk = &d->disks[i];

  if (!seen->first_line[i]) {
    unsigned j = i + 1;
    while (!seen->first_line[j])
      j++;
    return svm_error(EINVAL, "%s:%u: disk%u without disk%u (disks are numbered 0, 1, ...)",
                     d->path, seen->first_line[j], j, i);
  }
  if (!dk->file)
    return svm_error(EINVAL, "%s: missing key 'disk%u.file'", d->path, i);
  if (!seen->has_size[i])
    return svm_error(EINVAL, "%s: missing key 'disk%u.size'", d->path, i);
  if (!dk->uuid)
    return svm_error(EINVAL, "%s: missing key 'disk%u.uuid'", d->path, i);
  if (!dk->ctk) {
    snprintf(dk->ctk_default, sizeof dk->ctk_default, "disk%u.ctk", i);
    dk->ctk = dk->ctk_default;
  }
  if (strcmp(dk->file, dk->ctk) == 0)
    return svm_error(EINVAL, "%s: disk%u: file and ctk are the same file", d->path, i);
  return 0;
}

/* No file named twice across every disk's file and ctk keys (a tracker writing over another
 * disk's data, two exports of one file), and none named as the descriptor itself. Names are
 * compared as the descriptor spells them: they are plain names in one folder, and links are
 * never followed (svm/agent/confine.c), so one spelling is one file. */
static int check_aliases(const struct svm_desc *d)
{
  for (unsigned i = 0; i < d->ndisks; i++) {
    const struct svm_desc_disk *a = &d->disks[i];
    const char *names[2] = { a->file, a->ctk }, *keys[2] = { "file", "ctk" };
    for (unsigned k = 0; k < 2; k++) {
      size_t n = d->name ? strlen(d->name) : 0;
      if (n && strncmp(names[k], d->name, n) == 0 && strcmp(names[k] + n, ".svm") == 0)
        return svm_error(EINVAL, "%s: disk%u.%s names %s, which is the descriptor itself",
                         d->path, i, keys[k], names[k]);
      for (unsigned j = 0; j < d->ndisks; j++) {
        const struct svm_desc_disk *b = &d->disks[j];
        if (j != i && strcmp(names[k], b->file) == 0)
          return svm_error(EINVAL, "%s: disk%u.%s names %s, which is disk%u's file", d->path,
                           i, keys[k], names[k], j);
        if (j != i && strcmp(names[k], b->ctk) == 0)
          return svm_error(EINVAL, "%s: disk%u.%s names %s, which is disk%u's ctk", d->path, i,
                           keys[k], names[k], j);
      }
    }
  }
  return 0;
}

int svm_desc_validate(struct svm_desc *d)
{
  struct desc_seen seen = { .any_disk = false };
  int r;

  d->version = 0;
  d->name = d->uuid = d->tcp = NULL;
  d->ndisks = 0;
  memset(d->disks, 0, sizeof d->disks);

  for (size_t i = 0; i < d->nlines; i++) {
    if (!d->lines[i].key)
      continue;
    r = check_line(d, &d->lines[i], &seen);
    if (r < 0)
      return r;
  }
  if (!seen.version)
    return svm_error(EINVAL, "%s: missing key 'svm.version'", d->path);
  if (!d->name)
    return svm_error(EINVAL, "%s: missing key 'name'", d->path);
  if (!d->uuid)
    return svm_error(EINVAL, "%s: missing key 'uuid'", d->path);
  if (!seen.any_disk)
    return 0;
  for (unsigned i = 0; i <= seen.max_index; i++) {
    r = check_disk(d, i, &seen);
    if (r < 0)
      return r;
  }
  d->ndisks = seen.max_index + 1;
  return check_aliases(d);
}

int svm_desc_set(struct svm_desc *d, const char *key, const char *value)
{
  size_t kl = strlen(key), vl = strlen(value);
  struct svm_desc_line *l = NULL;

  if (kl == 0)
    return svm_error(EINVAL, "empty key");
  for (size_t i = 0; i < kl; i++)
    if (!key_char(key[i]))
      return svm_error(EINVAL, "bad key '%s'", key);
  if (strpbrk(value, "\n\r") || (vl && (blank(value[0]) || blank(value[vl - 1]))))
    return svm_error(EINVAL, "%s: value '%s' has newlines or blanks at its ends", key, value);
  if (kl + vl + 3 > SVM_DESC_MAX_LINE)
    return svm_error(EINVAL, "%s: value too long", key);
  for (size_t i = 0; i < d->nlines; i++)
    if (d->lines[i].key && strcmp(d->lines[i].key, key) == 0)
      l = &d->lines[i];
  CLEANUP_FREE char *text = NULL;
  CLEANUP_FREE char *k = strdup(key);
  CLEANUP_FREE char *v = strdup(value);
  if (!k || !v || asprintf(&text, "%s = %s", key, value) < 0) {
    text = NULL;
    return svm_error(ENOMEM, "out of memory");
  }
  if (!l) {
    l = add_line(d);
    if (!l)
      return svm_error(ENOMEM, "out of memory");
  } else {
    free(l->text);
    free(l->key);
    free(l->value);
  }
  l->text = TAKE_PTR(text);
  l->key = TAKE_PTR(k);
  l->value = TAKE_PTR(v);
  return 0;
}

int svm_desc_comment(struct svm_desc *d, const char *text)
{
  struct svm_desc_line *l;
  char *t;

  if (strpbrk(text, "\n\r") || strlen(text) + 2 > SVM_DESC_MAX_LINE)
    return svm_error(EINVAL, "comment with a newline or too long");
  if (asprintf(&t, "# %s", text) < 0)
    return svm_error(ENOMEM, "out of memory");
  l = add_line(d);
  if (!l) {
    free(t);
    return svm_error(ENOMEM, "out of memory");
  }
  l->text = t;
  return 0;
}

int svm_desc_format(const struct svm_desc *d, char **out, size_t *len)
{
  size_t n = 0, pos = 0;
  char *buf;

  for (size_t i = 0; i < d->nlines; i++)
    n += strlen(d->lines[i].text) + 1;
  buf = malloc(n + 1);
  if (!buf)
    return svm_error(ENOMEM, "out of memory");
  for (size_t i = 0; i < d->nlines; i++) {
    size_t l = strlen(d->lines[i].text);
    memcpy(buf + pos, d->lines[i].text, l);
    pos += l;
    buf[pos++] = '\n';
  }
  buf[pos] = '\0';
  *out = buf;
  *len = pos;
  return 0;
}

static int fsync_dir_of(const char *path)
{
  CLEANUP_FREE char *copy = strdup(path);
  CLEANUP_CLOSE int fd = -1;

  if (!copy)
    return svm_error(ENOMEM, "out of memory");
  fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) < 0)
    return svm_error(errno, "%s: fsync of the folder: %s", path, strerror(errno));
  return 0;
}

static int write_all(int fd, const char *name, const char *buf, size_t len)
{
  size_t off = 0;

  while (off < len) {
    ssize_t n = write(fd, buf + off, len - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return svm_error(errno, "%s: %s", name, strerror(errno));
    off += (size_t)n;
  }
  return 0;
}

/* The text in a new file tmp, durable before it is renamed over anything. */
static int write_tmp(const char *tmp, const char *buf, size_t len)
{
  CLEANUP_CLOSE int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  int r;

  if (fd < 0)
    return svm_error(errno, "%s: %s", tmp, strerror(errno));
  if (fchmod(fd, 0600) < 0)          /* private whatever the umask */
    return svm_error(errno, "%s: chmod: %s", tmp, strerror(errno));
  r = write_all(fd, tmp, buf, len);
  if (r < 0)
    return r;
  if (fsync(fd) < 0)
    return svm_error(errno, "%s: fsync: %s", tmp, strerror(errno));
  return 0;
}

int svm_desc_stage(const struct svm_desc *d, const char *path, char **tmp_out)
{
  CLEANUP_FREE char *buf = NULL;
  char *tmp = NULL;
  size_t len;
  int r;

  *tmp_out = NULL;
  r = svm_desc_format(d, &buf, &len);
  if (r < 0)
    return r;
  if (asprintf(&tmp, "%s.tmp.%ld", path, (long)getpid()) < 0)
    return svm_error(ENOMEM, "out of memory");
  r = write_tmp(tmp, buf, len);
  if (r < 0) {
    unlink(tmp);
    free(tmp);
    return r;
  }
  *tmp_out = tmp;
  return 0;
}

int svm_desc_commit(const char *tmp, const char *path)
{
  if (rename(tmp, path) < 0) {
    int r = svm_error(errno, "%s: rename: %s", path, strerror(errno));
    unlink(tmp);
    return r;
  }
  return fsync_dir_of(path);
}

int svm_desc_save(const struct svm_desc *d, const char *path)
{
  CLEANUP_FREE char *tmp = NULL;
  int r = svm_desc_stage(d, path, &tmp);

  return r < 0 ? r : svm_desc_commit(tmp, path);
}
