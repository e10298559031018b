/* Internal: random (version 4) UUIDs, as the VM descriptor and the .ctk header use them. */
#ifndef SVM_COMMON_UUID_H
#define SVM_COMMON_UUID_H

#include <stdint.h>

enum { SVM_UUID_STRLEN = 36 };   /* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" without the NUL */

/* A new random UUID. getrandom(2) cannot fail here short of a kernel without it; then time,
 * pid and an address still make a collision unlikely, which is all a UUID promises. */
void svm_uuid_new(uint8_t uuid[16]);
/* Lower-case text form, NUL-terminated. */
void svm_uuid_format(const uint8_t uuid[16], char out[SVM_UUID_STRLEN + 1]);
/* Parse the 36 characters at s (nothing after them is looked at); 0, or -EINVAL. */
int svm_uuid_parse(const char *s, uint8_t uuid[16]);
/* svm_uuid_new + svm_uuid_format. */
void svm_uuid_generate(char out[SVM_UUID_STRLEN + 1]);

#endif
