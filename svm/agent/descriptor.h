/* The VM descriptor `<vm>.svm`: a small text file of `key = value` lines.
 *
 * Format (version 1):
 *   - one setting per line: `key = value`; spaces around '=' and at both ends are ignored;
 *   - blank lines and lines whose first non-blank character is '#' are comments;
 *   - keys are made of letters, digits, '.', '_' and '-'; each key appears once;
 *   - lines are at most SVM_DESC_MAX_LINE bytes, the file at most SVM_DESC_MAX_FILE bytes,
 *     every line ends with '\n' (a file whose last line has none is taken as truncated), and
 *     NUL bytes are refused;
 *   - keys svmotion reads:
 *       svm.version = 1                      the format version (required)
 *       name = vm1                           the VM's name, also its folder's name (required)
 *       uuid = <uuid>                        the VM's identity (required)
 *       export.tcp = ADDR:PORT               also export every disk over TCP (optional;
 *                                            port 0 = an ephemeral port per disk)
 *       diskN.file = disk0.raw               N = 0, 1, ... (no gaps, no leading zeros, < 64):
 *       diskN.size = 10737418240               a file name inside the VM folder, the virtual
 *       diskN.provisioning = thin              size in bytes (a multiple of 512), thin | thick
 *       diskN.uuid = <uuid>                    | eager-zeroed-thick (default thin), the disk's
 *       diskN.ctk = disk0.ctk                  identity, and its CBT file (default diskN.ctk)
 *   - every other key (and every comment) is kept and written back unchanged, in order, so a
 *     file that is loaded and saved without changes stays byte-identical; keys `diskN.<other>`
 *     are kept too, but a key "disk" + digit or '.' with a bad index ("disk01.file",
 *     "disk64.size", "disk.file", "disk1x.file", "disk7") is an error.
 * Errors name the file and line: "ds1/vm1/vm1.svm:7: duplicate key 'name' (first on line 2)".
 */
#ifndef SVM_DESCRIPTOR_H
#define SVM_DESCRIPTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
  SVM_DESC_VERSION = 1,
  SVM_DESC_MAX_DISKS = 64,
  SVM_DESC_MAX_LINE = 4096,
  SVM_DESC_MAX_FILE = 1 << 20,
};

enum svm_desc_prov { SVM_DESC_THIN, SVM_DESC_THICK, SVM_DESC_EAGER };

/* "thin", "thick", "eager-zeroed-thick" <-> enum; parse returns 0 or -EINVAL. */
const char *svm_desc_prov_name(enum svm_desc_prov p);
int svm_desc_prov_parse(const char *s, enum svm_desc_prov *out);

struct svm_desc_line {
  char *text;       /* the line as in the file, without its '\n' */
  char *key;        /* NULL for comments and blank lines */
  char *value;
  unsigned lineno;  /* 1-based; 0 for lines added since loading */
};

struct svm_desc_disk {
  const char *file;   /* the typed view points into the lines' values */
  uint64_t size;
  enum svm_desc_prov provisioning;
  const char *uuid;
  const char *ctk;    /* "diskN.ctk" when the key is absent */
  char ctk_default[32];
};

struct svm_desc {
  char *path;                       /* used in messages */
  struct svm_desc_line *lines;
  size_t nlines, cap;
  /* typed view, valid after a successful svm_desc_parse / svm_desc_set */
  unsigned version;
  const char *name, *uuid, *tcp;
  unsigned ndisks;
  struct svm_desc_disk disks[SVM_DESC_MAX_DISKS];
};

/* Parse `len` bytes of descriptor text; `path` names it in messages. */
int svm_desc_parse(const char *path, const char *buf, size_t len, struct svm_desc **out);
/* Read and parse a file (bounded to SVM_DESC_MAX_FILE). */
int svm_desc_load(const char *path, struct svm_desc **out);
/* An empty descriptor (no lines) to fill with svm_desc_set; not valid until it has the
 * required keys. */
struct svm_desc *svm_desc_new(const char *path);
void svm_desc_free(struct svm_desc *d);
/* `CLEANUP_DESC struct svm_desc *d = NULL;` frees d when it leaves scope (common/cleanup.h;
 * hand it on with TAKE_PTR). */
static inline void svm_desc_freep(struct svm_desc **d)
{
  svm_desc_free(*d);
}
#define CLEANUP_DESC __attribute__((cleanup(svm_desc_freep)))

/* The value of `key`, or NULL. */
const char *svm_desc_get(const struct svm_desc *d, const char *key);
/* Set (replace in place, or append) `key = value` without re-validating: call
 * svm_desc_validate after a batch of changes. Values may not hold newlines, NULs or
 * leading/trailing blanks. */
int svm_desc_set(struct svm_desc *d, const char *key, const char *value);
/* Append a comment line "# text" (text without newlines). */
int svm_desc_comment(struct svm_desc *d, const char *text);
/* Check the whole descriptor and refresh the typed view. */
int svm_desc_validate(struct svm_desc *d);

/* The file's text (malloc'd, '\n' after every line). */
int svm_desc_format(const struct svm_desc *d, char **out, size_t *len);
/* Write atomically: temp file in the same folder, fsync, rename, fsync of the folder. */
int svm_desc_save(const struct svm_desc *d, const char *path);
/* svm_desc_save in two halves, for a commit that must be short (a live move's pause): stage
 * writes the text durably into a new temporary file beside path (*tmp, malloc'd); commit
 * renames it over path and syncs the folder. A failed commit removes tmp; a stage that is
 * never committed is removed by its caller. */
int svm_desc_stage(const struct svm_desc *d, const char *path, char **tmp);
int svm_desc_commit(const char *tmp, const char *path);

/* Valid VM names: 1-64 characters out of [A-Za-z0-9._-], not starting with '.' or '-'. */
bool svm_vm_name_valid(const char *name);

#endif
