#!/usr/bin/env bash
# Changed-block tracking moves with the disk: a change ID taken before the move, and one taken
# during it, answer exactly after it (the writes before, during and after the move, nothing
# else); the tracking uuid stays, the .ctk is in the destination, nothing was reset.
source "$(dirname "$0")/agent-lib.sh"
source "$(dirname "$0")/migrate-lib.sh"

start_svmd
svmctl vm create vm1 --datastore ds1 --disk 64M >/dev/null
U=$(uri vm1 0)
qemu-io -f raw -c "write -P 1 0 1M" "$U" >/dev/null
ID1=$(svmctl cbt changeid vm1 0)
qemu-io -f raw -c "write -P 2 8M 64k" -c "write -P 2 50M 4k" "$U" >/dev/null
svmctl migrate vm1 --datastore ds2 --rate 8M --json >"$T/result.json" &
MPID=$!
wait_copied vm1 $((4 << 20))
# during the move: behind the copier (mirrored) and ahead of it
qemu-io -f raw -c "write -P 3 1M 4k" -c "write -P 3 60M 64k" "$U" >/dev/null
ID2=$(svmctl cbt changeid vm1 0)            # a change ID while the mirror is in the stack
qemu-io -f raw -c "write -P 4 2M 4k" -c "write -P 4 62M 4k" "$U" >/dev/null
wait "$MPID" || fail "move: $(cat "$T/result.json")"
[ "$(json_get 'd["state"]' <"$T/result.json")" = done ] || fail "result: $(cat "$T/result.json")"
qemu-io -f raw -c "write -P 5 30M 4k" "$U" >/dev/null

[ -f "$T/ds2/vm1/disk0.ctk" ] && [ ! -e "$T/ds1/vm1" ] || fail "the tracker did not move"
check_query vm1 0 "$ID1" 8388608:65536 52428800:4096 1048576:4096 62914560:65536 \
  2097152:4096 65011712:4096 31457280:4096
check_query vm1 0 "$ID2" 2097152:4096 65011712:4096 31457280:4096
check_query vm1 0 '*' 0:1048576 8388608:65536 52428800:4096 1048576:4096 62914560:65536 \
  2097152:4096 65011712:4096 31457280:4096
ID3=$(svmctl cbt changeid vm1 0)
[ "${ID3%/*}" = "${ID1%/*}" ] || fail "the tracking uuid changed across the move: $ID1 -> $ID3"
[ "${ID3#*/}" -eq $(( ${ID2#*/} + 1 )) ] || fail "change ID sequence: $ID2 then $ID3"
check_query vm1 0 "$ID3"
! grep -q "tracking was reset" "$LOG" || fail "tracking was reset: $(grep reset "$LOG")"
svmctl vm show vm1 --json | json_get 'd["disks"][0]["ctk"]' | grep -qx "$T/ds2/vm1/disk0.ctk" ||
  fail "vm show: the tracker's file"
# and the tracker survives a restart in its new place
stop_svmd
start_svmd
check_query vm1 0 "$ID2" 2097152:4096 65011712:4096 31457280:4096
stop_svmd
echo PASS
