#!/usr/bin/env bash
# svm-convert: thin, thick and eager-zeroed-thick results of a real raw disk, checked with
# qemu-img compare, stat block counts and filefrag -v; --punch-zeroes in place; --json; CLI.
. "$(dirname "$0")/lib.sh"
require qemu-img filefrag python3
CONV=$SVM_BIN/svm-convert
MiB=$((1024 * 1024))

# 64 MiB disk: 6 MiB of random data in scattered extents, 4 MiB of allocated zeros, holes.
# The counters are checked against these numbers: DATA_MIB read and written, ZERO_MIB read
# and skipped, the rest never read.
src=$TMP/src.raw
data_offsets="0 7 13 22 40 63"
DATA_MIB=$(wc -w <<<"$data_offsets")
ZERO_MIB=4
truncate -s 64M "$src"
for o in $data_offsets; do
  dd if=/dev/urandom of="$src" bs=1M count=1 seek=$o conv=notrunc status=none
done
dd if=/dev/zero of="$src" bs=1M count=$ZERO_MIB seek=30 conv=notrunc status=none
sync "$src"
sum=$(checksum "$src")
[ "$(allocated "$src")" -ge $(((DATA_MIB + ZERO_MIB) * MiB)) ] || fail "the source is not as built"

now() { date +%s.%N; }

for prov in thin thick eager-zeroed-thick; do
  dst=$TMP/dst-$prov.raw
  t0=$(now)
  "$CONV" --provisioning "$prov" --json "$src" "$dst" >"$TMP/$prov.json"
  t1=$(now)
  qemu-img compare -q -f raw -F raw "$src" "$dst" || fail "$prov: contents differ"
  [ "$(stat -c %s "$dst")" -eq $((64 * MiB)) ] || fail "$prov: wrong size"
  alloc=$(allocated "$dst")
  unwritten=$(unwritten_extents "$dst")
  case $prov in
    thin)
      # the 6 MiB of data only: zeros (allocated or not) stay holes
      [ "$alloc" -ge $((6 * MiB)) ] && [ "$alloc" -le $((6 * MiB + 256 * 1024)) ] ||
        fail "thin: $alloc bytes allocated, want about 6 MiB"
      [ "$unwritten" -eq 0 ] || fail "thin: $unwritten unwritten extents" ;;
    thick)
      [ "$alloc" -ge $((64 * MiB)) ] || fail "thick: only $alloc bytes allocated"
      [ "$unwritten" -ge 1 ] || fail "thick: no unwritten extent (should be lazy-zeroed)" ;;
    eager-zeroed-thick)
      [ "$alloc" -ge $((64 * MiB)) ] || fail "eager: only $alloc bytes allocated"
      [ "$unwritten" -eq 0 ] || fail "eager: $unwritten unwritten extents" ;;
  esac
  python3 - "$TMP/$prov.json" "$prov" "$src" "$dst" "$DATA_MIB" "$ZERO_MIB" "$t0" "$t1" <<'PY'
import json, sys
path, prov, src, dst = sys.argv[1:5]
data, zero = (int(x) << 20 for x in sys.argv[5:7])
wall = float(sys.argv[8]) - float(sys.argv[7])
d = json.load(open(path))
MiB = 1 << 20
assert set(d) == {"mode", "source", "destination", "provisioning", "size", "bytes-read",
                  "bytes-written", "bytes-skipped-zero", "bytes-punched", "seconds"}, d
assert (d["mode"], d["source"], d["destination"]) == ("convert", src, dst), d
assert d["provisioning"] == prov, d
assert d["size"] == 64 * MiB, d
assert d["bytes-read"] == data + zero, d          # data extents only, not the holes
assert d["bytes-skipped-zero"] == zero, d         # read, found zero, not written
if prov == "eager-zeroed-thick":
    assert d["bytes-written"] == 64 * MiB, d      # data, then zeros over all the rest
