#!/usr/bin/env bash
# Real NBD clients against svm-nbd-serve: nbdinfo (--list, --map, a named context,
# --can multi-conn), qemu-img info/convert, qemu-io write/read-back patterns, nbdcopy both
# ways, and a TCP export.
source "$(dirname "$0")/nbd-lib.sh"
requires nbdinfo qemu-img qemu-io nbdcopy

# the program's interface: --help, --version, exit codes 1 (failure) and 2 (usage)
"$SVM_BIN/svm-nbd-serve" --help | grep -q '^Usage: svm-nbd-serve' || fail "--help"
[ "$("$SVM_BIN/svm-nbd-serve" --version)" = "svm-nbd-serve $("$SVM_BIN/svm-nbd-serve" --version | cut -d' ' -f2)" ] \
  || fail "--version"
rc=0; "$SVM_BIN/svm-nbd-serve" 2>/dev/null || rc=$?; [ "$rc" -eq 2 ] || fail "no FILE: exit $rc"
rc=0; "$SVM_BIN/svm-nbd-serve" --threads 0 x 2>/dev/null || rc=$?; [ "$rc" -eq 2 ] || fail "--threads 0: exit $rc"
rc=0; "$SVM_BIN/svm-nbd-serve" "$NBD_TMP/none.raw" 2>"$NBD_TMP/err" || rc=$?
[ "$rc" -eq 1 ] && grep -q 'none.raw: cannot open disk image' "$NBD_TMP/err" || fail "missing file: exit $rc"

disk=$NBD_TMP/disk.raw
truncate -s 64M "$disk"
start_serve "$disk" --dirty-layer
# a second server on the same socket is refused while the first one lives (another disk: the
# same disk is refused earlier, by its write lock)
truncate -s 1M "$NBD_TMP/other.raw"
rc=0; "$SVM_BIN/svm-nbd-serve" --socket "$NBD_SOCK" "$NBD_TMP/other.raw" >/dev/null 2>"$NBD_TMP/err" || rc=$?
[ "$rc" -eq 1 ] && grep -q 'another server is listening' "$NBD_TMP/err" || fail "socket in use: exit $rc"
rc=0; "$SVM_BIN/svm-nbd-serve" --socket "$NBD_SOCK.2" "$disk" >/dev/null 2>"$NBD_TMP/err" || rc=$?
[ "$rc" -eq 1 ] && grep -q 'holds a write lock on it' "$NBD_TMP/err" || fail "disk in use: exit $rc"

# nbdinfo
out=$(nbdinfo "$NBD_URI") || fail "nbdinfo"
grep -q 'export-size: 67108864' <<<"$out" || fail "nbdinfo: size: $out"
grep -q 'can_multi_conn: true' <<<"$out" || fail "nbdinfo: multi-conn: $out"
nbdinfo --can multi-conn "$NBD_URI" || fail "nbdinfo --can multi-conn"
nbdinfo --can fua "$NBD_URI" || fail "nbdinfo --can fua"
nbdinfo --can zero "$NBD_URI" || fail "nbdinfo --can zero"
nbdinfo --list "$NBD_URI" | grep -q 'export="disk"' || fail "nbdinfo --list"
nbdinfo --json "$NBD_URI" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["exports"][0]["export-size"] == 64 << 20' \
  || fail "nbdinfo --json"
# a wrong export name is refused
if nbdinfo "nbd+unix:///nosuch?socket=$NBD_SOCK" >/dev/null 2>&1; then
  fail "nbdinfo accepted an unknown export name"
fi

# qemu-io: patterns written and read back, at odd offsets too
qemu-io -f raw -c 'write -P 0xab 1M 64k' -c 'write -P 0xcd 3M 4k' -c 'write -P 0x11 5000 3000' \
  "$NBD_URI" >/dev/null || fail "qemu-io write"
qemu-io -f raw -c 'read -P 0xab 1M 64k' -c 'read -P 0xcd 3M 4k' -c 'read -P 0x11 5000 3000' \
  -c 'read -P 0 0 5000' -c 'read -P 0 8000 1040576' "$NBD_URI" >"$NBD_TMP/qio" \
  || fail "qemu-io read back: $(cat "$NBD_TMP/qio")"
grep -q 'Pattern verification failed' "$NBD_TMP/qio" && fail "qemu-io pattern mismatch"
qemu-io -f raw -c 'write -z 1M 4k' -c 'read -P 0 1M 4k' -c 'read -P 0xab 1028k 60k' \
  -c 'discard 3M 4k' -c 'read -P 0 3M 4k' -c 'flush' "$NBD_URI" >"$NBD_TMP/qio" \
  || fail "qemu-io zero/discard"
grep -q 'Pattern verification failed' "$NBD_TMP/qio" && fail "qemu-io zero/discard mismatch"

