#!/usr/bin/env bash
# Errors that say what is wrong: --disk 8E (the limit), a FIFO or a directory named as a disk
# (svm-convert), a destination on /proc, 64 --disk options (accepted), and a .ctk that cannot
# be opened (the VM is listed as degraded with the reason, in vm list/show, text and JSON).
source "$(dirname "$0")/agent-lib.sh"
CONV=$SVM_BIN/svm-convert

start_svmd
expect_fail 2 "--disk 8E: larger than the largest disk svmd can make (4 EiB" \
  svmctl vm create big --datastore ds1 --disk 8E

# svm-convert: FIFO / directory as source or --punch-zeroes disk, /proc as destination
mkfifo "$T/fifo"
mkdir "$T/dir"
head -c 1M /dev/zero >"$T/src.raw"
expect_fail 1 "$T/fifo: the source is a FIFO, not a disk image" "$CONV" "$T/fifo" "$T/out.raw"
expect_fail 1 "$T/fifo: is a FIFO, not a disk image" "$CONV" --punch-zeroes "$T/fifo"
expect_fail 1 "$T/dir: the source is a directory, not a disk image" "$CONV" "$T/dir" "$T/out.raw"
expect_fail 1 "/proc/self/out.raw: is on /proc" "$CONV" "$T/src.raw" /proc/self/out.raw
expect_err "give a destination on a disk file system"

# 64 disks: the most a descriptor holds, accepted
args=()
for _ in $(seq 0 63); do args+=(--disk 64K); done
svmctl vm create many --datastore ds1 "${args[@]}" --json >"$T/many.json" \
  || fail "64 disks refused: $(cat "$T/many.json")"
[ "$(json_get 'len(d["disks"])' <"$T/many.json")" = 64 ] || fail "64 disks: $(cat "$T/many.json")"
args+=(--disk 64K)
expect_fail 1 "at most 64 disks" svmctl vm create toomany --datastore ds1 "${args[@]}"
svmctl vm delete many >/dev/null

# a .ctk that cannot be opened: degraded, with the reason
svmctl vm create vm1 --datastore ds1 --disk 1M >/dev/null
stop_svmd
rm "$T/ds1/vm1/disk0.ctk"
mkdir "$T/ds1/vm1/disk0.ctk"
start_svmd
svmctl vm list --json >"$T/list.json"
[ "$(json_get '[x for x in d["degraded"] if x["name"] == "vm1"][0]["degraded"]' <"$T/list.json")" = True ] \
  || fail "vm1 not degraded: $(cat "$T/list.json")"
json_get '[x for x in d["degraded"] if x["name"] == "vm1"][0]["reason"]' <"$T/list.json" \
  | grep -qF "$T/ds1/vm1/disk0.ctk: is a directory, not a regular file" || fail "reason: $(cat "$T/list.json")"
svmctl vm show vm1 >"$T/show.txt"
grep -qF "degraded: $T/ds1/vm1/vm1.svm: disk0: $T/ds1/vm1/disk0.ctk: is a directory" "$T/show.txt" \
  || fail "vm show text: $(cat "$T/show.txt")"
svmctl vm list | grep -qF "vm1 (degraded" || fail "vm list text: $(svmctl vm list)"
# a degraded VM is never changed: no delete, no tracking commands, its files stay
expect_fail 1 "VM vm1 is degraded and not served: $T/ds1/vm1/vm1.svm: disk0" svmctl vm delete vm1
expect_fail 1 "VM vm1 is degraded and not served" svmctl cbt query vm1 0 --since '*'
expect_fail 1 "VM vm1 exists already" svmctl vm create vm1 --datastore ds2 --disk 1M
for f in disk0.raw vm1.svm; do
  [ -f "$T/ds1/vm1/$f" ] || fail "degraded VM's $f removed"
done
echo "harden-errors: ok"
