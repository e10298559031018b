#!/usr/bin/env bash
# The built-in demo: install what is needed, build, then show svm-convert at work.
#   1. a 256 MiB thick (fully allocated) disk with some data in it
#   2. converted to thin with svm-convert: only the data is allocated
#   3. sizes before and after (apparent and allocated), checked with qemu-img compare
#   4. back to eager-zeroed thick, and the thin copy made thin again in place (--punch-zeroes)
#   5. the agent: svmd with two datastores, a VM, guest writes through its NBD export with
#      qemu-io, a change ID, more writes, and `svmctl cbt query` naming exactly those; then the
#      agent is stopped cleanly
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
cleanup() {
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
qemu-io -f raw -c 'read -P 0xdd 700M 200k' "$work/ds1/vm1/disk0.raw" >/dev/null ||
  { echo "demo: the guest's data is not in the disk file" >&2; exit 1; }
echo "   the data is in $work/ds1/vm1/disk0.raw; the descriptor ds1/vm1/vm1.svm:"
sed 's/^/     /' ds1/vm1/vm1.svm
kill -TERM "$svmd_pid"
wait "$svmd_pid"
svmd_pid=
echo "   svmd stopped cleanly (SIGTERM); its log:"
sed 's/^/     /' svmd.log

echo
echo "demo: ok (thin copy allocates $((thin_alloc / 1024 / 1024)) MiB of 256 MiB; the agent's CBT"
echo "      reported exactly the guest's writes)"
