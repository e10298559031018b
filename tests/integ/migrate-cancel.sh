#!/usr/bin/env bash
# migrate --cancel in the middle of the bulk copy (a rate cap makes the move last; the test
# waits for the copy to be under way, it never sleeps for it): the VM stays on its source,
# the destination folder is removed, the guest's open connection never sees an error, and
# every write it made is on the source. The same for svmd stopped by SIGTERM during a move.
# The VM can be moved afterwards.
source "$(dirname "$0")/agent-lib.sh"
source "$(dirname "$0")/migrate-lib.sh"

start_svmd
svmctl vm create vm1 --datastore ds1 --disk 32M >/dev/null
U=$(uri vm1 0)
fill "$U" 32M 3
start_writer w "$U" $((16 << 20)) $((16 << 20))
rc=0
svmctl migrate vm1 --datastore ds2 --rate 2M --json >"$T/result.json" 2>"$T/migrate.err" &
MPID=$!
wait_copied vm1 $((1 << 20))
[ -d "$T/ds2/vm1" ] || fail "no destination folder while copying"
[ -f "$SVM_STATE/moves/vm1.move" ] || fail "no journal while copying"
expect_fail 1 "is being moved" svmctl vm delete vm1
expect_fail 1 "is being moved already" svmctl migrate vm1 --datastore ds2
svmctl migrate --cancel vm1 --json >"$T/cancel.json" || fail "migrate --cancel: $(cat "$T/cancel.json")"
wait "$MPID" || rc=$?
[ "$rc" -eq 1 ] || fail "svmctl migrate exited $rc after a cancel, expected 1"
grep -q "cancelled" "$T/migrate.err" || fail "svmctl migrate stderr: $(cat "$T/migrate.err")"
[ "$(json_get 'd["state"]' <"$T/result.json")" = cancelled ] || fail "result: $(cat "$T/result.json")"
[ "$(json_get 'd["state"]' <"$T/cancel.json")" = cancelled ] || fail "cancel: $(cat "$T/cancel.json")"
[ "$(json_get 'd["bytes_done"] < d["bytes_total"]' <"$T/result.json")" = True ] ||
  fail "the copy was over before the cancel: $(cat "$T/result.json")"
stop_writer w

[ ! -e "$T/ds2/vm1" ] || fail "the destination is still there: $(ls -la "$T/ds2/vm1")"
[ ! -e "$SVM_STATE/moves/vm1.move" ] || fail "the journal is still there"
svmctl vm show vm1 --json | json_get 'd["datastore"]' | grep -qx ds1 || fail "the VM left ds1"
qemu-io -f raw -c "read -P 3 0 16M" "$U" | grep -q "^read 16777216" || fail "source data"
verify_writer w "$U"
grep -q "vm1: move to datastore ds2 cancelled" "$LOG" || fail "log line"
expect_fail 1 "is not being moved" svmctl migrate --cancel vm1

# svmd stopped (SIGTERM) in the middle of a move: the move is cancelled like the above, svmd
# exits cleanly, and a restart finds the VM on its source with nothing else left
svmctl migrate vm1 --datastore ds2 --rate 2M >/dev/null 2>&1 &
MPID=$!
wait_copied vm1 $((1 << 20))
stop_svmd
wait "$MPID" && fail "svmctl migrate exited 0 though svmd stopped"
[ ! -e "$T/ds2/vm1" ] || fail "the destination is still there after SIGTERM"
[ ! -e "$SVM_STATE/moves/vm1.move" ] || fail "the journal is still there after SIGTERM"
start_svmd
! grep -q "was cut short" "$LOG" || fail "a clean stop left a move to resolve"
svmctl vm show vm1 --json | json_get 'd["datastore"]' | grep -qx ds1 || fail "the VM left ds1"

# nothing is left in the way of the next move
svmctl migrate vm1 --datastore ds2 --json | json_get 'd["state"]' | grep -qx done || fail "second move"
qemu-io -f raw -c "read -P 3 0 16M" "$U" | grep -q "^read 16777216" || fail "data after the move"
verify_writer w "$U"
stop_svmd
echo PASS
