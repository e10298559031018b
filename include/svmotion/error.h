/* svmotion — the last error of the calling thread.
 *
 * Every library call returns 0 or a negative errno (a pointer-returning call returns NULL).
 * On failure it also leaves a message for people in a thread-local slot: what failed, on which
 * file or host, and what to do, e.g. "disk0.ctk: bad checksum; tracking restarted".
 */
#ifndef SVMOTION_ERROR_H
#define SVMOTION_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

/* The message of the calling thread's last failed call, or "" if none. */
const char *svm_last_error(void);

/* The errno of that failure (positive), or 0. */
int svm_last_errno(void);

#ifdef __cplusplus
}
#endif
#endif
