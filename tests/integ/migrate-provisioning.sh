#!/usr/bin/env bash
# Provisioning changed on the way by a live move (`svmctl migrate --provisioning`), with fio
# writing through the export the whole time (one pass of 4 KiB random verified writes over an
# 16 MiB region at 500 IOPS, see migrate-guest-lib.sh), checked with stat (size, allocated blocks) and
# filefrag -v (unwritten extents):
#   thin  -> thick               every byte allocated, the never-written part lazily (unwritten)
#   thick -> eager-zeroed-thick  every byte allocated and written (no unwritten extent)
#   thick -> thin                only the data allocated: a region of zeros written by the
#                                guest and the never-written part are holes
# After each move: the guest's data in the destination file (qemu-io read -P, fio read-verify,
# every fio write present), and the source file gone.
source "$(dirname "$0")/agent-lib.sh"
source "$(dirname "$0")/migrate-guest-lib.sh"
requires fio qemu-io filefrag stat
fio --enghelp=nbd >/dev/null 2>&1 || { echo "SKIP: fio without the nbd engine" >&2; exit 77; }
MiB=$((1024 * 1024))
SIZE=$((64 * MiB))

allocated() { echo $(($(stat -c %b "$1") * $(stat -c %B "$1"))); }
unwritten() { filefrag -v "$1" | grep -c unwritten || true; }
extents() { filefrag "$1" | sed -n 's/.*: \([0-9]*\) extents\{0,1\} found/\1/p'; }
patterns=("write -P 0x11 1M 2M" "write -P 0x22 20M 1M" "write -P 0x33 50M 3M")
reads=("read -P 0x11 1M 2M" "read -P 0x22 20M 1M" "read -P 0x33 50M 3M" "read -P 0 60M 4M")

# moved_with VM DS PROV: move VM to DS in PROV with the fio writer running across the move;
# leaves the new file in $dst and prints its allocation
moved_with() {
  local vm=$1 ds=$2 prov=$3 src u
  src=$(disk_file "$vm" 0)
  u=$(uri "$vm" 0)
  fio_writer_start "$u" 32M 16M --rate_iops=500
  move "$vm" "$ds" --provisioning "$prov"
  wait_file_grows "$T/fio-w.log" 8192
  fio_writer_stop
  check_moved "$vm" "$ds" "$src"
  [ "$(json_get 'd["provisioning"]' <"$T/move.json")" = "$prov" ] ||
    fail "the move's JSON does not name provisioning $prov"
  dst=$(disk_file "$vm" 0)
  [ "$(stat -c %s "$dst")" -eq "$SIZE" ] || fail "$prov: $dst is $(stat -c %s "$dst") bytes"
  qemu_io_check "$dst" "${reads[@]}"
  fio_verify_range "$dst" 32M 16M
  fio_check_last "$dst"
  [ "$(svmctl vm show "$vm" --json | json_get 'd["disks"][0]["provisioning"]')" = "$prov" ] ||
    fail "vm show $vm does not say $prov after the move"
  echo "$vm -> $ds $prov: $(allocated "$dst") bytes allocated, $(unwritten "$dst") unwritten" \
    "extents, $(extents "$dst") extents"
}

start_svmd

# ---- thin -> thick -> eager-zeroed thick ----
svmctl vm create vm1 --datastore ds1 --disk 64M:thin >/dev/null
U=$(uri vm1 0)
qemu_io_check "$U" "${patterns[@]}" "write -P 0 60M 4M"
fio_fill "$U" 32M 16M
f=$(disk_file vm1 0)
a=$(allocated "$f")
[ "$a" -lt $((30 * MiB)) ] || fail "thin source: $a bytes allocated, want about 22 MiB"
moved_with vm1 ds2 thick
[ "$(allocated "$dst")" -ge "$SIZE" ] || fail "thick: only $(allocated "$dst") bytes allocated"
[ "$(unwritten "$dst")" -ge 1 ] || fail "thick: no unwritten extent (lazily zeroed expected)"
moved_with vm1 ds1 eager-zeroed-thick
[ "$(allocated "$dst")" -ge "$SIZE" ] || fail "eager: only $(allocated "$dst") bytes allocated"
[ "$(unwritten "$dst")" -eq 0 ] || fail "eager: $(unwritten "$dst") unwritten extents"

# ---- thick -> thin ----
svmctl vm create vm2 --datastore ds1 --disk 64M:thick >/dev/null
U=$(uri vm2 0)
f=$(disk_file vm2 0)
qemu_io_check "$U" "${patterns[@]}" "write -P 0 60M 4M"
fio_fill "$U" 32M 16M
[ "$(allocated "$f")" -ge "$SIZE" ] || fail "thick source: only $(allocated "$f") bytes allocated"
moved_with vm2 ds2 thin
a=$(allocated "$dst")
# the data: 6 MiB of patterns and 16 MiB of fio blocks; the 4 MiB of zeros and the rest: holes
[ "$a" -ge $((22 * MiB)) ] && [ "$a" -le $((23 * MiB)) ] ||
  fail "thin: $a bytes allocated, want 22 MiB (6 MiB of patterns, 16 MiB of fio blocks)"
[ "$(unwritten "$dst")" -eq 0 ] || fail "thin: $(unwritten "$dst") unwritten extents"
python3 - "$dst" <<'PY' || fail "thin: the zeros at 60 MiB are allocated in $dst"
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
# SEEK_DATA from 60 MiB must land past the file's end: nothing allocated there
try:
    nxt = os.lseek(fd, 60 << 20, os.SEEK_DATA)
    sys.exit(f"data at {nxt}")
except OSError:
    pass
PY
echo PASS