else:
    assert d["bytes-written"] == data, d
assert d["bytes-punched"] == 0, d
assert 0 < d["seconds"] <= wall, (d, wall)        # the copy's own time, within the command's
PY
  ok "$prov: same contents, $alloc bytes allocated, $unwritten unwritten extents"
done
[ "$(checksum "$src")" = "$sum" ] || fail "the source changed"

# Converting thick back to thin gives the thin result again.
"$CONV" "$TMP/dst-eager-zeroed-thick.raw" "$TMP/back-thin.raw"
qemu-img compare -q -f raw -F raw "$src" "$TMP/back-thin.raw" || fail "eager->thin differs"
[ "$(allocated "$TMP/back-thin.raw")" -le $((6 * MiB + 256 * 1024)) ] || fail "eager->thin not thin"
ok "eager -> thin"

# --force replaces an existing destination
echo old >"$TMP/existing.raw"
"$CONV" --force "$src" "$TMP/existing.raw"
qemu-img compare -q -f raw -F raw "$src" "$TMP/existing.raw" || fail "--force result differs"
ok "--force replaces"

# --punch-zeroes: an eager disk becomes thin in place, same contents
cp "$TMP/dst-eager-zeroed-thick.raw" "$TMP/punch.raw"
"$CONV" --punch-zeroes --json "$TMP/punch.raw" >"$TMP/punch.json"
qemu-img compare -q -f raw -F raw "$src" "$TMP/punch.raw" || fail "punch-zeroes changed data"
a=$(allocated "$TMP/punch.raw")
[ "$a" -le $((6 * MiB + 256 * 1024)) ] || fail "punch-zeroes left $a bytes allocated"
python3 - "$TMP/punch.json" "$DATA_MIB" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
data = int(sys.argv[2]) << 20
assert d["mode"] == "punch-zeroes", d
assert d["bytes-read"] == 64 << 20, d             # every byte of the eager disk scanned
assert d["bytes-punched"] == (64 << 20) - data, d # all but the data became holes
assert d["seconds"] > 0, d
PY
ok "--punch-zeroes: $a bytes allocated"

# The CLI: help, version, usage errors
"$CONV" --help | grep -q 'Usage: svm-convert' || fail "--help"
[ "$("$CONV" --version)" = "svm-convert $(sed -n 's/^project(svmotion VERSION \([0-9.]*\).*/\1/p' "$SVM_SRC/CMakeLists.txt")" ] ||
  fail "--version: $("$CONV" --version)"
expect_exit 2 'need SRC and DST' "$CONV" "$src"
expect_exit 2 'unknown \(use thin, thick or eager-zeroed-thick\)' "$CONV" -p fat "$src" "$TMP/x"
expect_exit 2 'Try' "$CONV" --bogus "$src" "$TMP/x"
expect_exit 2 'one DISK' "$CONV" --punch-zeroes
expect_exit 2 'request-size' "$CONV" --request-size 1000 "$src" "$TMP/x"
[ ! -e "$TMP/x" ] || fail "a usage error created the destination"
ok "cli"

# Sizes that are multiples of 512 but not of 4096, data up to the last byte: the unaligned tail
# goes through the buffered path, O_DIRECT does the rest.
for size in 512 1536 $((4096 * 5 + 512)) $((10 * MiB + 3584)); do
  f=$TMP/odd-$size.raw
  truncate -s "$size" "$f"
  head -c $((size / 2)) /dev/urandom | dd of="$f" conv=notrunc status=none
  printf 'z' | dd of="$f" bs=1 seek=$((size - 1)) conv=notrunc status=none
  for prov in thin thick eager-zeroed-thick; do
    "$CONV" -p $prov "$f" "$f.$prov"
    cmp "$f" "$f.$prov" || fail "size $size, $prov: differs"
    rm "$f.$prov"
  done
done
ok "sizes with an unaligned tail"
