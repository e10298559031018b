#!/bin/bash
# Cold host moves between two agents on loopback, TLS with certificates: thin and thick disks
# keep their data (qemu-img compare) and their provisioning (stat, filefrag), or take the one
# asked for; change IDs taken before the move answer the same on the new host; the destination
# exports the disks; the source's copy is gone. A VM with a guest connected is refused; a
# cancelled move leaves the VM on the source, untouched, and the destination clean.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/peer-lib.sh"
require qemu-img qemu-io nbdsh filefrag python3

make_ca "$TMP/tls-a" hostA
make_ca "$TMP/tls-b" hostB "$TMP/tls-a"
start_agent hostB --mgmt 127.0.0.1:0 --tls-dir "$TMP/tls-b"
start_agent hostA --tls-dir "$TMP/tls-a" --nfc-streams 2
DEST=127.0.0.1:$PORT_hostB
SRC=$TMP/hostA/ds1 DST=$TMP/hostB/ds1
M=$((1024 * 1024))

uri() { on "$1" vm show "$2" --json | json_get "d['disks'][$3]['nbd-uri']"; }
write() { qemu-io -f raw -c "write -P $3 $4 $5" "$(uri hostA "$1" "$2")" >/dev/null; }

# vm1: a thin disk with data here and there, and a thick one
on hostA vm create vm1 --datastore ds1 --disk 64M:thin --disk 32M:thick >/dev/null
write vm1 0 0x11 1M 4M
write vm1 0 0x22 40M 2M
write vm1 1 0x33 8M 8M
ID1=$(on hostA cbt changeid vm1 0)
write vm1 0 0x44 50M 1M
SINCE_ID1=$(on hostA cbt query vm1 0 --since "$ID1" --json)
SINCE_ALL=$(on hostA cbt query vm1 0 --since '*' --json)
cp --sparse=always "$SRC/vm1/disk0.raw" "$TMP/ref0.raw"
cp "$SRC/vm1/disk1.raw" "$TMP/ref1.raw"

OUT=$(on hostA migrate vm1 --datastore ds1 --host "$DEST" --json)
[ "$(json_get "d['state']" <<<"$OUT")" = done ] || fail "move: $OUT"
[ "$(json_get "d['bytes_copied'] == d['bytes_total'] > 0" <<<"$OUT")" = True ] ||
  fail "move counters: $OUT"
json_get "d['seconds'] >= 0 and d['downtime_ms'] == 0" <<<"$OUT" | grep -q True ||
  fail "move record: $OUT"
ok "vm1 moved: $(json_get "d['bytes_total']" <<<"$OUT") bytes in $(json_get "d['seconds']" <<<"$OUT") s"

# the data, the provisioning
# (svmd holds the files locked: qemu-img reads them through hostB's exports, cmp directly)
qemu-img compare -q -f raw -F raw "$TMP/ref0.raw" "$(uri hostB vm1 0)" || fail "disk0 differs"
qemu-img compare -q -f raw -F raw "$TMP/ref1.raw" "$(uri hostB vm1 1)" || fail "disk1 differs"
cmp "$TMP/ref0.raw" "$DST/vm1/disk0.raw" && cmp "$TMP/ref1.raw" "$DST/vm1/disk1.raw" ||
  fail "the files differ"
[ "$(stat -c %s "$DST/vm1/disk0.raw")" -eq $((64 * M)) ] || fail "disk0 size"
a0=$(allocated "$DST/vm1/disk0.raw")
[ "$a0" -ge $((7 * M)) ] && [ "$a0" -le $((12 * M)) ] ||
  fail "thin disk0 has $a0 bytes allocated, wanted about 7 MiB"
[ "$(allocated "$DST/vm1/disk1.raw")" -ge $((32 * M)) ] || fail "thick disk1 is not allocated"
# filefrag's map: the data runs are allocated, the hole between them is not
mapped() {   # FILE OFFSET: is the block at OFFSET in one of filefrag's extents?
  filefrag -v "$1" | python3 -c '
import re, sys
b = int(sys.argv[1]) // 4096
for l in sys.stdin:
    m = re.match(r"\s*\d+:\s*(\d+)\.\.\s*(\d+):", l)
    if m and int(m.group(1)) <= b <= int(m.group(2)):
        sys.exit(0)
sys.exit(1)' "$2"
}
mapped "$DST/vm1/disk0.raw" $((2 * M)) && mapped "$DST/vm1/disk0.raw" $((41 * M)) ||
  fail "thin disk0: filefrag does not map its data"
mapped "$DST/vm1/disk0.raw" $((20 * M)) && fail "thin disk0: filefrag maps the hole at 20M"
mapped "$DST/vm1/disk1.raw" $((30 * M)) || fail "thick disk1: filefrag does not map 30M"
on hostB vm show vm1 --json | json_get "[x['provisioning'] for x in d['disks']]" |
  grep -q "thin.*thick" || fail "the descriptor lost the provisioning"
