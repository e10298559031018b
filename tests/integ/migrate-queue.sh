#!/usr/bin/env bash
# The limits: at most 2 moves per host at once; a third waits in the queue, shown by status,
# and starts as soon as a running one ends (here: is cancelled). A queued move can be
# cancelled too, and leaves nothing behind.
source "$(dirname "$0")/agent-lib.sh"
source "$(dirname "$0")/migrate-lib.sh"

start_svmd
for vm in vm1 vm2 vm3 vm4; do
  svmctl vm create $vm --datastore ds1 --disk 16M >/dev/null
  fill "$(uri $vm 0)" 16M 5
done
PIDS=()
for vm in vm1 vm2 vm3 vm4; do
  svmctl migrate $vm --datastore ds2 --rate 1M --json >"$T/$vm.json" 2>/dev/null &
  PIDS+=("$!")
  # one at a time, so that the queue's order is known
  for _ in $(seq 1 200); do
    svmctl status --json | json_get "any(m['vm'] == '$vm' for m in d['running'] + d['queued'])" |
      grep -qx True && break
    sleep 0.05
  done
done
svmctl status --json >"$T/s1.json"
[ "$(json_get 'sorted(m["vm"] for m in d["running"])' <"$T/s1.json")" = '["vm1", "vm2"]' ] ||
  fail "running: $(cat "$T/s1.json")"
[ "$(json_get 'sorted(m["vm"] for m in d["queued"])' <"$T/s1.json")" = '["vm3", "vm4"]' ] ||
  fail "queued: $(cat "$T/s1.json")"
[ "$(json_get 'd["limits"]["per_host"]' <"$T/s1.json")" = 2 ] || fail "limits: $(cat "$T/s1.json")"
svmctl status | grep -q "vm3 ds1 -> ds2  queued" || fail "status text: $(svmctl status)"
[ ! -e "$T/ds2/vm3" ] || fail "a queued move made its destination"

# a queued move cancelled: nothing to undo
svmctl migrate --cancel vm4 >/dev/null || fail "cancel of a queued move"
# a running one cancelled: the oldest queued one starts
svmctl migrate --cancel vm1 >/dev/null || fail "cancel of vm1"
wait_phase vm3 copying
svmctl status --json >"$T/s2.json"
[ "$(json_get 'sorted(m["vm"] for m in d["running"])' <"$T/s2.json")" = '["vm2", "vm3"]' ] ||
  fail "after the cancel: $(cat "$T/s2.json")"
[ "$(json_get 'd["queued"]' <"$T/s2.json")" = '[]' ] || fail "queue: $(cat "$T/s2.json")"
svmctl migrate --cancel vm2 >/dev/null
svmctl migrate --cancel vm3 >/dev/null
for p in "${PIDS[@]}"; do wait "$p" && fail "a cancelled move exited 0"; done
for vm in vm1 vm2 vm3 vm4; do
  [ "$(json_get 'd["state"]' <"$T/$vm.json")" = cancelled ] || fail "$vm: $(cat "$T/$vm.json")"
  [ ! -e "$T/ds2/$vm" ] || fail "ds2/$vm left behind"
  qemu-io -f raw -c "read -P 5 0 16M" "$(uri $vm 0)" | grep -q "^read 16777216" || fail "$vm data"
done
[ "$(json_get 'd["queued_seconds"] > 0' <"$T/vm3.json")" = True ] || fail "vm3 never queued: $(cat "$T/vm3.json")"
svmctl status --json | json_get 'len(d["done"]) == 4 and d["running"] == [] and d["queued"] == []' |
  grep -qx True || fail "status at the end: $(svmctl status)"
stop_svmd
echo PASS
