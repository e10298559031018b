#!/usr/bin/env bash
# Explicit modes whatever the umask: state dir 0700, control socket 0600, NBD sockets 0600,
# VM folders 0700, disks, descriptors and .ctk files 0600; with --group G the control and NBD
# sockets are 0660 and the directories above them 0710, group G. svm-convert keeps the
# source's mode.
source "$(dirname "$0")/agent-lib.sh"

umask 0
mode() { stat -c %a "$1"; }
want() { [ "$(mode "$1")" = "$2" ] || fail "$1: mode $(mode "$1"), want $2"; }

start_svmd
svmctl vm create vm1 --datastore ds1 --disk 1M --disk 1M:thick >/dev/null
want "$SVM_STATE" 700
want "$SVM_STATE/control.sock" 600
want "$SVM_STATE/nbd" 700
want "$SVM_STATE/nbd/vm1-disk0.sock" 600
want "$SVM_STATE/nbd/vm1-disk1.sock" 600
want "$SVM_STATE/svmd.lock" 600
want "$T/ds1/vm1" 700
want "$T/ds1/vm1/vm1.svm" 600
for i in 0 1; do
  want "$T/ds1/vm1/disk$i.raw" 600
  want "$T/ds1/vm1/disk$i.ctk" 600
done
stop_svmd

# --group: the group may talk to svmd; the state dir is made by svmd with the group's x bit
G=$(id -gn)
rm -rf "$SVM_STATE"
start_svmd --group "$G"
want "$SVM_STATE" 710
want "$SVM_STATE/control.sock" 660
want "$SVM_STATE/nbd" 710
want "$SVM_STATE/nbd/vm1-disk0.sock" 660
[ "$(stat -c %G "$SVM_STATE/control.sock")" = "$G" ] || fail "control socket group"
svmctl vm list >/dev/null || fail "vm list with --group"
stop_svmd

# svm-convert keeps the source's mode (not the umask's 0666)
head -c 1M /dev/urandom >"$T/src.raw"
chmod 640 "$T/src.raw"
"$SVM_BIN/svm-convert" "$T/src.raw" "$T/dst.raw" >/dev/null
want "$T/dst.raw" 640
"$SVM_BIN/svm-convert" --provisioning thick "$T/src.raw" "$T/dst2.raw" >/dev/null
want "$T/dst2.raw" 640
echo "harden-modes: ok"
