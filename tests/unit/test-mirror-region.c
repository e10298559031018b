/* The region table (svm/mirror/region.h): conflicts, parking, the order in which parked
 * entries are granted, withdrawing, and a threaded stress in which no two overlapping entries
 * are ever held at once and every parked entry is granted. */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "svm/mirror/region.h"

static char order[16];
static unsigned norder;

static void note(struct svm_region *r)
{
  order[norder++] = *(const char *)r->opaque;
}

#define ENTRY(name, o, l) \
  struct svm_region name = { .off = (o), .len = (l), .granted = note, .opaque = (void *)#name }

static void reset(void)
{
  norder = 0;
  memset(order, 0, sizeof order);
}

static void test_conflict(void **state)
{
  struct svm_region_table t;
  ENTRY(A, 0, 10);
  ENTRY(B, 10, 10);             /* adjacent: no conflict */
  ENTRY(C, 19, 1);              /* overlaps B's last byte */
  unsigned h, p;

  (void)state;
  reset();
  svm_region_table_init(&t);
  assert_true(svm_region_acquire(&t, &A));
  assert_true(svm_region_acquire(&t, &B));
  assert_false(svm_region_acquire(&t, &C));
  svm_region_table_count(&t, &h, &p);
  assert_int_equal(h, 2);
  assert_int_equal(p, 1);
  svm_region_release(&t, &A);
  assert_int_equal(norder, 0);  /* A was not in C's way */
  svm_region_release(&t, &B);
  assert_string_equal(order, "C");
  svm_region_release(&t, &C);
  svm_region_table_count(&t, &h, &p);
  assert_int_equal(h + p, 0);
  svm_region_table_destroy(&t);
}

/* Overlapping entries are granted in arrival order: C overlaps only the parked B, yet waits
 * behind it; D overlaps nothing and goes at once. */
static void test_order(void **state)
{
  struct svm_region_table t;
  ENTRY(A, 0, 10);
  ENTRY(B, 5, 10);
  ENTRY(C, 12, 8);
  ENTRY(D, 100, 10);
  ENTRY(E, 0, 100);             /* overlaps everything before it but D */

  (void)state;
  reset();
  svm_region_table_init(&t);
  assert_true(svm_region_acquire(&t, &A));
  assert_false(svm_region_acquire(&t, &B));
  assert_false(svm_region_acquire(&t, &C));
  assert_true(svm_region_acquire(&t, &D));
  assert_false(svm_region_acquire(&t, &E));
  svm_region_release(&t, &D);
  assert_int_equal(norder, 0);
  svm_region_release(&t, &A);
  assert_string_equal(order, "B");
  svm_region_release(&t, &B);
  assert_string_equal(order, "BC");
  svm_region_release(&t, &C);
  assert_string_equal(order, "BCE");
  svm_region_release(&t, &E);
  svm_region_table_destroy(&t);
}

/* Writes to the same range, one after the other, in order, however many wait. */
static void test_same_range_fifo(void **state)
{
  struct svm_region_table t;
  struct svm_region r[8];
  static const char names[] = "01234567";

  (void)state;
  reset();
  svm_region_table_init(&t);
  for (int i = 0; i < 8; i++) {
    r[i] = (struct svm_region){ .off = 4096, .len = 512 * (unsigned)(i + 1), .granted = note,
                                .opaque = (void *)&names[i] };
    assert_int_equal(svm_region_acquire(&t, &r[i]), i == 0);
  }
  for (int i = 0; i < 8; i++) {
    svm_region_release(&t, &r[i]);
    assert_int_equal(norder, i < 7 ? i + 1 : 7);
  }
  assert_string_equal(order, "1234567");
  svm_region_table_destroy(&t);
}

/* A withdrawn parked entry is never granted, and no longer holds others back. */
static void test_withdraw(void **state)
{
  struct svm_region_table t;
  ENTRY(A, 0, 10);
  ENTRY(B, 0, 20);
  ENTRY(C, 15, 5);

  (void)state;
  reset();
  svm_region_table_init(&t);
  assert_true(svm_region_acquire(&t, &A));
  assert_false(svm_region_acquire(&t, &B));
  assert_false(svm_region_acquire(&t, &C));   /* behind B */
  svm_region_release(&t, &B);                 /* withdrawn: C can go */
  assert_string_equal(order, "C");
  svm_region_release(&t, &A);
  assert_string_equal(order, "C");
  svm_region_release(&t, &C);
  svm_region_table_destroy(&t);
}

/* ---- threads ---- */

enum { UNITS = 64, THREADS = 4, ROUNDS = 4000 };

static struct svm_region_table st;
static atomic_int owner[UNITS];         /* thread+1 holding each unit, 0 free */
static atomic_int violations;
static pthread_barrier_t start_line;

struct waiter {
  struct svm_region r;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool go;
};

static void wake(struct svm_region *r)
{
  struct waiter *w = r->opaque;
  pthread_mutex_lock(&w->mu);
  w->go = true;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

static void *stress(void *arg)
{
  int me = (int)(intptr_t)arg + 1;
  unsigned seed = (unsigned)me * 7919u;
  struct waiter w;

  pthread_mutex_init(&w.mu, NULL);
  pthread_cond_init(&w.cv, NULL);
  pthread_barrier_wait(&start_line);
  for (int i = 0; i < ROUNDS; i++) {
    unsigned off = (unsigned)rand_r(&seed) % UNITS, len = 1 + (unsigned)rand_r(&seed) % 8;
    if (off + len > UNITS)
      len = UNITS - off;
    w.r = (struct svm_region){ .off = off, .len = len, .granted = wake, .opaque = &w };
    w.go = false;
    if (!svm_region_acquire(&st, &w.r)) {
      pthread_mutex_lock(&w.mu);
      while (!w.go)
        pthread_cond_wait(&w.cv, &w.mu);
      pthread_mutex_unlock(&w.mu);
    }
    for (unsigned u = off; u < off + len; u++) {
      int was = 0;
      if (!atomic_compare_exchange_strong(&owner[u], &was, me))
        atomic_fetch_add(&violations, 1);
    }
    sched_yield();              /* hold it a while: let the others run into it */
    for (unsigned u = off; u < off + len; u++)
      atomic_store(&owner[u], 0);
    svm_region_release(&st, &w.r);
  }
  pthread_cond_destroy(&w.cv);
  pthread_mutex_destroy(&w.mu);
  return NULL;
}

static void test_threads(void **state)
{
  pthread_t th[THREADS];
  unsigned h, p;

  (void)state;
  svm_region_table_init(&st);
  pthread_barrier_init(&start_line, NULL, THREADS);
  for (int i = 0; i < THREADS; i++)
    assert_int_equal(pthread_create(&th[i], NULL, stress, (void *)(intptr_t)i), 0);
  for (int i = 0; i < THREADS; i++)
    pthread_join(th[i], NULL);
  pthread_barrier_destroy(&start_line);
  assert_int_equal(atomic_load(&violations), 0);
  svm_region_table_count(&st, &h, &p);
  assert_int_equal(h + p, 0);
  assert_true(st.parked_total > 0);     /* the threads did meet */
  svm_region_table_destroy(&st);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_conflict),
    cmocka_unit_test(test_order),
    cmocka_unit_test(test_same_range_fifo),
    cmocka_unit_test(test_withdraw),
    cmocka_unit_test(test_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
