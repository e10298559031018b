/* Internal: one NBD export = one disk (a layer stack, svm/disk/layer.h) + its listeners and
 * clients. Policy (change tracking, the mirror) lives in the stack's filter layers, not here.
 *
 * The server speaks the fixed newstyle handshake (OPT_GO, INFO, LIST, ABORT,
 * STRUCTURED_REPLY, LIST/SET_META_CONTEXT) and the commands READ, WRITE (FUA), FLUSH, TRIM,
 * WRITE_ZEROES (NO_HOLE, FAST_ZERO), BLOCK_STATUS and DISC, with many requests in flight on
 * the I/O engine and replies sent as they complete. Several clients may use one export at once
 * (NBD_FLAG_CAN_MULTI_CONN): a FLUSH on any of them makes every write completed before it
 * durable, since all share one file descriptor per layer.
 *
 * Threads are the process's, shared by every export (svm/nbd/pool.c): one acceptor runs every
 * listener of every export; each new client does its handshake on a short-lived thread of its
 * own (so a slow client delays nobody; one deadline for the whole handshake), then joins one of
 * the pool's I/O threads, each running its own engine and a poll() loop over its clients.
 * Resources are bounded per client (requests and bytes held), per listener (connections) and
 * in time (handshake and request deadlines); see internal.h.
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
  /* The pool's size, taken by the export that starts it (the first of the process; later
   * ones share it as it is). SVM_NBD_THREADS overrides threads. */
  unsigned threads;             /* I/O threads (0 = one per CPU, 2 to 8) */
  unsigned queue_depth;         /* requests started per thread (0 = 128) */
};

/* On success the export owns `top` (svm_export_free frees it); on failure the caller does. */
int svm_export_new(const struct svm_export_opts *o, struct svm_layer *top,
                   struct svm_export **out);
void svm_export_free(struct svm_export *e);        /* closes listeners, disconnects clients */
int svm_export_listen_unix(struct svm_export *e, const char *path);  /* removes a stale socket */
int svm_export_listen_tcp(struct svm_export *e, const char *addr, const char *port,
                          char *bound_port, size_t len);  /* port "0" = ephemeral */

/* TLS (NBD_OPT_STARTTLS) with a server config of nfc/tls.h (x509 or PSK), which must outlive
 * the export. Clients of a TCP listener must then start TLS before anything else (other
 * options are answered NBD_REP_ERR_TLS_REQD, plaintext transmission is refused); clients of a
 * unix socket may. Without a config (the default) STARTTLS is unsupported. Set it before the
 * first listener. */
struct nfc_tls_config;
void svm_export_set_tls(struct svm_export *e, struct nfc_tls_config *cfg);

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
 * runs again when every pause has been resumed. When requests are still in flight after
 * timeout_ns (a layer holds one: a hung destination, a tracker stuck on its file), the pause
 * is taken back, the export runs on as before, and -ETIMEDOUT is returned with a message; a
 * timeout of 0 is refused (-EINVAL): a caller who wants no real limit gives a large one.
 * resume() reports how long the export was paused (ns, from the start of the outermost pause)
 * when paused_ns is not NULL.
 * Never call pause or swap from a layer's operation or a provider callback: those run inside a
 * request, which the pause would wait for. */
int svm_export_pause(struct svm_export *e, uint64_t timeout_ns);
int svm_export_resume(struct svm_export *e, uint64_t *paused_ns);
/* Swap the whole layer stack under the export in one step, policy layers included (the new
 * top's chain carries its own tracking layer, mirror...), returning the old top to the caller
 * (who frees it, and only then closes anything its layers use, such as a tracker). Clients
 * never see a disconnect. Sizes and read-only-ness must match. Pauses inside (nested in the
 * caller's pause, if any; draining for at most 60 s otherwise: -ETIMEDOUT, nothing swapped).
 * The export owns new_top from then on. */
int svm_export_swap(struct svm_export *e, struct svm_layer *new_top, struct svm_layer **old_top,
                    uint64_t *paused_ns);
/* Flush the stack's data (fdatasync) - what NBD_CMD_FLUSH does, callable by the agent, also
 * while the caller holds the export paused (flush the destination before switching to it). */
int svm_export_flush(struct svm_export *e);

/* Counters, for tests and status output. */
struct svm_export_stats {
  uint64_t clients_now, clients_total, requests, errors;
};
void svm_export_get_stats(struct svm_export *e, struct svm_export_stats *st);

#endif
