#!/usr/bin/env bash
# NFC over loopback TCP with TLS 1.3 (PSK; x509 once; plaintext only when both ends say
# --insecure, and refused otherwise): a raw disk with data, allocated zeros and holes sent thin, thick and
# eager-zeroed thick with 1 and 4 streams, checked with qemu-img compare, stat (size, mode,
# blocks) and filefrag -v; the bytes on the wire are the data, not the zeros; a whole VM folder;
# a name that would leave the receiving folder is refused.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nfc-lib.sh"
require openssl qemu-img filefrag python3
MiB=$((1024 * 1024))

src=$TMP/src.raw
truncate -s 64M "$src"
for o in 0 5 13 22 40 63; do
  dd if=/dev/urandom of="$src" bs=1M count=1 seek=$o conv=notrunc status=none
done
dd if=/dev/zero of="$src" bs=1M count=4 seek=30 conv=notrunc status=none   # allocated zeros
DATA=$((6 * MiB))

mkdir "$TMP/dst"
start_nfc_recv "$TMP/dst"

for streams in 1 4; do
  for prov in thin thick eager-zeroed-thick; do
    name=d-$prov-$streams.raw dst=$TMP/dst/d-$prov-$streams.raw
    "$NFC" send "${NFC_TLS[@]}" --json --streams $streams --provisioning $prov "$NFC_ADDR" "$src" "$name" \
      >"$TMP/out.json"
    qemu-img compare -q -f raw -F raw "$src" "$dst" || fail "$name: contents differ"
    [ "$(stat -c %s "$dst")" -eq $((64 * MiB)) ] || fail "$name: wrong size"
    [ "$(stat -c %a "$dst")" = 600 ] || fail "$name: mode $(stat -c %a "$dst"), want 600"
    wire=$(json_get "$TMP/out.json" bytes_wire)
    # the data and frame headers; never the 4 MiB of zeros or the holes
    [ "$wire" -ge $DATA ] && [ "$wire" -lt $((DATA + MiB)) ] ||
      fail "$name: $wire bytes on the wire for $DATA bytes of data"
    alloc=$(allocated "$dst") unwritten=$(unwritten_extents "$dst")
    case $prov in
      thin)
        [ "$alloc" -ge $DATA ] && [ "$alloc" -le $((DATA + MiB)) ] ||
          fail "$name: $alloc bytes allocated, want about $DATA" ;;
      thick)
        [ "$alloc" -ge $((64 * MiB)) ] || fail "$name: only $alloc bytes allocated"
        [ "$unwritten" -ge 1 ] || fail "$name: no unwritten extent (lazy-zeroed expected)" ;;
      eager-zeroed-thick)
        [ "$alloc" -ge $((64 * MiB)) ] || fail "$name: only $alloc bytes allocated"
        [ "$unwritten" -eq 0 ] || fail "$name: $unwritten unwritten extents" ;;
    esac
    compgen -G "$TMP/dst/.*.nfc-*" >/dev/null && fail "$name: progress records left behind"
    ok "$prov, $streams stream(s): identical, $wire bytes on the wire, $alloc allocated"
  done
done

# A VM folder: every regular file, a symbolic link skipped.
vm=$TMP/vm1
mkdir "$vm" "$TMP/dst-vm"
printf 'name = vm1\ndisk0 = disk0.raw\n' >"$vm/vm1.svm"
cp --sparse=always "$src" "$vm/disk0.raw"
truncate -s 1G "$vm/disk1.raw"
ln -s /etc/passwd "$vm/passwd"
start_nfc_recv "$TMP/dst-vm"
"$NFC" send "${NFC_TLS[@]}" --json --streams 2 "$NFC_ADDR" "$vm" >"$TMP/vm.json"
[ "$(json_get "$TMP/vm.json" files)" -eq 3 ] || fail "folder: $(cat "$TMP/vm.json")"
cmp "$vm/vm1.svm" "$TMP/dst-vm/vm1.svm" || fail "folder: descriptor differs"
qemu-img compare -q -f raw -F raw "$vm/disk0.raw" "$TMP/dst-vm/disk0.raw" || fail "disk0"
qemu-img compare -q -f raw -F raw "$vm/disk1.raw" "$TMP/dst-vm/disk1.raw" || fail "disk1"
[ "$(allocated "$TMP/dst-vm/disk1.raw")" -eq 0 ] || fail "folder: the empty disk got blocks"
[ ! -e "$TMP/dst-vm/passwd" ] || fail "folder: a symbolic link was followed and sent"
ok "VM folder: 3 files, the link skipped"

