/* Internal: provisioning of raw disk files.
 *
 *   thin                sparse: only data is allocated; zero blocks are never written
 *   thick               lazy-zeroed: every byte allocated with fallocate up front (the file
 *                       system keeps unwritten ranges that read as zeros); data written
 *   eager-zeroed-thick  every byte allocated and written: no unwritten extent remains
 *
 * A target goes through prepare (size and allocation), then the copy writes the data it must
 * (svm_provision_skip_zero() says whether all-zero blocks may be skipped: they may, for every
 * kind, because prepare and finish make them read as zeros), then finish (eager: write zeros
 * over every range still a hole or unwritten). */
#ifndef SVM_PROVISION_H
#define SVM_PROVISION_H

#include <stdbool.h>
#include <stdint.h>

#include <svmotion/convert.h>   /* enum svm_provisioning */

/* Size an empty target file (fd open for writing) and allocate as the kind asks. path is for
 * messages. -ENOSPC says how much was needed. */
int svm_provision_prepare(int fd, const char *path, uint64_t size, enum svm_provisioning p);

/* May a copy skip writing a block of zeros to this target? */
bool svm_provision_skip_zero(enum svm_provisioning p);

/* Complete the provisioning after the data is written. Eager: writes zeros over every hole and
 * every unwritten extent (then no `unwritten` extent shows in filefrag -v). Others: nothing.
 * Adds the bytes of zeros written to *zero_written when not NULL. */
int svm_provision_finish(int fd, const char *path, uint64_t size, enum svm_provisioning p,
                         uint64_t *zero_written);

/* Bytes of free space a target of this kind needs, given the source's size and its data bytes. */
uint64_t svm_provision_needed(enum svm_provisioning p, uint64_t size, uint64_t data_bytes);

/* Make an existing file thin in place: punch holes over allocated blocks that are all zero
 * (granularity `block`, a multiple of 512), data untouched. Reports bytes scanned and punched. */
int svm_punch_zeroes(int fd, const char *path, uint64_t block, uint64_t *scanned,
                     uint64_t *punched);

#endif
