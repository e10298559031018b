/* The token bucket as a virtual clock: each send moves `t` on by n/rate; a sender whose `t`
 * lies ahead of the real clock sleeps until then. `t` never lags the clock by more than the
 * burst, so an idle period buys at most 50 ms worth of bytes. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "nfc/rate.h"

enum { BURST_NS = 50 * 1000 * 1000 };

struct nfc_rate {
  pthread_mutex_t mu;
  uint64_t bps;
  uint64_t t;                   /* ns, CLOCK_MONOTONIC: when the bytes taken so far are due */
};

static uint64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int nfc_rate_new(uint64_t bytes_per_second, struct nfc_rate **out)
{
  struct nfc_rate *r;

  if (bytes_per_second == 0)
    return -EINVAL;
  if ((r = calloc(1, sizeof *r)) == NULL)
    return -ENOMEM;
  pthread_mutex_init(&r->mu, NULL);
  r->bps = bytes_per_second;
  r->t = now_ns();
  *out = r;
  return 0;
}

void nfc_rate_free(struct nfc_rate *r)
{
  if (r == NULL)
    return;
  pthread_mutex_destroy(&r->mu);
  free(r);
}

void nfc_rate_take(struct nfc_rate *r, uint64_t n)
{
  uint64_t now = now_ns(), due;

  pthread_mutex_lock(&r->mu);
  if (r->t + BURST_NS < now)
    r->t = now - BURST_NS;
  /* n * 1e9 / bps without overflow for n up to 2^34 */
  r->t += (uint64_t)((long double)n * 1e9L / (long double)r->bps);
  due = r->t;
  pthread_mutex_unlock(&r->mu);
  if (due > now) {
    struct timespec ts = { .tv_sec = (time_t)(due / 1000000000u),
                           .tv_nsec = (long)(due % 1000000000u) };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
      ;
  }
}
