/* Internal: hex digits, shared by the .ctk uuid parser and the control protocol's
 * percent-decoding. */
#ifndef SVM_COMMON_HEX_H
#define SVM_COMMON_HEX_H

/* The value of one hex digit, or -1 when c is not one. */
static inline int svm_hexval(char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

#endif
