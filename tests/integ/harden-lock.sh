#!/usr/bin/env bash
# Image locking (OFD locks, shared for readers, exclusive for writers): svm-convert
# --punch-zeroes on a disk that svmd is serving, a copy from it, and a second svmd on the same
# datastore are all refused with a message naming the lock and what to do; the first svmd keeps
# serving, and once it stops the same commands work.
source "$(dirname "$0")/agent-lib.sh"
requires qemu-io

CONV=$SVM_BIN/svm-convert
start_svmd
svmctl vm create vm1 --datastore ds1 --disk 4M >/dev/null
DISK=$T/ds1/vm1/disk0.raw
U=$(uri vm1 0)
qemu-io -f raw -c 'write -P 0x5a 0 1M' "$U" >/dev/null || fail "guest write"

# a writer (punch in place) and a reader (convert) while svmd holds the write lock
expect_fail 1 "$DISK: another process (svmd or svm-convert) holds a write lock on it" \
  "$CONV" --punch-zeroes "$DISK"
expect_err "stop the VM's svmd"
expect_err "holds a write lock on it (svmd, pid $SVMD_PID)"     # the holder, found in /proc
expect_fail 1 "$DISK: another process (svmd or svm-convert) holds a write lock on it" \
  "$CONV" "$DISK" "$T/copy.raw"
[ ! -e "$T/copy.raw" ] || fail "a refused convert left its destination"
# a served disk as the destination of convert --force: refused, not renamed over
head -c 4M /dev/zero >"$T/zero.raw"
expect_fail 1 "$DISK: another process (svmd or svm-convert) holds a write lock on it" \
  "$CONV" --force "$T/zero.raw" "$DISK"
qemu-io -f raw -c 'read -P 0x5a 0 1M' "$U" >/dev/null || fail "the guest's data changed"

# a second svmd (its own state dir) on the same datastore: the VM is refused, not served twice
S2=$T/state2
"$SVM_BIN/svmd" --name second --state "$S2" --datastore "ds1=$T/ds1" 2>"$T/svmd2.log" &
PID2=$!
for _ in $(seq 1 200); do
  grep -q ': ready$' "$T/svmd2.log" && break
  kill -0 "$PID2" 2>/dev/null || break
  sleep 0.05
done
SVM_STATE=$S2 svmctl vm list --json >"$T/list2.json" || true
kill "$PID2" 2>/dev/null || true
wait "$PID2" 2>/dev/null || true
grep -qF "$DISK: another process (svmd or svm-convert) holds a write lock on it" "$T/svmd2.log" \
  || fail "second svmd: lock not reported: $(cat "$T/svmd2.log")"
[ ! -e "$S2/nbd/vm1-disk0.sock" ] || fail "second svmd exported a locked disk"
qemu-io -f raw -c 'read -P 0x5a 0 1M' "$U" >/dev/null || fail "first svmd stopped serving"

# a reader holds the shared lock: a writer is refused, another reader is not
stop_svmd
python3 - "$DISK" <<'PYEOF' &
import fcntl, os, struct, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
F_OFD_SETLK = 37
fcntl.fcntl(fd, F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_RDLCK, 0, 0, 0, 0))
open(sys.argv[1] + ".locked", "w").close()
time.sleep(30)
PYEOF
RDR=$!
stop_reader() {          # then agent-lib's cleanup, which reads the exit status from $?
  local rc=$?
  set +e
  kill "$RDR" 2>/dev/null
  wait "$RDR" 2>/dev/null
  (exit "$rc")
  cleanup
}
trap stop_reader EXIT
for _ in $(seq 1 200); do [ -e "$DISK.locked" ] && break; sleep 0.05; done
rm -f "$DISK.locked"
expect_fail 1 "$DISK: another process (svmd or svm-convert) is reading it" \
  "$CONV" --punch-zeroes "$DISK"
"$CONV" "$DISK" "$T/copy.raw" >/dev/null 2>"$T/err" || fail "a second reader was refused: $(cat "$T/err")"
kill "$RDR"; wait "$RDR" 2>/dev/null || true

# nobody holds it now
"$CONV" --punch-zeroes "$DISK" >/dev/null || fail "punch after svmd stopped"
cmp <(head -c 1M "$DISK") <(head -c 1M "$T/copy.raw") || fail "data after punch"
echo "harden-lock: ok"
