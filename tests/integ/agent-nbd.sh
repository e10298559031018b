#!/usr/bin/env bash
# Guest I/O through svmd's NBD exports with real clients (qemu-io, qemu-img, nbdinfo, nbdcopy,
# fio's nbd engine): the data lands in the disk file, and `cbt query` reports exactly the
# written extents (rounded to the tracking granularity), also as the NBD meta context
# svm-cbt:<change id>.
source "$(dirname "$0")/agent-lib.sh"
requires qemu-io qemu-img nbdinfo nbdcopy fio

SIZE=$((64 * 1024 * 1024))
start_svmd --insecure      # the TCP export below is plaintext
svmctl vm create vm1 --datastore ds1 --disk 64M --disk 4M:thick --tcp 127.0.0.1:0 --json >"$T/c.json"
U=$(uri vm1 0)
[ "$(json_get 'd["disks"][0]["nbd-uri"]' <"$T/c.json")" = "$U" ] || fail "nbd-uri"
DISK=$T/ds1/vm1/disk0.raw

# a reference image receives the same writes with dd
truncate -s $SIZE "$T/ref.raw"
ref_write() {     # ref_write PATTERN OFFSET LENGTH
  head -c "$3" /dev/zero | tr '\0' "\\$(printf '%03o' "$1")" |
    dd of="$T/ref.raw" bs=1M seek="$2" oflag=seek_bytes conv=notrunc status=none
}
guest_write() {   # guest_write PATTERN OFFSET LENGTH  (through the export)
  qemu-io -f raw -c "write -P $1 $2 $3" "$U" >/dev/null
  ref_write "$@"
}

# ---- NBD sees the disk as svmd describes it ----
nbdinfo --json "$U" >"$T/info.json"
[ "$(json_get 'd["exports"][0]["export-size"]' <"$T/info.json")" = $SIZE ] || fail "export size"
[ "$(json_get 'd["exports"][0]["export-name"]' <"$T/info.json")" = vm1/disk0 ] || fail "export name"
qemu-img info --output=json "$U" | json_get 'd["virtual-size"]' | grep -qx $SIZE || fail "qemu-img info"

# ---- writes land on the disk file; CBT has every one of them ----
guest_write 17 0 4096
guest_write 34 $((1024 * 1024)) $((1024 * 1024))
guest_write 51 $((5 * 1024 * 1024 + 65536 - 512)) 1024        # straddles two blocks
qemu-io -f raw -c "read -P 34 1M 1M" -c "read -P 17 0 4k" "$U" | grep -q "read 1048576/1048576" \
  || fail "read back"
cmp "$T/ref.raw" "$DISK" || fail "disk file differs from the reference"
qemu-img compare -f raw -F raw "$T/ref.raw" "$U" >/dev/null || fail "qemu-img compare via NBD"
check_query vm1 0 '*' 0:4096 1048576:1048576 5307904:1024

# ---- a change ID cuts: only later writes are reported ----
ID1=$(svmctl cbt changeid vm1 0)
[[ "$ID1" =~ ^[0-9a-f-]{36}/1$ ]] || fail "change ID format: $ID1"
svmctl cbt changeid vm1 0 --json | json_get 'd["change-id"]' | grep -q '/2$' || fail "changeid --json"
ID2=$(svmctl cbt changeid vm1 0)
check_query vm1 0 "$ID2"
guest_write 68 $((20 * 1024 * 1024)) 100000
guest_write 85 $((40 * 1024 * 1024 - 4096)) 8192
qemu-io -f raw -c "write -z $((30 * 1024 * 1024)) 65536" "$U" >/dev/null     # zeroes count too
ref_write 0 $((30 * 1024 * 1024)) 65536
qemu-io -f raw -c "discard $((50 * 1024 * 1024)) 131072" "$U" >/dev/null    # and so does trim
check_query vm1 0 "$ID2" 20971520:100000 41938944:8192 31457280:65536 52428800:131072
check_query vm1 0 "$ID1" 20971520:100000 41938944:8192 31457280:65536 52428800:131072
check_query vm1 0 '*' 0:4096 1048576:1048576 5307904:1024 20971520:100000 41938944:8192 \
  31457280:65536 52428800:131072
