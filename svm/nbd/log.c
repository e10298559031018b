/* Log lines about clients. What a client sends (export and context names, option payloads)
 * can reach a message, so every line is escaped: a control character could otherwise forge
 * log lines or drive the operator's terminal. And a client can make errors as fast as it can
 * send, so lines are rate-limited per client (and per listener for refusals). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "svm/nbd/internal.h"

uint64_t nbds_now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void nbds_escape(const char *s, char *out, size_t len)
{
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;

  if (len == 0)
    return;
  for (; *s && o + 1 < len; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch >= 0x20 && ch < 0x7f && ch != '\\') {
      out[o++] = (char)ch;
      continue;
    }
    if (o + 4 >= len)
      break;
    out[o++] = '\\';
    if (ch == '\\') {
      out[o++] = '\\';
      continue;
    }
    out[o++] = 'x';
    out[o++] = hex[ch >> 4];
    out[o++] = hex[ch & 15];
  }
  out[o] = '\0';
}

void nbds_log_client(const char *peer, const char *fmt, ...)
{
  char raw[640], msg[1024];
  va_list ap;
  int n;

  va_start(ap, fmt);
  vsnprintf(raw, sizeof raw, fmt, ap);
  va_end(ap);
  n = snprintf(msg, sizeof msg, "%s: nbd: client %s: ", program_invocation_short_name, peer);
  if (n < 0 || (size_t)n >= sizeof msg - 2)
    return;
  nbds_escape(raw, msg + n, sizeof msg - (size_t)n - 1);
  n = (int)strlen(msg);
  msg[n++] = '\n';
  /* one write(2), so that lines of several threads do not mix */
  if (write(STDERR_FILENO, msg, (size_t)n) < 0) { /* nowhere to report it */ }
}

bool nbds_ratelimit_ok(struct nbds_ratelimit *rl, unsigned *suppressed)
{
  uint64_t now = nbds_now_ns();

  *suppressed = 0;
  if (now - rl->window_ns >= 1000000000u) {
    /* a new second: one more line, or a new burst after a quiet second */
    rl->n = now - rl->window_ns >= 2000000000u ? 0 : NBD_LOG_BURST - 1;
    rl->window_ns = now;
  }
  if (rl->n >= NBD_LOG_BURST) {
    rl->suppressed++;
    return false;
  }
  rl->n++;
  *suppressed = rl->suppressed;
  rl->suppressed = 0;
  return true;
}
