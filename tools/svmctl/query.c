/* svmctl cbt query: every page of the answer (svm/control/proto.h: cbt-query is paged with a
 * cursor), printed as one answer as it arrives, so that millions of extents never sit in one
 * message nor all in svmctl's memory. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <svmotion/client.h>
#include "tools/svmctl/svmctl.h"

/* Must match svmd's SVM_CTL_QUERY_PAGE or be below it. */
#define PAGE "65536"
enum { PAGE_N = 65536 };

static int fetch(const char *state, size_t nargs, const char **keys, const char **vals,
                 char **payload)
{
  struct svm_client *cl;
  int r = svm_client_connect(state, &cl);

  if (r < 0)
    return r;
  r = svm_client_call(cl, "cbt-query", nargs, keys, vals, payload);
  svm_client_close(cl);
  return r;
}

/* A JSON page: the text between "extents": [ and its ], and next-cursor (0 = none). */
static int json_page(const char *p, const char **inner, size_t *len, uint64_t *next)
{
  const char *ex = strstr(p, "\"extents\": [");
  const char *end = ex ? strchr(ex, ']') : NULL;
  const char *nc = end ? strstr(end, "\"next-cursor\": ") : NULL;

  if (!nc)
    return -EPROTO;
  *inner = ex + strlen("\"extents\": [");
  *len = (size_t)(end - *inner);
  nc += strlen("\"next-cursor\": ");
  *next = strncmp(nc, "null", 4) == 0 ? 0 : strtoull(nc, NULL, 10);
  return 0;
}

/* A text page: the next cursor when the page is full, else 0. */
static uint64_t text_next(const char *p)
{
  size_t lines = 0;
  const char *last = p;

  for (const char *s = p; *s; s++) {
    if (*s == '\n') {
      if (s[1])
        last = s + 1;
      lines++;
    }
  }
  uint64_t off, len;
  if (lines < PAGE_N || sscanf(last, "%" SCNu64 " %" SCNu64, &off, &len) != 2)
    return 0;
  return off + len;
}

int svmctl_cbt_query(const char *state, bool json, size_t nargs, const char **keys,
                     const char **vals)
{
  char cursor[32] = "0";
  uint64_t next = 0;
  bool first = true, any = false;

  keys[nargs] = "format";
  vals[nargs++] = json ? "json" : "text";
  keys[nargs] = "limit";
  vals[nargs++] = PAGE;
  keys[nargs] = "cursor";
  vals[nargs++] = cursor;
  do {
    char *p = NULL;
    int r = fetch(state, nargs, keys, vals, &p);
    if (r < 0) {
      fprintf(stderr, "svmctl: %s\n", svm_last_error());
      return 1;
    }
    if (!json) {
      fputs(p, stdout);
      next = text_next(p);
    } else {
      const char *inner;
      size_t len;
      if (json_page(p, &inner, &len, &next) < 0) {
        fprintf(stderr, "svmctl: svmd's cbt-query answer has no extents list or next-cursor "
                "(an svmd of another version?)\n");
        free(p);
        return 1;
      }
      if (first)     /* the first page's header: vm, disk, since, ..., "extents": [ */
        fwrite(p, 1, (size_t)(inner - p), stdout);
      if (len) {
        if (any)
          fputs(", ", stdout);
        fwrite(inner, 1, len, stdout);
        any = true;
      }
    }
    free(p);
    first = false;
    snprintf(cursor, sizeof cursor, "%" PRIu64, next);
  } while (next);
  if (json)
    fputs("]}\n", stdout);
  return fflush(stdout) == 0 ? 0 : 1;
}
