/* Internal: a bandwidth cap (--nfc-rate): a token bucket shared by all the streams of a copy,
 * so that bulk copies never starve management traffic. Thread-safe. */
#ifndef NFC_RATE_H
#define NFC_RATE_H

#include <stdint.h>

struct nfc_rate;

/* bytes_per_second > 0. The bucket holds at most 50 ms of traffic, so the rate over any second
 * stays within a few percent of the cap. */
int nfc_rate_new(uint64_t bytes_per_second, struct nfc_rate **out);
void nfc_rate_free(struct nfc_rate *r);
/* Account for n bytes about to be sent; sleeps until they fit under the cap. */
void nfc_rate_take(struct nfc_rate *r, uint64_t n);

#endif