# Get: the other direction, from the receiver's folder.
mkdir "$TMP/got"
"$NFC" get "${NFC_TLS[@]}" --json --provisioning thin "$NFC_ADDR" disk0.raw "$TMP/got" \
  >"$TMP/get.json"
qemu-img compare -q -f raw -F raw "$vm/disk0.raw" "$TMP/got/disk0.raw" || fail "get: differs"
[ "$(json_get "$TMP/get.json" bytes_data)" -eq $DATA ] || fail "get: $(cat "$TMP/get.json")"
expect_exit 1 "no such file|No such file" "$NFC" get "${NFC_TLS[@]}" "$NFC_ADDR" missing.raw "$TMP/got"
expect_exit 1 "not a plain file name" "$NFC" get "${NFC_TLS[@]}" "$NFC_ADDR" ../x "$TMP/got"
ok "get: disk0.raw back from the receiver's folder; a missing file and '..' refused"

# x509 credentials in QEMU's layout; a peer without them, or with another CA, is refused and
# no file is created; plaintext needs --insecure on both ends.
"$NFC" creds "$TMP/tls-a" localhost
"$NFC" creds "$TMP/tls-b" localhost
mkdir "$TMP/dst-x509"
start_nfc_recv "$TMP/dst-x509" --tls-dir "$TMP/tls-a"
"$NFC" send --tls-dir "$TMP/tls-a" --json --streams 2 "$NFC_ADDR" "$src" x509.raw >/dev/null
qemu-img compare -q -f raw -F raw "$src" "$TMP/dst-x509/x509.raw" || fail "x509: differs"
expect_exit 1 "another CA" "$NFC" send --tls-dir "$TMP/tls-b" "$NFC_ADDR" "$src" otherca.raw
expect_exit 1 "connection closed" "$NFC" send --insecure "$NFC_ADDR" "$src" plain.raw
expect_exit 1 "svm-nfc send: " "$NFC" send "${NFC_TLS[@]}" "$NFC_ADDR" "$src" psk.raw
[ "$(find "$TMP/dst-x509" -mindepth 1 ! -name x509.raw | wc -l)" -eq 0 ] ||
  fail "a refused peer created a file"
for why in "unknown ca" "plaintext peer" "no certificate"; do
  grep -q "refused: .*$why" "$TMP/nfc-recv.log" || fail "the receiver did not log: $why"
done
expect_exit 2 "TLS credentials needed" "$NFC" send "$NFC_ADDR" "$src" x.raw
mkdir "$TMP/dst-plain"
start_nfc_recv "$TMP/dst-plain" --insecure
"$NFC" send --insecure --json "$NFC_ADDR" "$src" plain.raw >/dev/null
cmp "$src" "$TMP/dst-plain/plain.raw" || fail "plaintext: differs"
ok "x509: copied; another CA, plaintext and a PSK peer refused, nothing created"

# Names that would leave the folder: refused by the sender, and by the receiver.
expect_exit 1 "not a plain file name" "$NFC" send "${NFC_TLS[@]}" "$NFC_ADDR" "$src" ../escaped
expect_exit 1 "not a plain file name" "$NFC" send "${NFC_TLS[@]}" "$NFC_ADDR" "$src" a/b
[ ! -e "$TMP/escaped" ] || fail "a file escaped the folder"
ok "names with '..' or '/' refused"
