/* Internal: the NFC channel's file-copy protocol, both sides, on top of frames (frame.h) and
 * connections (conn.h). What touches disks is not here: the receiver hands data to a sink (the
 * engine's I/O engine sink lives in svm/copy/nfc.c) and the sender is the engine's copy loop
 * with an NFC end, which uses the nfc_send_* steps below.
 *
 * One file goes as N ranges that tile [0, size), one stream (connection) each:
 *
 *     sender                                  receiver
 *     OPEN (name, size, source id, range) ->  checks the name; opens or creates the file in
 *                                             its folder; reads the range's progress record
 *                                        <-   READY off = what is durable of the range
 *     DATA/ZERO in file order from off   ->   CRC checked, then written; every sync interval
 *                                             the data is made durable and the record moved on
 *     END                                ->   all durable
 *                                        <-   DONE
 *     (every stream done) COMMIT         ->   every range's record complete: provisioning
 *                                             finished, fsync, records removed
 *                                        <-   DONE
 *
 * After a dropped connection the sender opens the range again and READY says where to go on:
 * only what was not yet durable travels again. One connection holds a range at a time; a new
 * OPEN of a held range aborts the holder (nfc_conn_abort: a link cut without a reset leaves a
 * receiver waiting on a silent connection) and goes on once it has checkpointed.
 *
 * Get: a client sends GET (name, provisioning); the server, if the sink lets it, sends that
 * file back on the same connection as a one-stream put (OPEN ... COMMIT, the client now the
 * receiver: nfc_recv_get), then waits for the next request. Resuming works the same way. */
#ifndef NFC_NFC_H
#define NFC_NFC_H

#include <stdbool.h>
#include <stdint.h>

#include "nfc/conn.h"
#include "nfc/frame.h"

/* ---- sender steps (blocking) ----------------------------------------------------------- */

/* OPEN a range (create: the first stream of the file) and wait for READY; *resume: where to go
 * on. */
int nfc_send_open(struct nfc_conn *c, const struct nfc_open *o, bool create, uint64_t *resume);
int nfc_send_data(struct nfc_conn *c, uint64_t off, const void *buf, uint32_t len);
int nfc_send_zero(struct nfc_conn *c, uint64_t off, uint64_t len);
/* END the range; returns when the receiver says it is durable. */
int nfc_send_end(struct nfc_conn *c);
/* COMMIT the file (o->nranges ranges); returns when the receiver has finished it. */
int nfc_send_commit(struct nfc_conn *c, const struct nfc_open *o);

/* ---- receiver --------------------------------------------------------------------------- */

/* Where received data goes. Every call returns 0 or -errno with svm_last_error() set. */
struct nfc_sink_ops {
  /* Open `o->name` in dirfd (already checked by nfc_name_ok; open it O_NOFOLLOW, mode 0600).
   * fresh: start anew (truncate, size, provision as o->provisioning says); else the file must
   * exist with o->size bytes. */
  int (*open)(void *opaque, int dirfd, const struct nfc_open *o, bool fresh, void **file);
  /* A buffer for len (<= NFC_MAX_DATA) bytes of payload, about to be written with write(). */
  int (*buffer)(void *file, uint32_t len, void **buf);
  int (*write)(void *file, void *buf, uint32_t len, uint64_t off);
  /* Make [off, off+len) read as zeros (whatever an earlier attempt left there). */
  int (*discard)(void *file, uint64_t off, uint64_t len);
  /* Everything written so far durable. */
  int (*sync)(void *file);
  void (*close)(void *file);
  /* Every range is durable: finish the provisioning and make the file durable. */
  int (*commit)(void *opaque, int dirfd, const struct nfc_open *o);
  /* GET: send o->name (checked by nfc_name_ok) of dirfd on c as a one-stream put, in
   * o->provisioning. NULL: this receiver serves no GET. */
  int (*get)(void *opaque, int dirfd, const struct nfc_open *o, struct nfc_conn *c);
};

struct nfc_recv_options {
  uint64_t sync_bytes;      /* make data durable at least every this many bytes (0: 64 MiB) */
  unsigned sync_ms;         /* ... and every this many milliseconds (0: 1000) */
  /* How long an OPEN waits for the connection that held its range before (a resume that
   * overtakes the dropped connection's last checkpoint); 0: 30 s. Keep the transport's
   * timeout below it, so that a connection cut without a reset lets go in time. */
  unsigned lock_wait_ms;
};

struct nfc_recv_counters {
  uint64_t bytes_data;      /* payload written */
  uint64_t bytes_zero;      /* said to read as zeros */
  uint64_t files;           /* committed */
};

/* Serve one connection until the sender closes it: files land in dirfd, nowhere else. Returns
 * 0 at a clean end, or -errno (the peer was told why in an ERROR frame where it still
 * listens). */
int nfc_recv_serve(struct nfc_conn *c, int dirfd, const struct nfc_sink_ops *sink,
                   void *opaque, const struct nfc_recv_options *o,
                   struct nfc_recv_counters *n);

/* Ask the peer for `name` and receive it into dirfd as `name` (provisioning as asked): sends
 * GET, then serves the put that comes back until its COMMIT. A dropped GET resumes when asked
 * again. */
int nfc_recv_get(struct nfc_conn *c, const char *name, uint32_t provisioning, int dirfd,
                 const struct nfc_sink_ops *sink, void *opaque,
                 const struct nfc_recv_options *o, struct nfc_recv_counters *n);

/* The name of the progress record of a range: ".NAME.nfc-<start in hex>". */
int nfc_record_name(const char *name, uint64_t start, char *out, size_t cap);

#endif
