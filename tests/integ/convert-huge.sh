#!/usr/bin/env bash
# A 1 TiB sparse source with 1 MiB of data: work follows data, not size. (No time threshold:
# it just has to work, and it can only finish within the test timeout by skipping the holes.)
. "$(dirname "$0")/lib.sh"
CONV=$SVM_BIN/svm-convert
TiB=$((1024 * 1024 * 1024 * 1024))

src=$TMP/huge.raw
truncate -s $TiB "$src" 2>/dev/null || { echo "SKIP: no 1 TiB sparse files here" >&2; exit 77; }
dd if=/dev/urandom of="$src" bs=1M count=1 seek=$((512 * 1024 + 3)) conv=notrunc status=none
"$CONV" --json "$src" "$TMP/copy.raw" >"$TMP/j"
cat "$TMP/j"
[ "$(stat -c %s "$TMP/copy.raw")" -eq $TiB ] || fail "wrong size"
grep -q '"bytes-read": 1048576,' "$TMP/j" || fail "read more than the data"
cmp <(dd if="$src" bs=1M skip=$((512 * 1024 + 3)) count=1 status=none) \
    <(dd if="$TMP/copy.raw" bs=1M skip=$((512 * 1024 + 3)) count=1 status=none) ||
  fail "data differs"
[ "$(allocated "$TMP/copy.raw")" -le $((2 * 1024 * 1024)) ] || fail "the copy is not sparse"
# and every other byte is a hole: the allocated extents of the copy are exactly the data's
[ "$(filefrag "$TMP/copy.raw" | grep -o '[0-9]* extents\?' | cut -d' ' -f1)" -le 2 ] ||
  fail "unexpected extents: $(filefrag -v "$TMP/copy.raw")"
ok "1 TiB sparse, 1 MiB data"
