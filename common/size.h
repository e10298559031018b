/* Sizes for people: parse "10G", "512M", "4096", "1.5T" (binary multiples: K = 1024) and
 * format byte counts as "1.5 GiB". */
#ifndef SVM_COMMON_SIZE_H
#define SVM_COMMON_SIZE_H

#include <stddef.h>
#include <stdint.h>

/* Accepts digits with an optional fraction and an optional suffix K, M, G, T, P, E (also
 * "KiB", "KB", "k"...; all mean powers of 1024) or "B". Returns 0 or -EINVAL (junk, negative,
 * empty, a fraction of a byte) / -ERANGE (over 2^64-1). */
int svm_size_parse(const char *s, uint64_t *out);

/* "0 B", "512 B", "4.0 KiB", "1.5 GiB". Returns buf. */
char *svm_size_format(uint64_t n, char *buf, size_t len);

#endif
