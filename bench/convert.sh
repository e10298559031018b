#!/usr/bin/env bash
# Benchmark: svm-convert against its peers on the same raw disk, side by side.
#
# Source: a 4 GiB raw disk, 50% allocated in scattered 1 MiB extents of random data, plus 10%
# allocated zeros (1 MiB extents written with zeros), the rest holes. Made once and kept in
# $BENCH_DIR (default /var/tmp/svm-bench-convert) for later runs.
#
# Each tool copies it to a new raw file in the same directory: svm-convert (thin and thick),
# qemu-img convert -O raw -S 4k, cp --sparse=always and nbdcopy. Before each run the page cache
# is dropped (sync; echo 3 > /proc/sys/vm/drop_caches: needs root). Each run is timed from
# start to a following `sync`, so that every tool pays for getting its data to disk (svm-convert
# fsyncs by itself; cp and nbdcopy do not). RUNS runs each (default 3); the table shows the
# median time, the ratio of svm-convert thin to each tool, and the allocated size of the result.
#
# Usage: bench/convert.sh            (env: SIZE_MB=4096 RUNS=3 BENCH_DIR=... SVM_BIN=...)
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
SVM_BIN=${SVM_BIN:-$top/build/bin}
SIZE_MB=${SIZE_MB:-4096}
RUNS=${RUNS:-3}
BENCH_DIR=${BENCH_DIR:-/var/tmp/svm-bench-convert}
conv=$SVM_BIN/svm-convert

for p in qemu-img nbdcopy cp python3; do
  command -v $p >/dev/null || { echo "bench: $p is not installed (tools/install-deps.sh)" >&2; exit 1; }
done
[ -x "$conv" ] || { echo "bench: $conv not built (cmake -S . -B build && cmake --build build)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "bench: run as root (it drops the page cache)" >&2; exit 1; }

mkdir -p "$BENCH_DIR"
src=$BENCH_DIR/src-${SIZE_MB}M.raw
if [ ! -f "$src" ]; then
  echo "bench: making $src (${SIZE_MB} MiB: 50% random data, 10% allocated zeros)" >&2
  python3 - "$src" "$SIZE_MB" <<'PY'
import os, random, sys
path, n = sys.argv[1], int(sys.argv[2])
MiB = 1 << 20
rng = random.Random(20261123)
slots = list(range(n))
rng.shuffle(slots)
data = sorted(slots[: n // 2])
zeros = sorted(slots[n // 2 : n // 2 + n // 10])
fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.ftruncate(fd, n * MiB)
zero = bytes(MiB)
for s in data:
    os.pwrite(fd, os.urandom(MiB), s * MiB)
for s in zeros:
    os.pwrite(fd, zero, s * MiB)
os.fsync(fd)
os.close(fd)
os.rename(path + ".tmp", path)
PY
fi

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }

# name|command (DST is replaced by the output path)
tools=(
  "svm-convert thin|$conv --force SRC DST"
  "svm-convert thick|$conv --force --provisioning thick SRC DST"
  "qemu-img convert -S 4k|qemu-img convert -f raw -O raw -S 4k SRC DST"
  "cp --sparse=always|cp --sparse=always SRC DST"
  "nbdcopy|nbdcopy SRC DST"
)

declare -A times alloc median
dst=$BENCH_DIR/dst.raw
# Round-robin (run 1 of every tool, then run 2...), so that load from other work on the machine
# falls on all tools alike rather than on whichever ran during it.
for ((i = 1; i <= RUNS; i++)); do
  for t in "${tools[@]}"; do
    name=${t%%|*}
    cmd=${t#*|}
    cmd=${cmd//SRC/$src}
    cmd=${cmd//DST/$dst}
    rm -f "$dst"
    # nbdcopy writes into an existing file of the right size
    [ "$name" = nbdcopy ] && truncate -s "${SIZE_MB}M" "$dst"
    drop_caches
    t0=$(now)
    $cmd
    sync
    t1=$(now)
    times[$name]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }') "
    if [ "$i" -eq 1 ]; then
      qemu-img compare -q -f raw -F raw "$src" "$dst" ||
        { echo "bench: $name produced a different disk" >&2; exit 1; }
      alloc[$name]=$(($(stat -c %b "$dst") * 512))
    fi
  done
done
for t in "${tools[@]}"; do
  name=${t%%|*}
  median[$name]=$(printf '%s\n' ${times[$name]} | sort -g | sed -n "$(((RUNS + 1) / 2))p")
  echo "bench: $name: ${times[$name]}s" >&2
done
rm -f "$dst"

echo
echo "svm-convert benchmark: ${SIZE_MB} MiB raw disk, 50% data in 1 MiB extents + 10% allocated"
echo "zeros; page cache dropped before each run; time includes a final sync; median of $RUNS"
echo "runs, tools interleaved round-robin. Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
echo "Host: $(nproc) CPUs, $(uname -r), $(df --output=fstype "$BENCH_DIR" | tail -1) on $(df --output=source "$BENCH_DIR" | tail -1)"
echo
printf '| %-24s | %10s | %18s | %14s |\n' tool "median s" "svm thin / tool" "allocated MiB"
printf '|%s|%s|%s|%s|\n' "--------------------------" "------------" "--------------------" "----------------"
thin=${median["svm-convert thin"]}
for t in "${tools[@]}"; do
  name=${t%%|*}
  printf '| %-24s | %10.3f | %18.2f | %14.1f |\n' "$name" "${median[$name]}" \
    "$(awk -v a="$thin" -v b="${median[$name]}" 'BEGIN { print a / b }')" \
    "$(awk -v a="${alloc[$name]}" 'BEGIN { print a / 1048576 }')"
done
echo
q=${median["qemu-img convert -S 4k"]}
fastest=$(printf '%s\n' "${median["qemu-img convert -S 4k"]}" "${median["cp --sparse=always"]}" \
  "${median[nbdcopy]}" | sort -g | head -1)
awk -v t="$thin" -v q="$q" -v f="$fastest" -v a="${alloc["svm-convert thin"]}" \
    -v qa="${alloc["qemu-img convert -S 4k"]}" 'BEGIN {
  printf "target: svm-convert thin <= 0.9 x qemu-img convert: %.2f x  %s\n", t / q, (t <= 0.9 * q) ? "met" : "NOT met"
  printf "target: svm-convert thin <= fastest peer (%.3f s): %.2f x  %s\n", f, t / f, (t <= f) ? "met" : "NOT met"
  printf "target: thin result <= qemu-img result (%.0f <= %.0f bytes): %s\n", a, qa, (a <= qa) ? "met" : "NOT met"
}'
