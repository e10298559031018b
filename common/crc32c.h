/* CRC-32C (Castagnoli), as iSCSI, ext4 and the .ctk file use it. Thread-safe. */
#ifndef SVM_COMMON_CRC32C_H
#define SVM_COMMON_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continue a checksum: crc is the value of the bytes so far (0 to start). */
uint32_t svm_crc32c(uint32_t crc, const void *buf, size_t len);

#endif
