#!/usr/bin/env bash
# kill -9 of svmd right after the guest's writes were acknowledged: after a restart the data is
# on the disk file and `cbt query` still reports every write, since the last change ID and
# since tracking began. A crash may over-report, within the extents of the tracker's activity
# log (4 MiB each, cbt/ctk.c): every write must be covered, and nothing reported outside the
# 4 MiB extents the test wrote to (all in the first 32 MiB of a 256 MiB disk).
source "$(dirname "$0")/agent-lib.sh"
requires qemu-io

# check_query_covers VM DISK SINCE "EARLIER" OFF:LEN ...: every write OFF:LEN reported; every
# reported byte in a 4 MiB extent that one of them or of the EARLIER writes (before SINCE,
# space-separated OFF:LEN) touched: the bound of the over-report after a crash.
check_query_covers() {
  local vm=$1 disk=$2 since=$3 earlier=$4
  shift 4
  svmctl cbt query "$vm" "$disk" --since "$since" --json >"$T/q.json"
  python3 - "$T/q.json" "$earlier" "$@" <<'PY' || fail "cbt query $vm $disk --since $since after the crash"
import json, sys
d = json.load(open(sys.argv[1])); ext = d["extents"]; X = 4 << 20
writes = [tuple(map(int, w.split(":"))) for w in sys.argv[3:]]
every = writes + [tuple(map(int, w.split(":"))) for w in sys.argv[2].split()]
hot = {o // X for o, l in every} | {(o + l - 1) // X for o, l in every}
for o, l in writes:
    if not any(e["offset"] <= o and o + l <= e["offset"] + e["length"] for e in ext):
        sys.exit(f"write {o}+{l} not reported: {ext}")
for e in ext:
    for x in range(e["offset"] // X, (e["offset"] + e["length"] - 1) // X + 1):
        if x not in hot:
            sys.exit(f"{e} reaches 4 MiB extent {x}, which no write touched")
PY
}

start_svmd
svmctl vm create vm1 --datastore ds2 --disk 256M >/dev/null
U=$(uri vm1 0)
qemu-io -f raw -c "write -P 1 0 64k" -c "write -P 2 3M 4k" "$U" >/dev/null
ID=$(svmctl cbt changeid vm1 0)
# many small writes, each acknowledged before the next, then kill -9 at once
cmds=()
writes=()
for i in $(seq 0 39); do
  off=$(( (i * 7919 % 500) * 65536 + (i % 3) * 4096 ))
  cmds+=(-c "write -P $((i + 10)) $off 4096")
  writes+=("$off:4096")
done
qemu-io -f raw "${cmds[@]}" "$U" >/dev/null
crash_svmd
[ -S "$SVM_STATE/nbd/vm1-disk0.sock" ] || fail "expected the socket of the killed svmd to remain"
# its control socket is stale now: svmctl says the agent is not running, and how to start it
expect_fail 1 "the agent svmd is not running" svmctl vm list
expect_err "start it with: svmd --name HOST --state $SVM_STATE"

start_svmd        # replaces the stale sockets, reopens the tracker
check_query_covers vm1 0 "$ID" "0:65536 3145728:4096" "${writes[@]}"
check_query_covers vm1 0 '*' "" 0:65536 3145728:4096 "${writes[@]}"
# the data of every acknowledged write is there
i=0
for w in "${writes[@]}"; do
  cmds=(-c "read -P $((i + 10)) ${w%%:*} 4096")
  # a later write to the same block may have overwritten an earlier one: only check the last
  last=$(printf '%s\n' "${writes[@]}" | grep -n "^${w}\$" | tail -1 | cut -d: -f1)
  if [ "$last" -eq $((i + 1)) ]; then
    qemu-io -f raw "${cmds[@]}" "$U" | grep -q "read 4096/4096" || fail "data of write $i"
  fi
  i=$((i + 1))
done
# the tracker keeps working after the crash: a new change ID cuts as before
ID2=$(svmctl cbt changeid vm1 0)
[ "${ID2%/*}" = "${ID%/*}" ] || fail "tracking restarted after a crash (uuid changed): $ID -> $ID2"
qemu-io -f raw -c "write -P 99 10M 4k" "$U" >/dev/null
check_query vm1 0 "$ID2" 10485760:4096
! grep -q "tracking was reset" "$LOG" || fail "a crash must not reset tracking"
stop_svmd
echo PASS
