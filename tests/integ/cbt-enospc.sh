#!/usr/bin/env bash
# A full datastore (issue 11): the .ctk is allocated whole when created, so tracking never needs
# new space. With the datastore (a small tmpfs) full, a guest write into unallocated space of a
# thin disk fails with ENOSPC (not EIO) while its mark still succeeds; once space returns,
# writes succeed again without a restart, and `cbt query` is exact.
source "$(dirname "$0")/agent-lib.sh"
requires qemu-io
[ "$(id -u)" -eq 0 ] || { echo "SKIP: mounting a tmpfs needs root"; exit 77; }
mount -t tmpfs -o size=48m,mode=0700 svm-cbt-enospc "$T/ds1" 2>/dev/null ||
  { echo "SKIP: cannot mount a tmpfs"; exit 77; }
trap 'rc=$?; umount "$T/ds1" 2>/dev/null || umount -l "$T/ds1" 2>/dev/null || true; (exit $rc); cleanup' EXIT

start_svmd
svmctl vm create vm1 --datastore ds1 --disk 32M:thin >/dev/null
U=$(uri vm1 0)
ID=$(svmctl cbt changeid vm1 0)
ctk=$(ls "$T"/ds1/vm1/*.ctk)
[ "$(( $(stat -c '%b * %B' "$ctk") ))" -ge "$(stat -c %s "$ctk")" ] ||
  fail "$ctk is not allocated whole: $(stat -c '%b blocks of %B, size %s' "$ctk")"
qemu-io -f raw -c "write -P 1 0 1M" "$U" >/dev/null
# fill the datastore to the last byte
dd if=/dev/zero of="$T/ds1/filler" bs=64k 2>/dev/null || true
[ "$(df --output=avail -B1 "$T/ds1" | tail -1)" -lt 65536 ] || fail "the tmpfs did not fill up"

# a write into a cold extent needing new space: the guest hears ENOSPC
qemu-io -f raw -c "write -P 2 8M 1M" "$U" >"$T/w.out" 2>&1 || true
grep -q "No space left on device" "$T/w.out" ||
  fail "write on a full datastore: expected ENOSPC, got: $(cat "$T/w.out")"
# a write into already allocated space still works, tracking included
qemu-io -f raw -c "write -P 3 4k 4k" "$U" | grep -q "wrote 4096/4096" ||
  fail "an overwrite of allocated space failed on a full datastore"

rm -f "$T/ds1/filler"                          # space returns: no restart needed
qemu-io -f raw -c "write -P 2 8M 1M" "$U" | grep -q "wrote 1048576/1048576" ||
  fail "writes did not recover once space returned"
qemu-io -f raw -c "write -P 4 20M 64k" "$U" | grep -q "wrote 65536/65536" ||
  fail "a write into a new extent failed after space returned"
check_query vm1 0 "$ID" 0:1048576 8388608:1048576 20971520:65536
qemu-io -f raw -c "read -P 2 8M 1M" -c "read -P 3 4k 4k" "$U" >"$T/r.out"
[ "$(grep -c '^read' "$T/r.out")" -eq 2 ] || fail "data after recovery: $(cat "$T/r.out")"
! grep -qi "change tracking of" "$LOG" || fail "tracking failed: $(grep -i 'change tracking of' "$LOG")"
stop_svmd
echo PASS
