#!/usr/bin/env bash
# svm-convert on bad input: exit 1 with a message that names the thing and the fix, the source
# untouched, no partial destination left behind.
. "$(dirname "$0")/lib.sh"
CONV=$SVM_BIN/svm-convert

src=$TMP/src.raw
truncate -s 16M "$src"
dd if=/dev/urandom of="$src" bs=1M count=2 seek=3 conv=notrunc status=none
sum=$(checksum "$src")
no_partial() {   # nothing but what we made ourselves may be in the directory
  local left
  left=$(find "$1" -name '*.svm-part-*' | head -1)
  [ -z "$left" ] || fail "partial destination left: $left"
}

expect_exit 1 "$TMP/missing.raw: cannot read the source: No such file or directory \(check the path\)" \
  "$CONV" "$TMP/missing.raw" "$TMP/out.raw"
[ ! -e "$TMP/out.raw" ] || fail "destination created for a missing source"
ok "missing source"

mkdir "$TMP/adir"
expect_exit 1 "adir: the source is a directory" "$CONV" "$TMP/adir" "$TMP/out.raw"
ok "source is a directory"

expect_exit 1 "adir: the destination is a directory" "$CONV" "$src" "$TMP/adir"
ok "destination is a directory"

cp "$src" "$TMP/exists.raw"
echo keep >"$TMP/exists.raw"
expect_exit 1 "exists.raw: the destination already exists \(use --force to replace it\)" \
  "$CONV" "$src" "$TMP/exists.raw"
[ "$(cat "$TMP/exists.raw")" = keep ] || fail "existing destination was touched"
ok "destination exists without --force"

expect_exit 1 "same file" "$CONV" --force "$src" "$src"
ok "source and destination the same file"

truncate -s 1000 "$TMP/odd.raw"
expect_exit 1 "odd.raw: size 1000 bytes is not a multiple of 512 \(pad it: truncate -s 1024" \
  "$CONV" "$TMP/odd.raw" "$TMP/out.raw"
ok "odd size"

: >"$TMP/empty.raw"
expect_exit 1 "empty.raw: the disk is empty \(0 bytes\)" "$CONV" "$TMP/empty.raw" "$TMP/out.raw"
expect_exit 1 "empty.raw: the disk is empty" "$CONV" --punch-zeroes "$TMP/empty.raw"
ok "0-byte disk"

expect_exit 1 "no/such/dir/out.raw: cannot use the destination directory .*: No such file or directory \(create it first\)" \
  "$CONV" "$src" "$TMP/no/such/dir/out.raw"
ok "destination directory missing"

expect_exit 1 "cannot connect.*is the NBD server running" \
  "$CONV" "nbd+unix:///?socket=$TMP/nobody-listens.sock" "$TMP/out.raw"
expect_exit 1 "cannot connect.*is the NBD server running" \
  "$CONV" "$src" "nbd+unix:///?socket=$TMP/nobody-listens.sock"
ok "NBD server unreachable"

expect_exit 1 "works on raw disk files" "$CONV" --punch-zeroes "nbd://localhost/x"
ok "punch-zeroes on an NBD URI"

# An unreadable source, as an unprivileged user (root reads everything).
if command -v setpriv >/dev/null && [ "$(id -u)" -eq 0 ] &&
   setpriv --reuid=65534 --regid=65534 --clear-groups test -x "$CONV" 2>/dev/null; then
  chmod 755 "$TMP"
  mkdir "$TMP/nobody" && chown 65534:65534 "$TMP/nobody"
  cp "$src" "$TMP/secret.raw" && chmod 600 "$TMP/secret.raw"
  expect_exit 1 "secret.raw: cannot open the source: Permission denied \(check its permissions\)" \
    setpriv --reuid=65534 --regid=65534 --clear-groups "$CONV" "$TMP/secret.raw" "$TMP/nobody/out.raw"
  [ -z "$(ls -A "$TMP/nobody")" ] || fail "unreadable source left a destination"
  ok "unreadable source"
else
  echo "note: unreadable-source case not run (needs root, setpriv and a world-readable build)"
fi

# Destination file system too small: a 8 MiB tmpfs.
if [ "$(id -u)" -eq 0 ] && mkdir "$TMP/small" && mount -t tmpfs -o size=8M tmpfs "$TMP/small" 2>/dev/null; then
  on_exit "umount '$TMP/small'"
  expect_exit 1 "out.raw: not enough space: thick provisioning needs 16.0 MiB \(16777216 bytes\), $TMP/small has [0-9.]+ MiB \([0-9]+ bytes\) free \(free some space or choose thin provisioning\)" \
    "$CONV" -p thick "$src" "$TMP/small/out.raw"
  no_partial "$TMP/small"
  [ ! -e "$TMP/small/out.raw" ] || fail "partial destination on the small file system"
  # thin fits: 2 MiB of data
  "$CONV" "$src" "$TMP/small/out.raw"
  cmp "$src" "$TMP/small/out.raw" || fail "thin copy onto the small file system differs"
  rm "$TMP/small/out.raw"
  truncate -s 64M "$TMP/big.raw"
  dd if=/dev/urandom of="$TMP/big.raw" bs=1M count=12 seek=1 conv=notrunc status=none
  expect_exit 1 "not enough space: thin provisioning needs 12.0 MiB" \
    "$CONV" "$TMP/big.raw" "$TMP/small/out.raw"
  no_partial "$TMP/small"
  ok "destination file system too small"
else
  echo "note: small-file-system case not run (needs root to mount a tmpfs)"
fi

no_partial "$TMP"
[ "$(checksum "$src")" = "$sum" ] || fail "the source changed"
ok "source untouched, nothing partial left"
