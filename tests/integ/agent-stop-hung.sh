#!/usr/bin/env bash
# A clean stop that cannot finish: datastore ds3 is an ext4 file system on a loop device whose
# backing file is an NBD export (nbdfuse) of nbdkit's memory plugin. The guest writes and then
# flushes, and the test freezes nbdkit (SIGSTOP) first: the flush hangs in the kernel. SIGTERM
# then starts svmd's clean stop, which waits for that request: svmd names the export that
# waits, and past --stop-timeout says why it gives up and exits with status 1 (without the
# bound it would wait for ever, as a failed move's stuck request once made it). The datastore
# is thawed afterwards; the next start serves the disk, with the data the guest flushed before.
source "$(dirname "$0")/agent-lib.sh"
source "$(dirname "$0")/fuse-ds-lib.sh"
requires nbdsh

NBDSH_PID=
teardown() {
  [ -z "$KIT_PID" ] || kill -CONT "$KIT_PID" 2>/dev/null
  if [ -n "$SVMD_PID" ]; then kill -9 "$SVMD_PID" 2>/dev/null; wait "$SVMD_PID" 2>/dev/null; fi
  SVMD_PID=
  [ -z "$NBDSH_PID" ] || { kill "$NBDSH_PID" 2>/dev/null; wait "$NBDSH_PID" 2>/dev/null; }
  fuse_ds_stop
}
trap 'rc=$?; set +e; teardown; (exit $rc); cleanup' EXIT

fuse_ds_start memory 128M

# bad values of the option are refused before anything starts
for bad in -1 x 86401 ""; do
  rc=0
  "$SVM_BIN/svmd" --name h --state "$T/s2" --datastore "ds1=$T/ds1" --stop-timeout "$bad" \
    2>"$T/err" || rc=$?
  [ "$rc" -eq 2 ] && grep -q -- "--stop-timeout" "$T/err" ||
    fail "--stop-timeout '$bad': exit $rc: $(cat "$T/err")"
done

start_svmd --datastore "ds3=$T/ds3" --stop-timeout 8
svmctl vm create vm1 --datastore ds3 --disk 16M >/dev/null
U=$(uri vm1 0)
PATH=/usr/bin:/bin:$PATH nbdsh -u "$U" -c 'h.pwrite(b"\xa5" * 65536, 0); h.flush()'   # durable before the freeze
sync -f "$T/ds3"

kill -STOP "$KIT_PID"             # from now on the datastore's device does not answer
PATH=/usr/bin:/bin:$PATH nbdsh -u "$U" -c 'h.pwrite(b"\x5a" * 65536, 1 << 20); h.flush()' >"$T/nbdsh.out" 2>&1 &
NBDSH_PID=$!
# the guest's flush is in flight once one of svmd's threads (io_uring's worker doing the
# fdatasync) waits on the frozen device, uninterruptibly
hung() { awk '{ print $3 }' /proc/"$SVMD_PID"/task/*/stat 2>/dev/null | grep -qx D; }
for _ in $(seq 1 400); do hung && break; sleep 0.05; done
hung || fail "the guest's flush did not reach the frozen datastore"

kill -TERM "$SVMD_PID"
for _ in $(seq 1 400); do grep -q "still in flight" "$LOG" && break; sleep 0.05; done
grep -q "export vm1/disk0: [0-9]* guest request(s) still in flight after 5 s" "$LOG" ||
  fail "svmd did not say which export waits: $(tail -5 "$LOG")"
for _ in $(seq 1 400); do grep -q "did not finish within --stop-timeout" "$LOG" && break; sleep 0.05; done
grep -q "the stop did not finish within --stop-timeout" "$LOG" ||
  fail "svmd did not give up its stop at --stop-timeout: $(tail -5 "$LOG")"
# the process goes once the kernel gives back the hung request
kill -CONT "$KIT_PID"
rc=0
wait "$SVMD_PID" || rc=$?
SVMD_PID=
[ "$rc" -eq 1 ] || fail "svmd exited $rc after giving up its stop, not 1"
grep -q "svmd: stopped" "$LOG" && fail "svmd said it stopped cleanly"
wait "$NBDSH_PID" 2>/dev/null || true
NBDSH_PID=
echo "ok: svmd named the waiting export and exited 1 at --stop-timeout"

# the next start serves the disk, with what the guest flushed before the freeze
start_svmd --datastore "ds3=$T/ds3"
PATH=/usr/bin:/bin:$PATH nbdsh -u "$U" -c 'assert h.pread(65536, 0) == b"\xa5" * 65536' ||
  fail "the data flushed before the freeze is not there after the restart"
stop_svmd
echo "ok: the restart serves the disk with the flushed data"
