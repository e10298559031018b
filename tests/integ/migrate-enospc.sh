#!/usr/bin/env bash
# A destination datastore on a small file system (a 24 MiB tmpfs mounted by the test) that
# fills during the copy of a 64 MiB allocated disk: the move fails with ENOSPC, the guest
# writing through its open connection sees nothing, the VM stays on ds1 with every write, and
# the destination is removed. A thick destination that cannot be allocated fails at once.
source "$(dirname "$0")/agent-lib.sh"
source "$(dirname "$0")/migrate-lib.sh"

mkdir -p "$T/ds3"
mount -t tmpfs -o size=24M,mode=0755 tmpfs "$T/ds3" 2>/dev/null || { echo "SKIP: cannot mount a tmpfs"; exit 77; }
teardown() {
  if [ -n "$SVMD_PID" ]; then kill "$SVMD_PID" 2>/dev/null; wait "$SVMD_PID" 2>/dev/null; fi
  SVMD_PID=
  umount -l "$T/ds3" 2>/dev/null
  true
}
trap 'rc=$?; set +e; teardown; (exit $rc); cleanup' EXIT

start_svmd --datastore "ds3=$T/ds3"
svmctl vm create vm1 --datastore ds1 --disk 64M >/dev/null
U=$(uri vm1 0)
fill "$U" 64M 4
start_writer w "$U" $((40 << 20)) $((24 << 20))
rc=0
svmctl migrate vm1 --datastore ds3 --json >"$T/result.json" 2>"$T/err" || rc=$?
[ "$rc" -eq 1 ] || fail "migrate to a full datastore exited $rc"
grep -q "No space left on device" "$T/err" || fail "stderr: $(cat "$T/err")"
echo "failed as it must: $(cat "$T/err")"
[ "$(json_get 'd["state"]' <"$T/result.json")" = failed ] || fail "result: $(cat "$T/result.json")"
stop_writer w
[ ! -e "$T/ds3/vm1" ] || fail "the destination is still there: $(ls -la "$T/ds3/vm1")"
[ "$(df --output=used -B1 "$T/ds3" | tail -1)" -lt $((1 << 20)) ] || fail "ds3 still holds data: $(df "$T/ds3")"
svmctl vm show vm1 --json | json_get 'd["datastore"]' | grep -qx ds1 || fail "the VM left ds1"
qemu-io -f raw -c "read -P 4 0 40M" "$U" | grep -q "^read 41943040" || fail "source data"
verify_writer w "$U"

# thick: the space is missing up front
expect_fail 1 "vm1/disk0" svmctl migrate vm1 --datastore ds3 --provisioning thick
echo "thick: $(cat "$T/err")"
[ ! -e "$T/ds3/vm1" ] || fail "the thick destination is still there"
verify_writer w "$U"
# and the VM still moves where there is room
svmctl migrate vm1 --datastore ds2 --json | json_get 'd["state"]' | grep -qx done || fail "move to ds2"
verify_writer w "$U"
stop_svmd
echo PASS
