/* Internal: fast all-zero checks on read buffers, so that allocated zeros count as holes for
 * thin targets. */
#ifndef SVM_ZERO_H
#define SVM_ZERO_H

#include <stdbool.h>
#include <stddef.h>

/* True when all len bytes of buf are zero (len 0: true). Any alignment, any length. */
bool svm_is_zero(const void *buf, size_t len);

/* Length of the leading run of buf made of whole blocks of `block` bytes (the last block may be
 * shorter) that are all zero when want_zero, or that each hold a non-zero byte otherwise.
 * Used to split a read buffer into data to write and zeros to skip. block > 0. */
size_t svm_zero_span(const void *buf, size_t len, size_t block, bool want_zero);

#endif
