/* Internal: setting the thread-local last error (see include/svmotion/error.h). */
#ifndef SVM_COMMON_ERROR_H
#define SVM_COMMON_ERROR_H

#include <svmotion/error.h>

/* Record a message and return -errnum, so a failure path reads
 *     return svm_error(ENOSPC, "%s: needs %s, %s free", path, need, have);
 * errnum is positive; 0 is turned into EIO so a failure never looks like success. */
int svm_error(int errnum, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefix the current message with more context: "ctx: <old message>". Returns -errno. */
int svm_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void svm_error_clear(void);

#endif
