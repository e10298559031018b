#!/usr/bin/env bash
# A move that fails at the switchover itself, after the source tracker was closed for its copy:
# the destination (a tmpfs mounted by the test, filled so that the disk's data fits but the
# copy of its .ctk does not) runs out of space there. The move aborts, the source tracker is
# reopened and keeps answering exactly (a change ID taken before the move, writes during it
# and after it), the guest's open connection saw no error, the destination is removed.
source "$(dirname "$0")/agent-lib.sh"
source "$(dirname "$0")/migrate-lib.sh"

mkdir -p "$T/ds3"
mount -t tmpfs -o size=64M,mode=0755 tmpfs "$T/ds3" 2>/dev/null || { echo "SKIP: cannot mount a tmpfs"; exit 77; }
teardown() {
  if [ -n "$SVMD_PID" ]; then kill "$SVMD_PID" 2>/dev/null; wait "$SVMD_PID" 2>/dev/null; fi
  SVMD_PID=
  umount -l "$T/ds3" 2>/dev/null
  true
}
trap 'rc=$?; set +e; teardown; (exit $rc); cleanup' EXIT

start_svmd --datastore "ds3=$T/ds3"
svmctl vm create vm1 --datastore ds1 --disk 32M >/dev/null
U=$(uri vm1 0)
qemu-io -f raw -c "write -P 1 0 8M" "$U" >/dev/null
ID=$(svmctl cbt changeid vm1 0)
qemu-io -f raw -c "write -P 2 1M 64k" "$U" >/dev/null
ctk=$(stat -c %s "$T/ds1/vm1/disk0.ctk")
[ "$ctk" -ge 8192 ] || fail "the .ctk is $ctk bytes: too small to leave a gap for"
# leave room for the 8 MiB of data and half the .ctk
free=$(df --output=avail -B1 "$T/ds3" | tail -1)
fallocate -l $(( free - (8 << 20) - ctk / 2 / 4096 * 4096 )) "$T/ds3/filler"
start_writer w "$U" 0 $((8 << 20))            # overwrites only: no new space on ds3
rc=0
svmctl migrate vm1 --datastore ds3 --json >"$T/result.json" 2>"$T/err" || rc=$?
stop_writer w
[ "$rc" -eq 1 ] || fail "the move exited $rc: $(cat "$T/result.json")"
echo "failed as it must: $(cat "$T/err")"
grep -q "moving the change tracking" "$T/err" || fail "not at the switchover: $(cat "$T/err")"
grep -q "No space left on device" "$T/err" || fail "stderr: $(cat "$T/err")"
[ ! -e "$T/ds3/vm1" ] || fail "the destination is still there: $(ls -la "$T/ds3/vm1")"
svmctl vm show vm1 --json | json_get 'd["datastore"]' | grep -qx ds1 || fail "the VM left ds1"
verify_writer w "$U"
# the reopened source tracker: exact, same incarnation
qemu-io -f raw -c "write -P 3 20M 4k" "$U" >/dev/null
writes=(1048576:65536 20971520:4096)
while read -r off _; do writes+=("$off:4096"); done <"$T/w.cmds"
check_query vm1 0 "$ID" "${writes[@]}"
ID2=$(svmctl cbt changeid vm1 0)
[ "${ID2%/*}" = "${ID%/*}" ] || fail "tracking restarted: $ID -> $ID2"
! grep -q "tracking was reset\|could not reopen" "$LOG" || fail "log: $(grep -i track "$LOG")"
# with room, the move goes through, tracking with it
rm "$T/ds3/filler"
svmctl migrate vm1 --datastore ds3 --json | json_get 'd["state"]' | grep -qx done || fail "second move"
check_query vm1 0 "$ID2"
check_query vm1 0 "$ID" "${writes[@]}"
stop_svmd
echo PASS
