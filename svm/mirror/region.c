/* The region table (region.h). Two doubly linked lists under one mutex; entries are the
 * callers' own storage, so acquiring and releasing allocate nothing and cannot fail. */
#include <assert.h>
#include <stddef.h>

#include "svm/mirror/region.h"

enum { FREE, HELD, PARKED };

static bool overlap(const struct svm_region *a, const struct svm_region *b)
{
  return a->off < b->off + b->len && b->off < a->off + a->len;
}

static void unlink_entry(struct svm_region **head, struct svm_region **tail,
                         struct svm_region *r)
{
  if (r->prev)
    r->prev->next = r->next;
  else
    *head = r->next;
  if (r->next)
    r->next->prev = r->prev;
  else if (tail)
    *tail = r->prev;
  r->prev = r->next = NULL;
}

static void push_held(struct svm_region_table *t, struct svm_region *r)
{
  r->state = HELD;
  r->prev = NULL;
  r->next = t->held;
  if (t->held)
    t->held->prev = r;
  t->held = r;
}

/* Does r overlap a held entry, or a parked entry before `upto` (NULL: all parked)? */
static bool blocked_locked(struct svm_region_table *t, const struct svm_region *r,
                           const struct svm_region *upto)
{
  for (const struct svm_region *h = t->held; h; h = h->next)
    if (overlap(h, r))
      return true;
  for (const struct svm_region *p = t->park_head; p && p != upto; p = p->next)
    if (overlap(p, r))
      return true;
  return false;
}

void svm_region_table_init(struct svm_region_table *t)
{
  *t = (struct svm_region_table){ 0 };
  pthread_mutex_init(&t->mu, NULL);
}

void svm_region_table_destroy(struct svm_region_table *t)
{
  assert(t->held == NULL && t->park_head == NULL);
  pthread_mutex_destroy(&t->mu);
}

bool svm_region_acquire(struct svm_region_table *t, struct svm_region *r)
{
  bool now;

  pthread_mutex_lock(&t->mu);
  assert(r->state == FREE);
  now = !blocked_locked(t, r, NULL);
  if (now) {
    push_held(t, r);
  } else {
    r->state = PARKED;
    r->next = NULL;
    r->prev = t->park_tail;
    if (t->park_tail)
      t->park_tail->next = r;
    else
      t->park_head = r;
    t->park_tail = r;
    t->parked_total++;
  }
  pthread_mutex_unlock(&t->mu);
  return now;
}

void svm_region_release(struct svm_region_table *t, struct svm_region *r)
{
  struct svm_region *p, *next;

  pthread_mutex_lock(&t->mu);
  if (r->state == HELD)
    unlink_entry(&t->held, NULL, r);
  else if (r->state == PARKED)
    unlink_entry(&t->park_head, &t->park_tail, r);
  r->state = FREE;
  /* Grant, in queue order, every parked entry that overlaps nothing held and nothing parked
   * before it. A granted entry joins the held set at once, so later ones see it. */
  for (p = t->park_head; p; p = next) {
    next = p->next;
    if (blocked_locked(t, p, p))
      continue;
    unlink_entry(&t->park_head, &t->park_tail, p);
    push_held(t, p);
    p->granted(p);
  }
  pthread_mutex_unlock(&t->mu);
}

void svm_region_table_count(struct svm_region_table *t, unsigned *held, unsigned *parked)
{
  unsigned h = 0, n = 0;

  pthread_mutex_lock(&t->mu);
  for (const struct svm_region *p = t->held; p; p = p->next)
    h++;
  for (const struct svm_region *p = t->park_head; p; p = p->next)
    n++;
  pthread_mutex_unlock(&t->mu);
  *held = h;
  *parked = n;
}
