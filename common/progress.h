/* A progress bar on a terminal: drawn on stderr only when stderr is a terminal (or when forced),
 * redrawn at most ten times a second, with rate and time left.
 *
 *   struct svm_progress p;
 *   svm_progress_init(&p, "converting");
 *   svm_progress_update(&p, done, total);   ... as often as you like
 *   svm_progress_finish(&p);                 clears the line */
#ifndef SVM_COMMON_PROGRESS_H
#define SVM_COMMON_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

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
