#!/usr/bin/env bash
# The built-in demo: install what is needed, build, then show svm-convert at work.
#   1. a 256 MiB thick (fully allocated) disk with some data in it
#   2. converted to thin with svm-convert: only the data is allocated
#   3. sizes before and after (apparent and allocated), checked with qemu-img compare
#   4. back to eager-zeroed thick, and the thin copy made thin again in place (--punch-zeroes)
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
trap 'rm -rf "$work"' EXIT
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
echo "demo: ok (thin copy allocates $((thin_alloc / 1024 / 1024)) MiB of 256 MiB)"
