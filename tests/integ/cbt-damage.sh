#!/usr/bin/env bash
# Damaged tracking is never trusted (issue 11), through svmd: with svmd stopped, one copy of
# a .ctk data page is flipped (or both zeroed); after the restart `cbt query` since the last
# change ID reports every block that page covers (over-report, never a miss), the change IDs
# stay valid, and the agent's log names the file and what it counted as changed.
source "$(dirname "$0")/agent-lib.sh"
requires qemu-io

# A 64 MiB disk at 64 KiB: 1024 blocks, one data page of the .ctk (2032 blocks) covers it.
# Data pages start at 40960 (two header slots of 4 KiB, four activity-log entries of 8 KiB:
# format version 3, checked), copies A then B.
for damage in flip-a flip-b zero-both; do
  start_svmd
  svmctl vm create vm1 --datastore ds1 --disk 64M >/dev/null
  U=$(uri vm1 0)
  qemu-io -f raw -c "write -P 1 0 64k" "$U" >/dev/null
  ID=$(svmctl cbt changeid vm1 0)
  qemu-io -f raw -c "write -P 2 1M 4k" "$U" >/dev/null
  stop_svmd                                      # clean: pages written, log emptied
  ctk=$(ls "$T"/ds1/vm1/*.ctk)
  damage_ctk() { python3 - "$ctk" "$@" <<'PY'
import sys
path, damage = sys.argv[1], sys.argv[2]
with open(path, "r+b") as f:
    f.seek(8)
    if int.from_bytes(f.read(4), "little") != 3:
        sys.exit("not a version-3 .ctk: this test's offsets are out of date")
    if damage == "zero-both":
        f.seek(40960); f.write(bytes(8192))
    else:
        f.seek(40960 + (0 if damage == "flip-a" else 4096) + 100)
        b = f.read(1); f.seek(-1, 1); f.write(bytes([b[0] ^ 0xff]))
PY
  }
  damage_ctk "$damage"
  start_svmd
  check_query vm1 0 "$ID" 0:67108864
  check_query vm1 0 '*' 0:67108864
  grep -q "$ctk: .*data page.*counted as changed" "$LOG" ||
    fail "$damage: the log does not say what was not trusted: $(tail -5 "$LOG")"
  # tracking goes on, exact again after the next change ID
  ID2=$(svmctl cbt changeid vm1 0)
  [ "${ID2%/*}" = "${ID%/*}" ] || fail "$damage: tracking restarted: $ID -> $ID2"
  qemu-io -f raw -c "write -P 3 8M 4k" "$U" >/dev/null
  check_query vm1 0 "$ID2" 8388608:4096
  svmctl vm delete vm1 >/dev/null
  stop_svmd
  : >"$LOG"
done
echo PASS
