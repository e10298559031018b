#!/usr/bin/env bash
# Threads are shared across disks: svmd with 33 disks (one VM with 32, another with 1) runs
# a process-wide pool of NBD threads, whatever the number of exports. Every disk is really
# used (each one read and written through its export, a few at once) so that the I/O engines'
# kernel workers show up too; then the threads in /proc/PID/task are counted.
#
# The bound (svm/nbd/pool.c says why): control thread + NBD acceptor + NBD I/O threads
# (SVM_NBD_THREADS, 2 here) + the change-tracking mark pool and its one page writer for all
# trackers + kernel io-wq workers (capped per ring), at most 24 in all, where per-export
# threads cost 3+ per disk (100+ for 33 disks) and a page writer per tracker 33 more.
source "$(dirname "$0")/agent-lib.sh"
requires nbdsh
export PATH=/usr/bin:/bin:$PATH
export SVM_NBD_THREADS=2

start_svmd
disks=()
for i in $(seq 1 32); do disks+=(--disk 1M); done
svmctl vm create big --datastore ds1 "${disks[@]}" >/dev/null
svmctl vm create small --datastore ds2 --disk 1M >/dev/null

PIDS=()
for i in $(seq 0 31); do
  nbdsh -u "$(uri big "$i")" -c 'h.pwrite(b"\x5a" * 65536, 0)
assert h.pread(65536, 0) == b"\x5a" * 65536
h.flush()' &
  PIDS+=($!)
  if [ $((i % 8)) -eq 7 ]; then
    for p in "${PIDS[@]}"; do wait "$p" || fail "I/O through a disk of VM big"; done
    PIDS=()
  fi
done
nbdsh -u "$(uri small 0)" -c 'assert h.pread(4096, 0) == bytes(4096)' || fail "VM small"

n=$(ls /proc/"$SVMD_PID"/task | wc -l)
echo "svmd threads with 33 disks: $n"
ls /proc/"$SVMD_PID"/task | while read -r t; do cat /proc/"$SVMD_PID"/task/"$t"/comm; done |
  sort | uniq -c >&2
[ "$n" -le 24 ] || fail "svmd runs $n threads for 33 disks (at most 24 expected)"
stop_svmd
echo OK
