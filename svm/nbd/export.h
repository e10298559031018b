/* Internal: one NBD export = one disk (a layer stack, svm/layer.h) + its listeners and clients.
 *
 * The server speaks the fixed newstyle handshake (OPT_GO, INFO, LIST, ABORT,
 * STRUCTURED_REPLY, LIST/SET_META_CONTEXT) and the commands READ, WRITE (FUA), FLUSH, TRIM,
 * WRITE_ZEROES (NO_HOLE, FAST_ZERO), BLOCK_STATUS and DISC, with many requests in flight on
 * the I/O engine and replies sent as they complete. Several clients may use one export at once
 * (NBD_FLAG_CAN_MULTI_CONN): a FLUSH on any of them makes every write completed before it
 * durable, since all share one file descriptor per layer.
 *
 * Threads: an acceptor runs every listener; each new client does its handshake on a short-lived
 * thread of its own (so a slow client delays nobody), then joins one of `threads` I/O threads,
 * each running its own engine and a poll() loop over its clients.
 */
#ifndef SVM_EXPORT_H
#define SVM_EXPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "svm/disk/layer.h"

struct svm_export;

struct svm_export_opts {
  const char *name;             /* export name clients ask for, e.g. "vm1/disk0" */
  unsigned threads;             /* I/O threads (0 = default) */
  unsigned queue_depth;         /* per thread (0 = default) */
};

/* On success the export owns `top` (svm_export_free frees it); on failure the caller does. */
int svm_export_new(const struct svm_export_opts *o, struct svm_layer *top,
                   struct svm_export **out);
void svm_export_free(struct svm_export *e);        /* closes listeners, disconnects clients */
int svm_export_listen_unix(struct svm_export *e, const char *path);  /* removes a stale socket */
int svm_export_listen_tcp(struct svm_export *e, const char *addr, const char *port,
                          char *bound_port, size_t len);  /* port "0" = ephemeral */

/* Called for every guest WRITE / WRITE_ZEROES / TRIM before the data is submitted; the request
 * is acknowledged to the client only after the hook returned 0 AND the data write completed.
 * A negative return fails the request with EIO (logged). This is where CBT marks (cbt_mark)
 * and, later, the synchronous mirror hook in. May be called from several threads at once. */
typedef int (*svm_write_hook)(void *opaque, uint64_t offset, uint64_t length, unsigned kind);
enum { SVM_WRITE_DATA = 1, SVM_WRITE_ZEROES = 2, SVM_WRITE_TRIM = 4 };
int svm_export_set_write_hook(struct svm_export *e, svm_write_hook hook, void *opaque);

/* An extent reported by a meta context provider. */
struct svm_meta_extent {
  uint64_t offset, length;
};

/* A meta context provider (NBD_CMD_BLOCK_STATUS) for contexts whose name starts with `prefix`,
 * e.g. prefix "svm-cbt:" so that `nbdinfo --map=svm-cbt:<uuid>/<seq> URI` works.
 * resolve(): 0 if `name` is a context this provider serves (else -ENOENT, with svm_error set).
 * extents(): fill the changed extents in [offset, offset+length) (sorted, merged), malloc'd;
 * the server reports them with flag 1 ("dirty") and the gaps with flag 0.
 * The prefix string and opaque must outlive the export; at most 8 providers. */
struct svm_meta_provider {
  const char *prefix;
  int (*resolve)(void *opaque, const char *name);
  int (*extents)(void *opaque, const char *name, uint64_t offset, uint64_t length,
                 struct svm_meta_extent **out, size_t *n);
  void *opaque;
};
int svm_export_add_meta_provider(struct svm_export *e, const struct svm_meta_provider *p);

/* Drain and pause: stop taking new requests, wait until every in-flight request has completed
 * and been answered. Clients stay connected; their new requests wait. Pauses nest: the export
 * runs again when every pause has been resumed. resume() reports how long the export was
 * paused (ns, from the start of the outermost pause) when paused_ns is not NULL.
 * Never call pause or swap from a write hook or a provider callback: those run inside a
 * request, which the pause would wait for. */
int svm_export_pause(struct svm_export *e);
int svm_export_resume(struct svm_export *e, uint64_t *paused_ns);
/* Swap the layer stack under the export atomically (pause, swap, resume inside), returning the
 * old top to the caller (who frees it). Clients never see a disconnect. Sizes must match.
 * The export owns new_top from then on. */
int svm_export_swap(struct svm_export *e, struct svm_layer *new_top, struct svm_layer **old_top,
                    uint64_t *paused_ns);
/* Flush the layers' data (fdatasync) - what NBD_CMD_FLUSH does, callable by the agent. */
int svm_export_flush(struct svm_export *e);

/* Counters, for tests and status output. */
struct svm_export_stats {
  uint64_t clients_now, clients_total, requests, errors;
};
void svm_export_get_stats(struct svm_export *e, struct svm_export_stats *st);

#endif
