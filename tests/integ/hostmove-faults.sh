#!/bin/bash
# A host move that cannot finish leaves the VM on the source, untouched and exported, and the
# destination clean:
#   - the destination's datastore (a small tmpfs) is too small: refused at PREPARE;
#   - it fills up during the copy: the receiver fails, the source aborts;
#   - the destination agent is killed mid-copy: the source gives up at once (the control
#     connection ended); the restarted agent removes the partial folder.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/peer-lib.sh"
require qemu-img qemu-io python3
require_root

make_ca "$TMP/tls-a" hostA
make_ca "$TMP/tls-b" hostB "$TMP/tls-a"
M=$((1024 * 1024))
mkdir -p "$TMP/hostB/ds1"
mount -t tmpfs -o size=32M,mode=0755 "tls-hostmove-$$" "$TMP/hostB/ds1"
on_exit "umount -l '$TMP/hostB/ds1'"
start_agent hostB --mgmt 127.0.0.1:0 --tls-dir "$TMP/tls-b"
start_agent hostA --tls-dir "$TMP/tls-a" --nfc-rate 4M
DEST=127.0.0.1:$PORT_hostB
SRC=$TMP/hostA/ds1 DST=$TMP/hostB/ds1

uri() { on "$1" vm show "$2" --json | json_get "d['disks'][$3]['nbd-uri']"; }

# source_intact VM SUM: the disk as it was, exported again
source_intact() {
  [ "$(checksum "$SRC/$1/disk0.raw")" = "$2" ] || fail "$1 changed on hostA"
  qemu-img info "$(uri hostA "$1" 0)" >/dev/null || fail "$1 is not exported on hostA"
}

no_vm_on_b() {
  [ ! -e "$DST/$1" ] && [ ! -e "$DST/.svm-incoming.$1" ] || { ls -la "$DST" >&2; fail "hostB kept $1"; }
}

# 1. too big for the destination: refused before anything is sent
on hostA vm create big --datastore ds1 --disk 48M:thick >/dev/null
SUM=$(checksum "$SRC/big/disk0.raw")
expect_exit 1 'datastore ds1 on host hostB has .* free, VM big needs' \
  on hostA migrate big --datastore ds1 --host "$DEST"
no_vm_on_b big
source_intact big "$SUM"
ok "too big: refused at PREPARE ($(grep -o 'datastore ds1 on host.*' "$TMP/stderr" | head -1))"

# 2. fills up during the copy: 20 MiB of data fit in 32 MiB, until something else takes 20
on hostA vm create vm1 --datastore ds1 --disk 32M:thin >/dev/null
qemu-io -f raw -c 'write -P 0x5a 0 20M' "$(uri hostA vm1 0)" >/dev/null
SUM=$(checksum "$SRC/vm1/disk0.raw")
cp --sparse=always "$SRC/vm1/disk0.raw" "$TMP/vm1.ref"
on hostA migrate vm1 --datastore ds1 --host "$DEST" >/dev/null 2>"$TMP/mig.err" &
MIG=$!
for _ in $(seq 1 100); do on hostA status --json | grep -q '"vm": "vm1"' && break; sleep 0.1; done
ID=$(on hostA status --json | json_get "[m['id'] for m in d['host_moves'] if m['vm'] == 'vm1'][0]")
wait_received "$DST/.svm-incoming.vm1/disk0.raw" $((2 * M))
dd if=/dev/zero of="$DST/filler" bs=1M count=24 2>/dev/null || true
rc=0
wait "$MIG" || rc=$?
[ "$rc" -eq 1 ] || fail "svmctl migrate exited $rc on a full destination"
grep -Eq 'No space left|ENOSPC|space' "$TMP/mig.err" || fail "no word of the full disk: $(cat "$TMP/mig.err")"
wait_log hostB 'transfer aborted, .*svm-incoming.vm1 removed'
rm -f "$DST/filler"
no_vm_on_b vm1
source_intact vm1 "$SUM"
ok "destination full mid-copy: aborted ($(cut -c1-140 "$TMP/mig.err"))"

# 3. the destination agent killed mid-copy, then restarted
on hostA migrate vm1 --datastore ds1 --host "$DEST" >/dev/null 2>"$TMP/mig.err" &
MIG=$!
for _ in $(seq 1 100); do
  [ "$(on hostA status --json | json_get "len([m for m in d['host_moves'] if m['vm'] == 'vm1'])")" -eq 2 ] && break
  sleep 0.1
done
ID=$(on hostA status --json | json_get "max(m['id'] for m in d['host_moves'] if m['vm'] == 'vm1')")
wait_received "$DST/.svm-incoming.vm1/disk0.raw" $((2 * M))
kill_agent hostB
rc=0
wait "$MIG" || rc=$?
[ "$rc" -eq 1 ] || { cat "$TMP/hostA.log" "$TMP/hostB.log" >&2; fail "svmctl migrate exited $rc when the destination died"; }
[ "$(move_field hostA "$ID" state)" = failed ] || fail "move state"
[ -d "$DST/.svm-incoming.vm1" ] || fail "no partial folder on hostB (the copy did not start?)"
source_intact vm1 "$SUM"
start_agent hostB --mgmt "127.0.0.1:$PORT_hostB" --tls-dir "$TMP/tls-b"
wait_log hostB 'removed .*svm-incoming.vm1: a host move into datastore ds1 that did not finish'
no_vm_on_b vm1
ok "destination killed mid-copy: source untouched, partial folder removed on restart"

# and the same move then works
on hostA migrate vm1 --datastore ds1 --host "$DEST" >/dev/null
qemu-img compare -q -f raw -F raw "$TMP/vm1.ref" "$(uri hostB vm1 0)" || fail "vm1 on hostB"
[ "$(checksum "$DST/vm1/disk0.raw")" = "$SUM" ] || fail "vm1 differs on hostB"
ok "the move then succeeds"
