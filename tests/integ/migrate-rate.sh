#!/usr/bin/env bash
# A move under a write rate higher than the copier's converges in one pass. The bulk copy is
# capped with `svmctl migrate --rate 8M` on a 64 MiB disk full of data (8 s of copying), while
# fio's nbd engine rewrites the whole disk in 64 KiB random writes as fast as it can (depth 16,
# every 256 writes read back and verified). Checked: the guest wrote faster than the copier
# copied during the move (measured from fio's write log: the premise), the move finished with
# bytes_copied at most the disk's size (one pass, never a re-copy of dirtied blocks), writes
# were mirrored, the guest went on after the switchover, and afterwards every block of the disk
# is a good fio block for its offset through the export and in the destination file, which
# equals the export byte for byte.
source "$(dirname "$0")/agent-lib.sh"
source "$(dirname "$0")/migrate-guest-lib.sh"
requires fio nbdcopy
fio --enghelp=nbd >/dev/null 2>&1 || { echo "SKIP: fio without the nbd engine" >&2; exit 77; }
MiB=$((1024 * 1024))
RATE_MIB=8

start_svmd
svmctl vm create vm1 --datastore ds1 --disk 64M >/dev/null
src=$(disk_file vm1 0)
U=$(uri vm1 0)
fio_fill "$U" 0 64M 64k

fio_writer_start "$U" 0 64M --bs=64k --loops=1000000
writes() { grep -c ' write ' "$T/fio-w.log" || true; }
w0=$(writes)
move vm1 ds2 --rate ${RATE_MIB}M
w1=$(writes)
wait_file_grows "$T/fio-w.log" 65536       # the guest goes on after the switchover
fio_writer_stop

secs=$(awk -v a="$MOVE_T0" -v b="$MOVE_T1" 'BEGIN { printf "%.3f", b - a }')
guest_mib_s=$(awk -v n=$((w1 - w0)) -v s="$secs" 'BEGIN { printf "%.1f", n * 64 / 1024 / s }')
echo "migrate-rate: the guest wrote $((w1 - w0)) x 64 KiB in the move's $secs s: $guest_mib_s MiB/s" \
  "against the copier's $RATE_MIB MiB/s"
awk -v g="$guest_mib_s" -v r="$RATE_MIB" 'BEGIN { exit !(g > r) }' ||
  fail "the guest wrote at $guest_mib_s MiB/s, not faster than the copier's $RATE_MIB MiB/s: the test's premise does not hold"
copied=$(json_get 'd["bytes_copied"]' <"$T/move.json")
mirrored=$(json_get 'd["bytes_mirrored"]' <"$T/move.json")
[ "$copied" -le $((64 * MiB)) ] || fail "bytes_copied $copied > the disk's 64 MiB: more than one pass"
[ "$copied" -ge $((64 * MiB)) ] || fail "bytes_copied $copied < the disk's 64 MiB of data"
[ "$mirrored" -gt 0 ] || fail "no guest write was mirrored during the move"
awk -v s="$secs" -v r="$RATE_MIB" 'BEGIN { exit !(s >= 64 / r * 0.9) }' ||
  fail "the move took $secs s: the copier was not capped at $RATE_MIB MiB/s"

check_moved vm1 ds2 "$src"
dst=$(disk_file vm1 0)
fio_verify_range "$U" 0 64M 64k
fio_verify_range "$dst" 0 64M 64k
nbdcopy "$U" - | cmp - "$dst" || fail "the export and the destination file $dst differ"
echo "migrate-rate: one pass: $copied bytes copied, $mirrored bytes mirrored, $FIO_WRITES guest" \
  "writes, all verified"
echo PASS