ok "disk0 thin ($a0 bytes allocated), disk1 thick, both identical to the source"

# the destination owns and exports the VM; the source has nothing left
on hostA vm list --json | json_get "[v['name'] for v in d['vms']]" | grep -q vm1 &&
  fail "vm1 still listed on hostA"
[ ! -e "$SRC/vm1" ] || fail "hostA still has $SRC/vm1"
ok "hostB exports vm1; hostA removed its copy"

# change IDs keep answering
[ "$(on hostB cbt query vm1 0 --since "$ID1" --json)" = "$SINCE_ID1" ] ||
  fail "cbt query --since $ID1 differs on hostB"
[ "$(on hostB cbt query vm1 0 --since '*' --json)" = "$SINCE_ALL" ] ||
  fail "cbt query --since * differs on hostB"
ID2=$(on hostB cbt changeid vm1 0)
[ "${ID2%/*}" = "${ID1%/*}" ] || fail "the disk's change IDs changed identity: $ID1 -> $ID2"
ok "change ID $ID1 answers the same on hostB; next is $ID2"

# conversions on the way: thick -> eager-zeroed-thick, thin -> thin kept small
on hostA vm create vm2 --datastore ds1 --disk 16M:thin >/dev/null
write vm2 0 0x55 4M 1M
cp --sparse=always "$SRC/vm2/disk0.raw" "$TMP/ref2.raw"
on hostA migrate vm2 --datastore ds1 --host "$DEST" --provisioning eager-zeroed-thick >/dev/null
qemu-img compare -q -f raw -F raw "$TMP/ref2.raw" "$(uri hostB vm2 0)" || fail "vm2 differs"
[ "$(allocated "$DST/vm2/disk0.raw")" -ge $((16 * M)) ] || fail "vm2 is not allocated"
[ "$(unwritten_extents "$DST/vm2/disk0.raw")" -eq 0 ] || fail "vm2 has unwritten extents"
grep -q 'disk0.provisioning = eager-zeroed-thick' "$DST/vm2/vm2.svm" ||
  fail "vm2's descriptor does not say eager-zeroed-thick"
ok "thin -> eager-zeroed-thick on the way"

# a guest connected: refused, nothing moves
on hostA vm create vm3 --datastore ds1 --disk 8M:thin >/dev/null
PATH=/usr/bin:/bin:$PATH nbdsh -u "$(uri hostA vm3 0)" -c "open('$TMP/connected', 'w').close()" \
  -c 'import time; time.sleep(60)' &
GUEST=$!
on_exit "stop_pid $GUEST"
for _ in $(seq 1 100); do [ -e "$TMP/connected" ] && break; sleep 0.1; done
expect_exit 1 'guest connected to disk0.*stop the guest first' \
  on hostA migrate vm3 --datastore ds1 --host "$DEST"
[ ! -e "$DST/vm3" ] || fail "vm3 appeared on hostB"
stop_pid "$GUEST"
ok "a VM with a guest connected is refused"

# cancel: a slow move (rate cap), cancelled half-way
stop_agent hostA
start_agent hostA --tls-dir "$TMP/tls-a" --nfc-rate 4M
on hostA vm create vm4 --datastore ds1 --disk 32M:thin >/dev/null
write vm4 0 0x66 0 24M
SUM4=$(checksum "$SRC/vm4/disk0.raw")
on hostA migrate vm4 --datastore ds1 --host "$DEST" >"$TMP/mig4.out" 2>"$TMP/mig4.err" &
MIG=$!
for _ in $(seq 1 100); do on hostA status --json | grep -q '"vm": "vm4"' && break; sleep 0.1; done
ID=$(on hostA status --json | json_get "[m['id'] for m in d['host_moves'] if m['vm'] == 'vm4'][0]")
wait_received "$DST/.svm-incoming.vm4/disk0.raw" $((4 * M))
on hostA migrate --cancel vm4 >/dev/null
rc=0
wait "$MIG" || rc=$?
[ "$rc" -eq 1 ] || fail "the cancelled svmctl migrate exited $rc"
grep -q cancelled "$TMP/mig4.err" || fail "svmctl did not say cancelled: $(cat "$TMP/mig4.err")"
[ "$(move_field hostA "$ID" state)" = cancelled ] || fail "move state"
wait_log hostB 'transfer aborted, .*svm-incoming.vm4 removed'
[ ! -e "$DST/vm4" ] && [ ! -e "$DST/.svm-incoming.vm4" ] || fail "hostB kept vm4's files"
[ "$(checksum "$SRC/vm4/disk0.raw")" = "$SUM4" ] || fail "vm4 changed on hostA"
qemu-img info "$(uri hostA vm4 0)" >/dev/null || fail "vm4 is not exported again on hostA"
on hostA status | grep -q 'vm4.*cancelled' || fail "status does not show the cancelled move"
ok "a cancelled move leaves vm4 on hostA, exported, and hostB clean"
