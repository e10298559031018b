/* Internal: the change-tracking layer, a filter that marks every write, zero and trim in a CBT
 * tracker (include/svmotion/cbt.h) before passing it down, so that the marks covering a write
 * are durable before the write completes (and so before a guest hears of it). Reads, flushes
 * and block status pass straight through. */
#ifndef SVM_DISK_TRACK_H
#define SVM_DISK_TRACK_H

#include "svm/disk/layer.h"

struct cbt;

/* Put a tracking layer for tracker `t` over `below`. On success the layer owns `below` (as
 * every filter does) but NOT the tracker: the caller closes the tracker after the stack has
 * been freed (svm_export_free, or svm_layer_free of a stack a swap handed back), since a
 * tracker outlives stacks: a datastore move swaps the stack under it. On failure the caller
 * keeps `below`. */
int svm_layer_open_track(struct cbt *t, struct svm_layer *below, struct svm_layer **out);

#endif
