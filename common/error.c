/* Thread-local last error, in the manner of libnbd's set_error(): the return value carries the
 * errno for code, the message carries the context for people. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"

enum { ERR_MAX = 1024 };

static _Thread_local char err_msg[ERR_MAX];
static _Thread_local int err_num;

const char *svm_last_error(void)
{
  return err_msg;
}

int svm_last_errno(void)
{
  return err_num;
}

void svm_error_clear(void)
{
  err_msg[0] = '\0';
  err_num = 0;
}

int svm_error(int errnum, const char *fmt, ...)
{
  va_list ap;

  if (errnum <= 0)
    errnum = errnum < 0 ? -errnum : EIO;
  va_start(ap, fmt);
  vsnprintf(err_msg, sizeof err_msg, fmt, ap);
  va_end(ap);
  err_num = errnum;
  return -errnum;
}

int svm_error_prefix(const char *fmt, ...)
{
  char prefix[ERR_MAX], old[ERR_MAX];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  memcpy(old, err_msg, sizeof old);
  /* A long chain of prefixes is cut at ERR_MAX; the start of the message matters most. */
  if (snprintf(err_msg, sizeof err_msg, "%s: %s", prefix, old) >= (int)sizeof err_msg)
    err_msg[sizeof err_msg - 1] = '\0';
  if (err_num == 0)
    err_num = EIO;
  return -err_num;
}