# base:allocation and the dirty layer's named context (--dirty-layer)
map=$(nbdinfo --map "$NBD_URI") || fail "nbdinfo --map"
# write -z keeps 1M allocated (NO_HOLE); the discard at 3M punched a hole
grep -Eq '^ +1048576 +65536 +0 +data' <<<"$map" || fail "base:allocation map: $map"
grep -Eq '^ +4096 +4096 +0 +data' <<<"$map" || fail "base:allocation map: $map"
grep -Eq '^ +1114112 +65994752 +3 +hole,zero' <<<"$map" || fail "base:allocation map: $map"
dirty=$(nbdinfo --map=svm-test:dirty "$NBD_URI") || fail "nbdinfo --map=svm-test:dirty"
# writes at 1M (64k), 3M (4k), 5000 (3000 bytes): 64 KiB grains 0, 16, 48 dirty
grep -Eq '^ +0 +65536 +1' <<<"$dirty" || fail "dirty map grain 0: $dirty"
grep -Eq '^ +1048576 +65536 +1' <<<"$dirty" || fail "dirty map grain 16: $dirty"
grep -Eq '^ +3145728 +65536 +1' <<<"$dirty" || fail "dirty map grain 48: $dirty"
grep -Eq '^ +3211264 +63897600 +0' <<<"$dirty" || fail "dirty map tail: $dirty"
nbdinfo --map=svm-test:nosuch "$NBD_URI" >/dev/null 2>&1 && fail "unknown context served"

# qemu-img info and convert from the export
qemu-img info "$NBD_URI" | grep -q 'virtual size: 64 MiB' || fail "qemu-img info"
qemu-img convert -O raw "$NBD_URI" "$NBD_TMP/conv.raw" || fail "qemu-img convert"
cmp "$disk" "$NBD_TMP/conv.raw" || fail "qemu-img convert: data differs"
qemu-img compare -f raw -F raw "$NBD_TMP/conv.raw" "$NBD_URI" >/dev/null || fail "qemu-img compare"

# nbdcopy from and to the export (several connections: multi-conn)
nbdcopy "$NBD_URI" "$NBD_TMP/copy.raw" || fail "nbdcopy from the export"
cmp "$disk" "$NBD_TMP/copy.raw" || fail "nbdcopy: data differs"
make_random_file "$NBD_TMP/src.raw" 64 7
nbdcopy --connections=4 --requests=16 "$NBD_TMP/src.raw" "$NBD_URI" || fail "nbdcopy to the export"
nbdcopy "$NBD_URI" "$NBD_TMP/back.raw" || fail "nbdcopy back"
cmp "$NBD_TMP/src.raw" "$NBD_TMP/back.raw" || fail "nbdcopy round trip differs"
cmp "$NBD_TMP/src.raw" "$disk" || fail "the file does not hold what was written"
stop_serve

# real CBT (--ctk): writes and discards show up in svm-cbt:* as 64 KiB blocks, and survive
# a restart of the server
truncate -s 64M "$NBD_TMP/cbt.raw"
start_serve "$NBD_TMP/cbt.raw" --ctk "$NBD_TMP/cbt.ctk"
out=$(qemu-io -f raw -c "write 2M 4k" -c "discard 10M 64k" "$NBD_URI" 2>&1) || fail "qemu-io (cbt): $out"
stop_serve
start_serve "$NBD_TMP/cbt.raw" --ctk "$NBD_TMP/cbt.ctk"
cbtmap=$(nbdinfo --map='svm-cbt:*' "$NBD_URI") || fail "nbdinfo --map=svm-cbt:*"
grep -Eq '^ +2097152 +65536 +1$' <<<"$cbtmap" || fail "cbt map (write): $cbtmap"
grep -Eq '^ +10485760 +65536 +1$' <<<"$cbtmap" || fail "cbt map (discard): $cbtmap"
[ "$(grep -Ec ' 1$' <<<"$cbtmap")" -eq 2 ] || fail "cbt map: $cbtmap"
nbdinfo --map='svm-cbt:not-a-change-id' "$NBD_URI" >/dev/null 2>&1 && fail "bad change ID served"
stop_serve

# TCP on an ephemeral port
"$SVM_BIN/svm-nbd-serve" --tcp 127.0.0.1:0 --name tcpdisk --readonly "$disk" \
  >"$NBD_TMP/tcp.uri" 2>"$NBD_TMP/serve.log" &
SERVE_PID=$!
NBD_PIDS+=("$SERVE_PID")
for _ in $(seq 1 100); do [ -s "$NBD_TMP/tcp.uri" ] && break; sleep 0.05; done
uri=$(cat "$NBD_TMP/tcp.uri")
[[ $uri == nbd://127.0.0.1:*/tcpdisk ]] || fail "tcp uri: $uri"
nbdinfo "$uri" | grep -q 'is_read_only: true' || fail "nbdinfo over tcp"
nbdcopy "$uri" "$NBD_TMP/tcp.raw" && cmp "$disk" "$NBD_TMP/tcp.raw" || fail "nbdcopy over tcp"
if qemu-io -f raw -c 'write 0 4k' "$uri" >/dev/null 2>&1; then
  fail "write to a read-only export succeeded"
fi
stop_serve
echo "nbd-clients: ok"
