#!/usr/bin/env bash
# svm-convert through NBD (libnbd): a qcow2 read through qemu-nbd as SRC, a qcow2 written through
# qemu-nbd as DST, and NBD destinations that cannot take the disk.
. "$(dirname "$0")/lib.sh"
require qemu-img qemu-nbd qemu-io
CONV=$SVM_BIN/svm-convert
MiB=$((1024 * 1024))

raw=$TMP/disk.raw
truncate -s 32M "$raw"
for o in 1 9 17 31; do
  dd if=/dev/urandom of="$raw" bs=1M count=1 seek=$o conv=notrunc status=none
done
dd if=/dev/zero of="$raw" bs=1M count=2 seek=20 conv=notrunc status=none
qemu-img convert -f raw -O qcow2 "$raw" "$TMP/src.qcow2"
sum=$(checksum "$TMP/src.qcow2")

# qcow2 -> raw, thin and eager
start_qemu_nbd SRC --read-only --format=qcow2 "$TMP/src.qcow2"
for prov in thin eager-zeroed-thick; do
  "$CONV" -p $prov --json "$SRC" "$TMP/from-qcow2-$prov.raw" >"$TMP/j"
  qemu-img compare -U -q -f raw -F raw "$raw" "$TMP/from-qcow2-$prov.raw" || fail "qcow2->raw $prov differs"
  grep -q '"bytes-read": 4194304' "$TMP/j" || fail "read more than the data: $(cat "$TMP/j")"
done
a=$(allocated "$TMP/from-qcow2-thin.raw")
[ "$a" -le $((4 * MiB + 256 * 1024)) ] || fail "qcow2->thin raw has $a bytes allocated"
[ "$(unwritten_extents "$TMP/from-qcow2-eager-zeroed-thick.raw")" -eq 0 ] || fail "eager has unwritten"
ok "qcow2 through qemu-nbd as SRC (thin: $a bytes allocated)"

# raw -> a new qcow2 through qemu-nbd as DST
qemu-img create -q -f qcow2 "$TMP/dst.qcow2" 32M
start_qemu_nbd DST --format=qcow2 "$TMP/dst.qcow2"
"$CONV" "$raw" "$DST"
qemu-img compare -U -q -f raw -F qcow2 "$raw" "$TMP/dst.qcow2" || fail "raw->qcow2 differs"
ok "qcow2 through qemu-nbd as DST"

# a used qcow2 as DST: stale data where the source has holes or zeros must become zeros
qemu-img create -q -f qcow2 "$TMP/used.qcow2" 32M
qemu-io -f qcow2 -c 'write -P 0x55 0 32M' "$TMP/used.qcow2" >/dev/null
start_qemu_nbd USED --format=qcow2 "$TMP/used.qcow2"
"$CONV" -p thick "$raw" "$USED"
qemu-img compare -U -q -f raw -F qcow2 "$raw" "$TMP/used.qcow2" || fail "raw->used qcow2 differs"
ok "a used qcow2 as DST is fully overwritten"

# NBD -> NBD
qemu-img create -q -f qcow2 "$TMP/copy.qcow2" 32M
start_qemu_nbd COPY --format=qcow2 "$TMP/copy.qcow2"
"$CONV" "$SRC" "$COPY"
qemu-img compare -U -q -f qcow2 -F qcow2 "$TMP/src.qcow2" "$TMP/copy.qcow2" || fail "nbd->nbd differs"
ok "NBD to NBD"

# destinations that cannot take it
qemu-img create -q -f qcow2 "$TMP/small.qcow2" 16M
start_qemu_nbd SMALL --format=qcow2 "$TMP/small.qcow2"
expect_exit 1 "the NBD export is 16777216 bytes, smaller than the source's 33554432 bytes" \
  "$CONV" "$raw" "$SMALL"
qemu-img create -q -f qcow2 "$TMP/ro.qcow2" 32M
start_qemu_nbd RO --read-only --format=qcow2 "$TMP/ro.qcow2"
expect_exit 1 "the NBD export is read-only" "$CONV" "$raw" "$RO"
ok "too small and read-only NBD destinations refused"

[ "$(checksum "$TMP/src.qcow2")" = "$sum" ] || fail "the source changed"
ok "source untouched"

# A 1 TiB qcow2 with 2 MiB of data through qemu-nbd: the map comes from block status in many
# windows (asked for concurrently), and only the data is read.
qemu-img create -q -f qcow2 "$TMP/huge.qcow2" 1T
qemu-io -f qcow2 -c 'write -P 0x42 100G 1M' -c 'write -P 0x43 1023G 1M' "$TMP/huge.qcow2" >/dev/null
start_qemu_nbd HUGE --read-only --format=qcow2 "$TMP/huge.qcow2"
"$CONV" --json "$HUGE" "$TMP/huge.raw" >"$TMP/j"
grep -q '"bytes-read": 2097152,' "$TMP/j" || fail "1 TiB qcow2: read more than the data: $(cat "$TMP/j")"
qemu-img compare -U -q -f qcow2 -F raw "$TMP/huge.qcow2" "$TMP/huge.raw" || fail "1 TiB qcow2 differs"
[ "$(allocated "$TMP/huge.raw")" -le $((3 * MiB)) ] || fail "1 TiB qcow2 -> raw is not thin"
ok "1 TiB qcow2 with 2 MiB of data"
