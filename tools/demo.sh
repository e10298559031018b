#!/usr/bin/env bash
# The built-in demo: install what is needed, build, then show svm-convert at work.
#   1. a 256 MiB thick (fully allocated) disk with some data in it
#   2. converted to thin with svm-convert: only the data is allocated
#   3. sizes before and after (apparent and allocated), checked with qemu-img compare
#   4. back to eager-zeroed thick, and the thin copy made thin again in place (--punch-zeroes)
#   5. the agent: svmd with two datastores, a VM, guest writes through its NBD export with
#      qemu-io, a change ID, more writes, and `svmctl cbt query` naming exactly those
#   6. a live move: while a guest (fio's nbd engine) writes and verifies through the export,
#      `svmctl migrate` moves the VM from ds1 to ds2 (progress bar on a terminal); then the
#      guest's data is checked through the export and in the new file, the old folder is gone;
#      then the agent is stopped cleanly
# Runs in a temporary directory that it removes; exit 0 when everything checked out.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

echo "== install dependencies"
./tools/install-deps.sh
echo "== build (cmake -S . -B build)"
cmake -S . -B build >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
conv=$top/build/bin/svm-convert

work=$(mktemp -d "${TMPDIR:-/tmp}/svmotion-demo-XXXXXX")
svmd_pid=
fio_pid=
cleanup() {
  if [ -n "$fio_pid" ]; then
    kill "$fio_pid" 2>/dev/null || true
    wait "$fio_pid" 2>/dev/null || true
  fi
  if [ -n "$svmd_pid" ]; then
    kill "$svmd_pid" 2>/dev/null || true
    wait "$svmd_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

sizes() {   # name, apparent size, allocated size
  local f
  printf '   %-24s %12s %12s\n' file apparent allocated
  for f in "$@"; do
    printf '   %-24s %12s %12s\n' "$f" "$(du -h --apparent-size "$f" | cut -f1)" \
      "$(du -h "$f" | cut -f1)"
  done
}

echo
echo "== 1. a thick disk: 256 MiB, every byte allocated, 24 MiB of data written here and there"
fallocate -l 256M thick.raw
for off in 3 40 41 42 97 150 151 200 201 202 203 250; do
  dd if=/dev/urandom of=thick.raw bs=1M count=2 seek="$off" conv=notrunc status=none
done
sync thick.raw
sizes thick.raw

echo
echo "== 2. svm-convert thick.raw thin.raw   (default provisioning: thin)"
"$conv" --json thick.raw thin.raw | tee convert.json
sizes thick.raw thin.raw
qemu-img compare -f raw -F raw thick.raw thin.raw

echo
echo "== 3. back to eager-zeroed thick: every byte allocated and written"
"$conv" --provisioning eager-zeroed-thick thin.raw eager.raw
sizes eager.raw
echo "   unwritten extents (filefrag -v): $(filefrag -v eager.raw | grep -c unwritten || true)"
qemu-img compare -f raw -F raw thick.raw eager.raw

echo
echo "== 4. svm-convert --punch-zeroes eager.raw   (make it thin in place)"
"$conv" --punch-zeroes eager.raw
sizes eager.raw
qemu-img compare -f raw -F raw thick.raw eager.raw

thin_alloc=$(($(stat -c %b thin.raw) * 512))
[ "$thin_alloc" -lt $((32 * 1024 * 1024)) ] || { echo "demo: thin.raw is not thin" >&2; exit 1; }

echo
echo "== 5. the agent: svmd, a VM, guest writes through NBD, changed-block tracking"
svmd=$top/build/bin/svmd
svmctl() { "$top/build/bin/svmctl" "$@"; }
run() { echo "   \$ ${*@Q}" | sed "s/'\([a-z0-9.:=\/-]*\)'/\1/g"; "$@" 2>&1 | sed 's/^/     /'; }
mkdir ds1 ds2
export SVM_STATE=$work/state
echo "   \$ svmd --name demo-host --state $SVM_STATE --datastore ds1=$work/ds1 --datastore ds2=$work/ds2 &"
"$svmd" --name demo-host --state "$SVM_STATE" --datastore "ds1=$work/ds1" \
  --datastore "ds2=$work/ds2" 2>svmd.log &
svmd_pid=$!
for _ in $(seq 1 100); do
  grep -q ': ready$' svmd.log && break
  kill -0 "$svmd_pid" 2>/dev/null || { cat svmd.log >&2; exit 1; }
  sleep 0.1
done
run svmctl vm create vm1 --datastore ds1 --disk 1G:thin
run svmctl vm list
uri="nbd+unix:///vm1/disk0?socket=$SVM_STATE/nbd/vm1-disk0.sock"
echo "   the guest: any NBD client; here qemu-io writes 1 MiB at 0 and 64 KiB at 512 MiB"
run qemu-io -f raw -c 'write -P 0xaa 0 1M' -c 'write -P 0xbb 512M 64k' "$uri"
run svmctl cbt query vm1 0 --since '*'
id=$(svmctl cbt changeid vm1 0)
echo "   \$ svmctl cbt changeid vm1 0"
echo "     $id"
echo "   more guest writes: 4 KiB at 100 MiB and 200 KiB at 700 MiB"
run qemu-io -f raw -c 'write -P 0xcc 100M 4k' -c 'write -P 0xdd 700M 200k' "$uri"
echo "   what changed since $id (offset length, whole 64 KiB blocks):"
run svmctl cbt query vm1 0 --since "$id"
echo "   the same map over plain NBD, as a backup tool reads it:"
run nbdinfo --map="svm-cbt:$id" "$uri"
got=$(svmctl cbt query vm1 0 --since "$id" | tr '\n' ' ')
[ "$got" = "104857600 65536 734003200 262144 " ] ||
  { echo "demo: cbt query reported '$got'" >&2; exit 1; }
# the file itself, read-only and without QEMU's image locking: svmd holds it locked
file_opts() { echo "driver=raw,file.driver=file,file.filename=$1,file.locking=off"; }
qemu-io -r -c 'read -P 0xdd 700M 200k' --image-opts "$(file_opts "$work/ds1/vm1/disk0.raw")" \
  >/dev/null ||
  { echo "demo: the guest's data is not in the disk file" >&2; exit 1; }
echo "   the data is in $work/ds1/vm1/disk0.raw; the descriptor ds1/vm1/vm1.svm:"
sed 's/^/     /' ds1/vm1/vm1.svm

echo
echo "== 6. live migration: vm1 moves from ds1 to ds2 while its guest writes"
echo "   384 MiB more data for the copier, then the guest: fio's nbd engine, 4 KiB random writes"
echo "   at 2000 IOPS over 64 MiB, every 256 writes read back and verified (crc32c)"
qemu-io -f raw -c 'write -P 0x5a 256M 384M' "$uri" >/dev/null
fio --name=fill --ioengine=nbd --uri="$uri" --rw=write --bs=4k --offset=128M --size=64M \
  --iodepth=16 --verify=crc32c --do_verify=0 --output=fill.txt    # fio blocks everywhere first
# --eta=never: fio's own status line would overwrite svmctl's progress bar on the terminal
fio --name=guest --ioengine=nbd --uri="$uri" --rw=randwrite --bs=4k --offset=128M --size=64M \
  --eta=never --iodepth=8 --rate_iops=2000 --verify=crc32c --verify_backlog=256 --do_verify=1 \
  --verify_fatal=1 --trigger-file="$work/fio-stop" --write_iolog="$work/fio.log" \
  --output="$work/fio.txt" &
fio_pid=$!
grows() {   # grows BYTES: wait until the guest's write log has grown by BYTES (it is writing)
  local start
  start=$(stat -c %s fio.log 2>/dev/null || echo 0)
  for _ in $(seq 1 600); do
    [ "$(stat -c %s fio.log 2>/dev/null || echo 0)" -ge $((start + $1)) ] && return 0
    kill -0 "$fio_pid" 2>/dev/null || { cat fio.txt >&2; exit 1; }
    sleep 0.05
  done
  echo "demo: the guest stopped writing" >&2; exit 1
}
grows 16384
echo "   \$ svmctl migrate vm1 --datastore ds2"
svmctl migrate vm1 --datastore ds2 | sed 's/^/     /'
grows 16384                       # the guest goes on writing after the switchover
touch "$work/fio-stop"
wait "$fio_pid" || { echo "demo: the guest's verification failed:" >&2; cat fio.txt >&2; exit 1; }
fio_pid=
echo "   the guest kept writing across the move; every write it read back was right:"
grep -E '^ *write: IOPS|^ *read: IOPS' fio.txt | sed 's/^ */     guest /'
fio --name=check --ioengine=nbd --uri="$uri" --rw=read --bs=4k --offset=128M --size=64M \
  --verify=crc32c --verify_fatal=1 --output=check.txt ||
  { echo "demo: read-verify after the move failed" >&2; cat check.txt >&2; exit 1; }
echo "   all 64 MiB of the guest's blocks read back and verified through the same export"
qemu-io -r -c 'read -P 0xdd 700M 200k' -c 'read -P 0x5a 256M 384M' \
  --image-opts "$(file_opts "$work/ds2/vm1/disk0.raw")" >read.txt || { cat read.txt >&2; exit 1; }
! grep -q 'verification failed' read.txt || { echo "demo: the data did not move" >&2; exit 1; }
[ ! -e ds1/vm1 ] || { echo "demo: ds1/vm1 is still there after the move" >&2; exit 1; }
echo "   the data is now in $work/ds2/vm1/disk0.raw (ds1/vm1 is gone):"
run svmctl vm list
run svmctl status
kill -TERM "$svmd_pid"
wait "$svmd_pid"
svmd_pid=
echo "   svmd stopped cleanly (SIGTERM); its log:"
sed 's/^/     /' svmd.log

echo
echo "demo: ok (thin copy allocates $((thin_alloc / 1024 / 1024)) MiB of 256 MiB; the agent's CBT"
echo "      reported exactly the guest's writes; the VM moved live with its guest writing)"
