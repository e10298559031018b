/* svmotion's command-line helpers, shared by its tools (svm-convert, svmctl, ...) and open to
 * any program built on the library: sizes for people and a progress bar on a terminal. */
#ifndef SVMOTION_CLI_H
#define SVMOTION_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Sizes: parse "10G", "512M", "4096", "1.5T" (binary multiples: K = 1024).
 * Accepts digits with an optional fraction and an optional suffix K, M, G, T, P, E (also
 * "KiB", "KB", "k"...; all mean powers of 1024) or "B". Returns 0 or -EINVAL (junk, negative,
 * empty, a fraction of a byte) / -ERANGE (over 2^64-1). */
int svm_size_parse(const char *s, uint64_t *out);

/* "0 B", "512 B", "4.0 KiB", "1.5 GiB". Returns buf. */
char *svm_size_format(uint64_t n, char *buf, size_t len);

/* A progress bar on a terminal: drawn on stderr only when stderr is a terminal (or when forced),
 * redrawn at most ten times a second, with rate and time left.
 *
 *   struct svm_progress p;
 *   svm_progress_init(&p, "converting");
 *   svm_progress_update(&p, done, total);   ... as often as you like
 *   svm_progress_finish(&p);                 clears the line */
struct svm_progress {
  FILE *out;
  bool enabled;
  const char *label;
  double start, last_draw;
  unsigned width;            /* columns of the bar itself */
};

/* Enabled when stderr is a terminal (SVM_PROGRESS=1 forces it on, =0 off). */
void svm_progress_init(struct svm_progress *p, const char *label);
/* Draw to out when enabled (for tests: any FILE, forced on). */
void svm_progress_init_file(struct svm_progress *p, const char *label, FILE *out, bool enabled);
void svm_progress_update(struct svm_progress *p, uint64_t done, uint64_t total);
/* Clear the bar's line (only when something was drawn). */
void svm_progress_finish(struct svm_progress *p);

/* The line svm_progress_update would draw, without the leading \r (exposed for tests). */
void svm_progress_format(const struct svm_progress *p, uint64_t done, uint64_t total,
                         double elapsed, char *buf, size_t len);

#endif
