#!/usr/bin/env bash
# svm-convert when things fail halfway, with real faulty NBD servers (nbdkit): read errors from
# the source, a destination that runs out of space, a source server that dies mid-copy. Each
# must end with exit 1, a message naming the thing, and no partial destination file.
. "$(dirname "$0")/lib.sh"
require nbdkit
CONV=$SVM_BIN/svm-convert

no_partial() {
  [ ! -e "$1" ] || fail "destination $1 left behind"
  [ -z "$(find "$(dirname "$1")" -name '*.svm-part-*')" ] || fail "temporary file left behind"
}

start_nbdkit() {   # VAR nbdkit-args...: serve on a unix socket, VAR = URI, stopped at exit
  local var=$1 sock=$TMP/nbdkit-$RANDOM.sock pid
  shift
  nbdkit --foreground --exit-with-parent --unix "$sock" "$@" &
  pid=$!
  on_exit "stop_pid $pid"
  wait_for_socket "$sock"
  printf -v "$var" 'nbd+unix:///?socket=%s' "$sock"
  eval "${var}_PID=$pid"
}

# 1. Source reads fail with EIO now and then (a quarter of them; 32 reads of 2 MiB: one fails).
start_nbdkit BAD --filter=error pattern size=64M error-pread=EIO error-pread-rate=25%
expect_exit 1 "read at offset [0-9]+ failed: Input/output error" "$CONV" "$BAD" "$TMP/out.raw"
no_partial "$TMP/out.raw"
ok "source read errors: exit 1, nothing left"

# 2. The NBD destination is full (nbdkit full: every write fails with ENOSPC).
truncate -s 16M "$TMP/src.raw"
dd if=/dev/urandom of="$TMP/src.raw" bs=1M count=4 seek=2 conv=notrunc status=none
start_nbdkit FULL full size=16M
expect_exit 1 "write near offset [0-9]+ failed: No space left on device" "$CONV" "$TMP/src.raw" "$FULL"
ok "destination full: exit 1"

# 3. The source server dies mid-copy: each read takes 1 s, so a 64 MiB copy at 32 x 2 MiB in
#    flight takes at least 1 s; the server is killed after 0.3 s.
start_nbdkit SLOW --filter=delay pattern size=64M rdelay=1
( sleep 0.3; kill "$SLOW_PID" ) &
expect_exit 1 "nbd|NBD|connection|server" "$CONV" "$SLOW" "$TMP/out2.raw"
no_partial "$TMP/out2.raw"
ok "source server killed mid-copy: exit 1, nothing left"

# 4. Interrupted by SIGINT halfway: same cleanup.
start_nbdkit SLOW2 --filter=delay pattern size=64M rdelay=1
"$CONV" "$SLOW2" "$TMP/out3.raw" 2>"$TMP/err3" &
pid=$!
sleep 0.3
kill -INT $pid
rc=0
wait $pid || rc=$?
[ $rc -eq 1 ] || fail "SIGINT: exit $rc"
grep -q "cancelled" "$TMP/err3" || fail "SIGINT: $(cat "$TMP/err3")"
no_partial "$TMP/out3.raw"
ok "SIGINT mid-copy: exit 1, nothing left"
