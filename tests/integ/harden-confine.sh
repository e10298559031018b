#!/usr/bin/env bash
# Disk files stay inside their VM folder: a symlinked disk, a FIFO descriptor, a FIFO or a
# directory as disk or .ctk, a symlinked descriptor and a descriptor whose file and ctk keys
# name one file are all refused at once with the file and the reason, and svmd keeps serving
# the good VM. Opening never blocks (a FIFO would hang a plain open).
source "$(dirname "$0")/agent-lib.sh"
requires qemu-io

start_svmd
svmctl vm create good --datastore ds1 --disk 1M >/dev/null
svmctl vm create other --datastore ds2 --disk 1M >/dev/null
svmctl vm create sym --datastore ds1 --disk 1M >/dev/null
svmctl vm create alias --datastore ds1 --disk 1M --disk 1M >/dev/null
svmctl vm create fifodisk --datastore ds1 --disk 1M >/dev/null
svmctl vm create dirdisk --datastore ds1 --disk 1M >/dev/null
svmctl vm create fifoctk --datastore ds1 --disk 1M >/dev/null
svmctl vm create symdesc --datastore ds1 --disk 1M >/dev/null
qemu-io -f raw -c 'write -P 0x11 0 64k' "$(uri good 0)" >/dev/null
stop_svmd

# sym: its disk is a symlink to another VM's disk (same size, so only the link gives it away)
rm "$T/ds1/sym/disk0.raw"
ln -s "$T/ds2/other/disk0.raw" "$T/ds1/sym/disk0.raw"
# alias: disk0's tracking file is disk1's disk
sed -i 's/^disk0.ctk = .*/disk0.ctk = disk1.raw/' "$T/ds1/alias/alias.svm"
# a FIFO and a directory as disks, a FIFO as .ctk
rm "$T/ds1/fifodisk/disk0.raw"; mkfifo "$T/ds1/fifodisk/disk0.raw"
rm "$T/ds1/dirdisk/disk0.raw"; mkdir "$T/ds1/dirdisk/disk0.raw"
rm -f "$T/ds1/fifoctk/disk0.ctk"; mkfifo "$T/ds1/fifoctk/disk0.ctk"
# a FIFO descriptor, and a descriptor that is a symlink to another VM's
mkdir "$T/ds1/fifo"; mkfifo "$T/ds1/fifo/fifo.svm"
mv "$T/ds1/symdesc/symdesc.svm" "$T/symdesc.svm"
ln -s "$T/symdesc.svm" "$T/ds1/symdesc/symdesc.svm"

start_svmd
svmctl vm list --json >"$T/list.json"
json_get 'sorted(x["name"] for x in d["vms"])' <"$T/list.json" | grep -qxF '["good", "other"]' \
  || fail "served VMs: $(cat "$T/list.json")"
json_get 'sorted(x["name"] for x in d["degraded"])' <"$T/list.json" \
  | grep -qxF '["dirdisk", "fifoctk", "fifodisk", "sym"]' || fail "degraded VMs: $(cat "$T/list.json")"
grep -qF "$T/ds1/sym/disk0.raw: is a symbolic link" "$LOG" || fail "symlinked disk not refused"
grep -qF "$T/ds1/alias/alias.svm: disk0.ctk names disk1.raw, which is disk1's file" "$LOG" \
  || fail "aliased ctk not refused"
grep -qF "$T/ds1/fifodisk/disk0.raw: is a FIFO, not a regular file" "$LOG" || fail "FIFO disk"
grep -qF "$T/ds1/dirdisk/disk0.raw: is a directory, not a regular file" "$LOG" || fail "dir disk"
grep -qF "$T/ds1/fifoctk/disk0.ctk: is a FIFO, not a regular file" "$LOG" || fail "FIFO ctk"
grep -qF "$T/ds1/fifo/fifo.svm: is a FIFO, not a regular file" "$LOG" || fail "FIFO descriptor"
grep -qF "$T/ds1/symdesc/symdesc.svm: is a symbolic link" "$LOG" || fail "symlinked descriptor"
# the target of the link was never opened for writing by the sym VM: other still serves it
qemu-io -f raw -c 'read -P 0x11 0 64k' "$(uri good 0)" >/dev/null || fail "good VM not served"
qemu-io -f raw -c 'write -P 0x22 0 64k' "$(uri other 0)" >/dev/null || fail "other VM not served"
[ ! -e "$SVM_STATE/nbd/sym-disk0.sock" ] || fail "the symlinked disk is exported"
echo "harden-confine: ok"
