#!/usr/bin/env bash
# A destination that returns EIO: datastore ds3 is an ext4 file system on a loop device whose
# backing file is an NBD export (nbdfuse) of nbdkit's memory plugin under its error filter.
# Once the copy is under way the test turns errors on (the filter's error-file): the move
# fails naming EIO, the guest writing through its open connection sees nothing, the VM stays
# on ds1 with every write, and svmd removed the destination.
source "$(dirname "$0")/agent-lib.sh"
source "$(dirname "$0")/migrate-lib.sh"
source "$(dirname "$0")/fuse-ds-lib.sh"

teardown() {
  rm -f "$T/inject"
  if [ -n "$SVMD_PID" ]; then kill "$SVMD_PID" 2>/dev/null; wait "$SVMD_PID" 2>/dev/null; fi
  SVMD_PID=
  fuse_ds_stop
}
trap 'rc=$?; set +e; teardown; (exit $rc); cleanup' EXIT

fuse_ds_start --filter=error memory 128M error=EIO error-rate=100% error-file="$T/inject"

start_svmd --datastore "ds3=$T/ds3"
svmctl vm create vm1 --datastore ds1 --disk 32M >/dev/null
U=$(uri vm1 0)
fill "$U" 32M 6
start_writer w "$U" $((24 << 20)) $((8 << 20))
rc=0
svmctl migrate vm1 --datastore ds3 --rate 8M --json >"$T/result.json" 2>"$T/err" &
MPID=$!
wait_copied vm1 $((2 << 20))
touch "$T/inject"                   # from now on every request to ds3's device fails
wait "$MPID" || rc=$?
[ "$rc" -eq 1 ] || fail "migrate to a failing datastore exited $rc: $(cat "$T/result.json")"
echo "failed as it must: $(cat "$T/err")"
grep -q "Input/output error" "$T/err" || fail "stderr: $(cat "$T/err")"
[ "$(json_get 'd["state"]' <"$T/result.json")" = failed ] || fail "result: $(cat "$T/result.json")"
stop_writer w
svmctl vm show vm1 --json | json_get 'd["datastore"]' | grep -qx ds1 || fail "the VM left ds1"
qemu-io -f raw -c "read -P 6 0 24M" "$U" | grep -q "^read 25165824" || fail "source data"
verify_writer w "$U"
# svmd removed the destination (the directory entries are gone; the device still fails)
[ ! -e "$T/ds3/vm1" ] || fail "the destination is still there: $(ls -la "$T/ds3/vm1")"
grep -q "vm1: move to datastore ds3 failed" "$LOG" || fail "log line"
stop_svmd
echo PASS
