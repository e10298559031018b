#!/usr/bin/env bash
# The whole stack is swapped, policy layers included: svm-nbd-serve --ctk --swap-to serves
# raw -> track, and on SIGUSR1 switches to a new raw -> track over a copy with the same tracker.
# Writes before and after the swap must both be reported by the tracker (svm-cbt:*), and the
# writes after it must land in the new file only.
source "$(dirname "$0")/nbd-lib.sh"
requires qemu-io nbdinfo

disk=$NBD_TMP/disk.raw
moved=$NBD_TMP/moved.raw
truncate -s 16M "$disk"
start_serve "$disk" --ctk "$NBD_TMP/disk.ctk" --swap-to "$moved"
qemu-io -f raw -c 'write -P 1 0 64k' "$NBD_URI" >/dev/null || fail "write before the swap"
kill -USR1 "$SERVE_PID"
for i in $(seq 1 200); do
  grep -q "swapped to $moved" "$NBD_TMP/serve.log" && break
  kill -0 "$SERVE_PID" 2>/dev/null || fail "svm-nbd-serve died at the swap"
  sleep 0.05
done
grep -q "swapped to $moved" "$NBD_TMP/serve.log" || fail "no swap in the log"
qemu-io -f raw -c 'write -P 2 4M 4k' -c 'write -P 3 0 4k' "$NBD_URI" >/dev/null \
  || fail "write after the swap"
map=$(nbdinfo --map='svm-cbt:*' "$NBD_URI") || fail "nbdinfo --map=svm-cbt:*"
dirty=$(awk '$3 == 1 { printf "%s+%s ", $1, $2 }' <<<"$map")
[ "$dirty" = "0+65536 4194304+65536 " ] || fail "changed blocks across the swap: $dirty"
stop_serve
[ "$(od -An -tx1 -N1 "$moved" | tr -d ' ')" = 03 ] || fail "the new file lacks the write after the swap"
[ "$(od -An -tx1 -j 4194304 -N1 "$moved" | tr -d ' ')" = 02 ] || fail "the new file lacks 4M"
[ "$(od -An -tx1 -N1 "$disk" | tr -d ' ')" = 01 ] || fail "the old file got a write after the swap"
[ "$(od -An -tx1 -j 4194304 -N1 "$disk" | tr -d ' ')" = 00 ] || fail "the old file got 4M"
echo "nbd-ctk-swap: ok"
