#!/usr/bin/env bash
# NFC resume over loopback TCP with TLS (PSK): a copy cut at 60% of its bytes on the wire (every connection
# dropped), then sent again, sends about the remaining 40%, not 100%; with 1 and 4 streams.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nfc-lib.sh"
require openssl qemu-img python3
MiB=$((1024 * 1024))

# 256 MiB, half of it data in 8 MiB extents
src=$TMP/src.raw
truncate -s 256M "$src"
for ((o = 0; o < 256; o += 16)); do
  dd if=/dev/urandom of="$src" bs=1M count=8 seek=$o conv=notrunc status=none
done
mkdir "$TMP/dst"
start_nfc_recv "$TMP/dst" "${NFC_TLS[@]}" --sync-mb 8

for streams in 1 4; do
  name=r$streams.raw
  "$NFC" send "${NFC_TLS[@]}" --json --streams $streams "$NFC_ADDR" "$src" full$streams.raw >"$TMP/full.json"
  full=$(json_get "$TMP/full.json" bytes_wire)
  cut=$((full * 6 / 10))
  rc=0
  "$NFC" send "${NFC_TLS[@]}" --json --streams $streams --cut-after $cut "$NFC_ADDR" "$src" $name \
    >"$TMP/cut.json" 2>"$TMP/cut.err" || rc=$?
  [ $rc -eq 1 ] || fail "$name: the cut copy exited $rc"
  grep -q "connection closed" "$TMP/cut.err" || fail "$name: $(cat "$TMP/cut.err")"
  compgen -G "$TMP/dst/.$name.nfc-*" >/dev/null || fail "$name: no progress record after the cut"
  # streams racing to the cut may each pass it by a little: what the sender counted went out
  cut=$(json_get "$TMP/cut.json" bytes_wire)
  "$NFC" send "${NFC_TLS[@]}" --json --streams $streams "$NFC_ADDR" "$src" $name >"$TMP/again.json"
  again=$(json_get "$TMP/again.json" bytes_wire)
  qemu-img compare -q -f raw -F raw "$src" "$TMP/dst/$name" || fail "$name: contents differ"
  # About the remaining 40%: at most one sync interval (8 MiB) per stream more.
  rest=$((full - cut))
  [ "$again" -ge $((rest * 9 / 10)) ] && [ "$again" -le $((rest + streams * 8 * MiB)) ] ||
    fail "$name: $again bytes sent again after a cut at $cut of $full (rest $rest)"
  compgen -G "$TMP/dst/.$name.nfc-*" >/dev/null && fail "$name: progress records left behind"
  ok "$streams stream(s): full copy $full bytes on the wire; cut at $cut; resumed with" \
     "$again ($((again * 100 / full))% of the full copy)"
done
