#!/usr/bin/env bash
# kill -9 of svmd in the middle of a move, then a restart: the source is intact and served
# with every write acknowledged before the kill, the partial destination is removed, and the
# log says so. Then the other side of the commit point: the state a crash leaves between the
# commit (descriptor in the destination) and the removal of the source, with its journal;
# the restart keeps the destination and removes what is left of the source.
source "$(dirname "$0")/agent-lib.sh"
source "$(dirname "$0")/migrate-lib.sh"

start_svmd
svmctl vm create vm1 --datastore ds1 --disk 32M >/dev/null
U=$(uri vm1 0)
fill "$U" 32M 8
svmctl migrate vm1 --datastore ds2 --rate 2M >/dev/null 2>&1 &
MPID=$!
wait_copied vm1 $((1 << 20))
# writes acknowledged during the move, some in the copied part (mirrored), some not yet copied
qemu-io -f raw -c "write -P 21 0 64k" -c "write -P 22 20M 64k" -c "write -P 23 31M 4k" "$U" >/dev/null
crash_svmd
wait "$MPID" 2>/dev/null || true
[ -d "$T/ds2/vm1" ] || fail "expected the partial destination to be there after the kill"
[ -f "$SVM_STATE/moves/vm1.move" ] || fail "expected the move's journal after the kill"

start_svmd
grep -q "VM vm1: its move from datastore ds1 to ds2 was cut short when svmd stopped: the source $T/ds1/vm1 is intact and stays the VM's; removing the partial destination $T/ds2/vm1" "$LOG" ||
  fail "log line missing: $(grep vm1 "$LOG")"
[ ! -e "$T/ds2/vm1" ] || fail "the partial destination is still there: $(ls -la "$T/ds2/vm1")"
[ ! -e "$SVM_STATE/moves/vm1.move" ] || fail "the journal is still there"
svmctl vm show vm1 --json | json_get 'd["datastore"]' | grep -qx ds1 || fail "the VM left ds1"
out=$(qemu-io -f raw -c "read -P 21 0 64k" -c "read -P 8 64k 1M" -c "read -P 22 20M 64k" \
  -c "read -P 23 31M 4k" -c "read -P 8 $(( (31 << 20) + 4096 )) 4k" "$U")
if [ "$(grep -c '^read' <<<"$out")" != 5 ] || grep -qi fail <<<"$out"; then
  fail "source data after the crash: $out"
fi
! grep -q "tracking was reset" "$LOG" || fail "the crash reset change tracking"

# after the commit: the move completes, then the test puts back what a crash before the
# source's removal leaves (the old folder and the journal), and restarts
svmctl migrate vm1 --datastore ds2 >/dev/null
qemu-io -f raw -c "write -P 31 4M 64k" "$U" >/dev/null
stop_svmd
cp -a "$T/ds2/vm1" "$T/ds1/vm1"
qemu-io -f raw -c "write -P 99 4M 64k" "$T/ds1/vm1/disk0.raw" >/dev/null   # stale source
cat >"$SVM_STATE/moves/vm1.move" <<EOT
svm.move = 1
vm = vm1
src-datastore = ds1
src = $T/ds1/vm1
dst-datastore = ds2
dst = $T/ds2/vm1
EOT
start_svmd
grep -q "VM vm1: its move from datastore ds1 to ds2 had committed when svmd stopped: the destination $T/ds2/vm1 is the VM's; removing what is left of the source $T/ds1/vm1" "$LOG" ||
  fail "log line missing: $(grep vm1 "$LOG")"
[ ! -e "$T/ds1/vm1" ] || fail "the leftover source is still there"
[ ! -e "$SVM_STATE/moves/vm1.move" ] || fail "the journal is still there"
svmctl vm show vm1 --json | json_get 'd["datastore"]' | grep -qx ds2 || fail "the VM is not on ds2"
qemu-io -f raw -c "read -P 31 4M 64k" "$U" | grep -q "^read 65536" || fail "destination data"

# a crash after the commit and the source folder's retirement, before its removal, leaves
# the retired folder (the journal is gone by then); the restart removes it and nothing else
stop_svmd
mkdir -p "$T/ds1/.svm-removing-vm1-7" "$T/ds1/.other"
head -c 1M /dev/urandom >"$T/ds1/.svm-removing-vm1-7/disk0.raw"
touch "$T/ds1/.svm-removing-vm1-7/vm1.svm" "$T/ds1/.other/keep"
start_svmd
grep -q "removed $T/ds1/.svm-removing-vm1-7: the old folder of a VM that had moved away when svmd stopped" "$LOG" ||
  fail "log line missing: $(grep -i removing "$LOG")"
[ ! -e "$T/ds1/.svm-removing-vm1-7" ] || fail "the retired folder is still there"
[ -f "$T/ds1/.other/keep" ] || fail "a folder that was not retired by svmd was touched"
svmctl vm show vm1 --json | json_get 'd["datastore"]' | grep -qx ds2 || fail "the VM is not on ds2"

# a journal that names folders outside the datastores is never acted on
stop_svmd
mkdir -p "$T/elsewhere/vm1"
touch "$T/elsewhere/vm1/keep"
cat >"$SVM_STATE/moves/vm1.move" <<EOT
svm.move = 1
vm = vm1
src-datastore = ds1
src = $T/elsewhere/vm1
dst-datastore = ds2
dst = $T/ds2/vm1
EOT
start_svmd
grep -q "names folders outside this svmd's datastores" "$LOG" || fail "a foreign journal was not refused"
[ -f "$T/elsewhere/vm1/keep" ] || fail "a foreign journal was acted on"
svmctl vm show vm1 --json | json_get 'd["datastore"]' | grep -qx ds2 || fail "the VM is not on ds2"
stop_svmd
echo PASS