svmctl cbt query vm1 0 --since "$ID2" | head -1 | grep -qx "20971520 131072" || fail "query text"
# the other disk has its own tracking
check_query vm1 1 '*'
# another disk's change ID, and a malformed one: refused, naming the disk, and the way out
expect_fail 1 "vm1 disk1: change ID $ID1 is not one of this disk's" \
  svmctl cbt query vm1 1 --since "$ID1"
expect_err "take a new change ID and do a full copy"
expect_fail 1 "vm1 disk0: change ID 'not-a-change-id' is malformed" \
  svmctl cbt query vm1 0 --since "not-a-change-id"
expect_err "take a new change ID and do a full copy"

# ---- the same map over NBD: meta context svm-cbt:<change id> ----
svmctl cbt query vm1 0 --since "$ID2" --json >"$T/q.json"
nbdinfo --map="svm-cbt:$ID2" "$U" >"$T/map.txt"
python3 - "$T/map.txt" "$T/q.json" <<'EOF' || fail "nbdinfo --map=svm-cbt differs from cbt query"
import json, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
dirty = [[int(r[0]), int(r[1])] for r in rows if r[2] == "1"]
merged = []
for o, l in dirty:
    if merged and merged[-1][0] + merged[-1][1] == o:
        merged[-1][1] += l
    else:
        merged.append([o, l])
want = [[e["offset"], e["length"]] for e in json.load(open(sys.argv[2]))["extents"]]
if merged != want:
    print("map", merged, "query", want); sys.exit(1)
EOF
nbdinfo --map=base:allocation "$U" >/dev/null || fail "base:allocation"
if nbdinfo --map="svm-cbt:00000000-0000-4000-8000-000000000000/1" "$U" >/dev/null 2>&1; then
  fail "a foreign change ID was served as a meta context"
fi

# ---- other peers: nbdcopy, qemu-img convert, fio with verification ----
nbdcopy "$U" "$T/copy.raw"
cmp "$T/ref.raw" "$T/copy.raw" || fail "nbdcopy from the export"
qemu-img convert -f raw -O qcow2 "$U" "$T/copy.qcow2"
qemu-img compare -f raw -F qcow2 "$T/ref.raw" "$T/copy.qcow2" >/dev/null || fail "qemu-img convert"
ID3=$(svmctl cbt changeid vm1 0)
fio --name=verify --ioengine=nbd --uri="$U" --rw=randwrite --bs=4k --size=8M --offset=8M \
    --iodepth=8 --verify=crc32c --do_verify=1 --randrepeat=1 --output="$T/fio.txt" \
  || { cat "$T/fio.txt"; fail "fio verify through the export"; }
# fio wrote [8M, 16M) only: exactly that is reported since ID3
check_query vm1 0 "$ID3" 8388608:8388608

# ---- TCP export ----
TCP=$(svmctl vm show vm1 --json | json_get 'd["disks"][0]["nbd-tcp-uri"]')
[[ "$TCP" =~ ^nbd://127\.0\.0\.1:[0-9]+/vm1/disk0$ ]] || fail "tcp uri: $TCP"
qemu-io -f raw -c "read -P 34 1M 1M" "$TCP" >/dev/null || fail "read over TCP"

# ---- vm delete while a guest is connected: the guest is disconnected, the files go ----
svmctl vm create vm2 --datastore ds2 --disk 1M >/dev/null
mkfifo "$T/qio"
qemu-io -f raw "$(uri vm2 0)" <"$T/qio" >"$T/qio.out" 2>&1 &
qio=$!
exec 3>"$T/qio"
echo "write -P 5 0 4k" >&3
for _ in $(seq 1 100); do grep -q "wrote 4096/4096" "$T/qio.out" && break; sleep 0.05; done
grep -q "wrote 4096/4096" "$T/qio.out" || fail "connected guest could not write"
svmctl vm delete vm2 >/dev/null
[ ! -e "$T/ds2/vm2" ] || fail "delete with a connected guest left files"
echo "read -P 5 0 4k" >&3
exec 3>&-
wait "$qio" || true
grep -q "read 4096/4096" "$T/qio.out" && fail "the guest still read from a deleted VM"

# ---- clean shutdown; the disk file holds fio's data and nothing else changed ----
stop_svmd
dd if="$DISK" of="$T/ref.raw" bs=1M skip=8 seek=8 count=8 conv=notrunc status=none
cmp "$T/ref.raw" "$DISK" || fail "disk file after fio"
echo PASS
