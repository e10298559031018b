/* Terminal progress bar (see progress.h). */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <svmotion/cli.h>

static double mono(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void svm_progress_init_file(struct svm_progress *p, const char *label, FILE *out, bool enabled)
{
  memset(p, 0, sizeof *p);
  p->out = out;
  p->enabled = enabled;
  p->label = label;
  p->start = mono();
  p->last_draw = -1;
  p->width = 30;
}

void svm_progress_init(struct svm_progress *p, const char *label)
{
  const char *env = getenv("SVM_PROGRESS");
  bool on = isatty(STDERR_FILENO);

  if (env != NULL && (strcmp(env, "0") == 0 || strcmp(env, "1") == 0))
    on = env[0] == '1';
  svm_progress_init_file(p, label, stderr, on);
}

void svm_progress_format(const struct svm_progress *p, uint64_t done, uint64_t total,
                         double elapsed, char *buf, size_t len)
{
  char bar[128], hd[32], ht[32], rate[32], eta[32] = "";
  unsigned w = p->width < sizeof bar - 1 ? p->width : (unsigned)sizeof bar - 1;
  double frac = total > 0 ? (double)done / (double)total : 1.0;

  if (frac > 1)
    frac = 1;
  unsigned fill = (unsigned)(frac * w);
  for (unsigned i = 0; i < w; i++)
    bar[i] = i < fill ? '#' : '-';
  bar[w] = '\0';
  svm_size_format(done, hd, sizeof hd);
  svm_size_format(total, ht, sizeof ht);
  if (elapsed > 0.05)
    snprintf(rate, sizeof rate, "%s/s", svm_size_format((uint64_t)((double)done / elapsed),
                                                        (char[32]){ 0 }, 32));
  else
    snprintf(rate, sizeof rate, "-");
  if (elapsed > 0.05 && done > 0 && done < total) {
    /* time left at the rate so far */
    uint64_t s = (uint64_t)((double)(total - done) * elapsed / (double)done + 0.5);
    if (s < 60)
      snprintf(eta, sizeof eta, " ETA %us", (unsigned)s);
    else if (s < 3600)
      snprintf(eta, sizeof eta, " ETA %um%02us", (unsigned)(s / 60), (unsigned)(s % 60));
    else
      snprintf(eta, sizeof eta, " ETA %uh%02um", (unsigned)(s / 3600),
               (unsigned)(s / 60 % 60));
  }
  snprintf(buf, len, "%s [%s] %3u%% %s / %s %s%s", p->label ? p->label : "", bar,
           (unsigned)(frac * 100), hd, ht, rate, eta);
}

static void draw(struct svm_progress *p, uint64_t done, uint64_t total)
{
  char line[256];
  double t = mono();

  svm_progress_format(p, done, total, t - p->start, line, sizeof line);
  fprintf(p->out, "\r%s\033[K", line);
  fflush(p->out);
  p->last_draw = t;
}

void svm_progress_update(struct svm_progress *p, uint64_t done, uint64_t total)
{
  if (!p->enabled)
    return;
  if (p->last_draw >= 0 && mono() - p->last_draw < 0.1 && done < total)
    return;
  draw(p, done, total);
}

void svm_progress_finish(struct svm_progress *p)
{
  if (!p->enabled || p->last_draw < 0)
    return;
  fprintf(p->out, "\r\033[K");
  fflush(p->out);
}
