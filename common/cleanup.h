/* Internal: release on scope exit, so a function with several failure paths does its teardown
 * once (nbdkit's common/utils/cleanup.h is the model). gcc and clang both support
 * __attribute__((cleanup)); the handler gets a pointer to the variable.
 *
 *     CLEANUP_FREE char *buf = malloc(n);        free(buf) when buf leaves scope
 *     CLEANUP_CLOSE int fd = open(...);          close(fd) if fd >= 0
 *     ACQUIRE_LOCK_FOR_CURRENT_SCOPE(&mu);       unlock at the end of the enclosing block
 *
 * To hand a resource on (return it, store it), take it out: `*out = TAKE_PTR(buf);`,
 * `int r = TAKE_FD(fd);`.
 */
#ifndef SVM_COMMON_CLEANUP_H
#define SVM_COMMON_CLEANUP_H

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static inline void svm_cleanup_free(void *p)
{
  free(*(void **)p);
}

static inline void svm_cleanup_close(int *fd)
{
  if (*fd >= 0) {
    int saved = errno;            /* a failure path's errno must survive the cleanup */
    close(*fd);
    errno = saved;
  }
}

static inline void svm_cleanup_unlock(pthread_mutex_t **mu)
{
  pthread_mutex_unlock(*mu);
}

#define CLEANUP_FREE __attribute__((cleanup(svm_cleanup_free)))
#define CLEANUP_CLOSE __attribute__((cleanup(svm_cleanup_close)))

#define SVM_CLEANUP_CAT_(a, b) a##b
#define SVM_CLEANUP_CAT(a, b) SVM_CLEANUP_CAT_(a, b)
#define ACQUIRE_LOCK_FOR_CURRENT_SCOPE(mu)                                            \
  pthread_mutex_t *SVM_CLEANUP_CAT(svm_scope_lock_, __LINE__)                         \
      __attribute__((cleanup(svm_cleanup_unlock), unused)) = (mu);                    \
  pthread_mutex_lock(SVM_CLEANUP_CAT(svm_scope_lock_, __LINE__))

/* Move ownership out of a CLEANUP_ variable. */
#define TAKE_PTR(p) ({ __typeof__(p) svm_take_ = (p); (p) = NULL; svm_take_; })
#define TAKE_FD(fd) ({ int svm_take_ = (fd); (fd) = -1; svm_take_; })

#endif
