#!/usr/bin/env bash
# svm-convert when things fail halfway, with real faulty NBD servers (nbdkit): read errors from
# the source, a destination that runs out of space, a source server that dies mid-copy, Ctrl-C
# mid-copy. Each must end with exit 1, a message naming the thing, and no partial destination
# file. No race decides an outcome: a source that must be caught mid-copy is held by nbdkit's
# pause filter, and the test acts only once its log shows svm-convert's reads arriving.
. "$(dirname "$0")/lib.sh"
require nbdkit python3
CONV=$SVM_BIN/svm-convert
MiB=$((1024 * 1024))

no_partial() {
  [ ! -e "$1" ] || fail "destination $1 left behind"
  [ -z "$(find "$(dirname "$1")" -name '*.svm-part-*')" ] || fail "temporary file left behind"
}

servers=0          # numbers each server's files: names never collide
start_nbdkit() {   # VAR nbdkit-args...: serve on a unix socket, VAR = URI, stopped at exit
  local var=$1 sock pid
  shift
  servers=$((servers + 1))
  sock=$TMP/nbdkit-$servers.sock
  nbdkit --foreground --exit-with-parent --unix "$sock" "$@" &
  pid=$!
  on_exit "stop_pid $pid"
  wait_for_socket "$sock"
  printf -v "$var" 'nbd+unix:///?socket=%s' "$sock"
  eval "${var}_PID=$pid"
}

# A source that can be held: every request is logged as it arrives (log filter, outermost),
# then waits while paused (pause filter). VAR = URI, VAR_CTL = control socket, VAR_LOG = log.
start_held_source() {
  local var=$1 ctl=$TMP/pause-$((servers + 1)).sock log=$TMP/nbdkit-$((servers + 1)).log
  shift
  start_nbdkit "$var" --filter=log --filter=pause "$@" pause-control="$ctl" logfile="$log"
  wait_for_socket "$ctl"
  eval "${var}_CTL=$ctl ${var}_LOG=$log"
}

# pause_ctl SOCKET p|r: pause or resume; returns once the filter has acknowledged it.
pause_ctl() {
  python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode())
want = sys.argv[2].upper().encode()
assert s.recv(1) == want, "pause filter did not acknowledge " + sys.argv[2]
PY
}

# wait_until SECONDS COMMAND...: poll COMMAND until it succeeds (the event has happened).
wait_until() {
  local secs=$1 i
  shift
  for ((i = 0; i < secs * 100; i++)); do
    "$@" && return 0
    sleep 0.01
  done
  fail "timed out after ${secs}s waiting for: $*"
}

reads_arrived() { grep -q ' Read id=' "$1"; }
part_file_of() { [ -e "$1.svm-part-$2" ]; }

# 1. Source reads fail with EIO from 32 MiB on: the first half is read and written, then the
#    first failing read (in disk order) is reported.
start_nbdkit BAD eval get_size='echo 64M' \
  pread='if [ $4 -ge $((32 << 20)) ]; then echo "EIO injected" >&2; exit 1; fi
         head -c $3 /dev/zero | tr "\0" "\1"'
expect_exit 1 "read at offset $((32 * MiB)) failed: Input/output error" "$CONV" "$BAD" "$TMP/out.raw"
no_partial "$TMP/out.raw"
ok "source read errors: exit 1, nothing left"

# 2. The NBD destination is full (nbdkit full: every write fails with ENOSPC).
truncate -s 16M "$TMP/src.raw"
dd if=/dev/urandom of="$TMP/src.raw" bs=1M count=4 seek=2 conv=notrunc status=none
start_nbdkit FULL full size=16M
expect_exit 1 "write near offset [0-9]+ failed: No space left on device" "$CONV" "$TMP/src.raw" "$FULL"
ok "destination full: exit 1"

# 3. The source server dies mid-copy: held, so svm-convert's reads are in flight when it is
#    killed.
start_held_source SLOW pattern size=256M
pause_ctl "$SLOW_CTL" p
"$CONV" "$SLOW" "$TMP/out2.raw" 2>"$TMP/err2" &
pid=$!
wait_until 20 reads_arrived "$SLOW_LOG"
kill -KILL "$SLOW_PID"
rc=0
wait $pid || rc=$?
[ $rc -eq 1 ] || fail "server killed: exit $rc: $(cat "$TMP/err2")"
grep -qF "$SLOW: " "$TMP/err2" && grep -qF "(the NBD server went away?)" "$TMP/err2" ||
  fail "server killed: $(cat "$TMP/err2")"
no_partial "$TMP/out2.raw"
ok "source server killed mid-copy: exit 1, nothing left"

# 4. Interrupted by SIGINT mid-copy: same cleanup. The part file exists only after the signal
#    handler is installed (svm-convert's main), and the held reads prove the copy has started
#    and cannot have finished; resuming after the signal lets them complete into a cancel.
start_held_source SLOW2 pattern size=256M
pause_ctl "$SLOW2_CTL" p
"$CONV" "$SLOW2" "$TMP/out3.raw" 2>"$TMP/err3" &
pid=$!
wait_until 20 part_file_of "$TMP/out3.raw" $pid
wait_until 20 reads_arrived "$SLOW2_LOG"
kill -INT $pid
pause_ctl "$SLOW2_CTL" r
rc=0
wait $pid || rc=$?
[ $rc -eq 1 ] || fail "SIGINT: exit $rc"
grep -q "svm-convert: conversion cancelled" "$TMP/err3" || fail "SIGINT: $(cat "$TMP/err3")"
no_partial "$TMP/out3.raw"
ok "SIGINT mid-copy: exit 1, nothing left"
