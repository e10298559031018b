/* Internal: the NFC ends of the copy engine - how the engine's disks meet the NFC channel
 * (nfc/nfc.h). The sender is the copy engine itself (svm/copy/copy.h) with a file end as
 * source and an NFC end as destination; the receiver writes what arrives through the I/O
 * engine in the requested provisioning.
 *
 * Sender (cold host move, tests/tools/svm-nfc):
 *
 *     struct svm_nfc_put_options o = { .connect = fn, .connect_opaque = peer, .streams = 4,
 *                                      .provisioning = SVM_PROVISIONING_THIN };
 *     struct svm_nfc_put_counters n;
 *     r = svm_nfc_put_file("/ds1/vm1/disk0.raw", "disk0.raw", &o, &n);
 *     r = svm_nfc_put_folder("/ds1/vm1", &o, &n);          every regular file of the folder
 *
 *   connect(opaque, stream, &conn) opens one connection (TLS, or plain with --insecure) to the
 *   receiving agent; called once per stream per file, and again to resume. A failed put left
 *   what was durable on the receiver: the same call again sends only the rest.
 *
 * Receiver (the agent, one thread per accepted connection):
 *
 *     r = svm_nfc_serve(conn, dirfd_of_the_vm_folder, NULL, &counters);
 *
 * Get (the other direction, on a connection to a peer that runs svm_nfc_serve):
 *
 *     r = svm_nfc_get(conn, "disk0.raw", SVM_PROVISIONING_THIN, local_dirfd, NULL, &counters);
 */
#ifndef SVM_COPY_NFC_H
#define SVM_COPY_NFC_H

#include <stdint.h>

#include <svmotion/convert.h>   /* enum svm_provisioning */

#include "nfc/nfc.h"
#include "svm/copy/copy.h"

enum { SVM_NFC_MAX_STREAMS = 16 };

typedef int (*svm_nfc_connect_fn)(void *opaque, unsigned stream, struct nfc_conn **out);

struct svm_nfc_put_options {
  svm_nfc_connect_fn connect;
  void *connect_opaque;
  unsigned streams;                   /* TCP streams per file, 1..16 (0: 1), --nfc-streams */
  enum svm_provisioning provisioning; /* what the receiver makes of the file */
  struct nfc_rate *rate;              /* shared cap (--nfc-rate), or NULL */
  uint64_t request_size;              /* the engine's chunk (0: 2 MiB) */
  unsigned requests;                  /* chunks in flight per stream (0: 32 shared by the
                                         streams, at least 8 each) */
  svm_copy_progress_fn progress;      /* done/total over all streams; any stream's thread */
  void *progress_opaque;
  volatile int *cancel;
};

struct svm_nfc_put_counters {
  uint64_t bytes_wire;      /* every byte sent on every connection, headers included */
  uint64_t bytes_data;      /* payload of DATA frames */
  uint64_t bytes_zero;      /* said as zero ranges */
  uint64_t bytes_resumed;   /* already durable on the receiver: not sent again */
  uint64_t files;
};

int svm_nfc_put_file(const char *path, const char *name, const struct svm_nfc_put_options *o,
                     struct svm_nfc_put_counters *n);
/* Put dirfd's file `name` on the connection c (one stream; c stays the caller's): how a
 * receiver answers a GET. o->connect is not used. */
int svm_nfc_put_on(struct nfc_conn *c, int dirfd, const char *name,
                   const struct svm_nfc_put_options *o, struct svm_nfc_put_counters *n);

/* Get: ask the peer on c for its file `name` and receive it into dirfd (same name), in
 * the provisioning p. The peer's svm_nfc_serve answers. Resumable like a put. */
int svm_nfc_get(struct nfc_conn *c, const char *name, enum svm_provisioning p, int dirfd,
                const struct nfc_recv_options *o, struct nfc_recv_counters *n);

/* Every regular file of dir (symbolic links and other kinds are skipped), in name order. */
int svm_nfc_put_folder(const char *dir, const struct svm_nfc_put_options *o,
                       struct svm_nfc_put_counters *n);

/* Receive on one connection into the folder dirfd until the sender closes it, and answer GETs
 * of files of that folder. o may be NULL. */
int svm_nfc_serve(struct nfc_conn *c, int dirfd, const struct nfc_recv_options *o,
                  struct nfc_recv_counters *n);

/* The NFC end: a writable copy end that sends DATA and ZERO frames on conn (the range was
 * OPENed by the caller); finish() sends END and waits until the receiver made it durable.
 * conn stays the caller's. */
int svm_copy_nfc_end_new(const char *name, struct nfc_conn *conn, uint64_t size,
                         struct svm_copy_end **out);

#endif
