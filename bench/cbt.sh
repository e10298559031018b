#!/usr/bin/env bash
# Changed-block tracking benchmark: builds a Release tree (build-bench/) and runs
# bench/cbt/cbt-bench (what it measures and why: the comment at its top; conventions:
# bench/README.md). Each figure is min/median/max over ROUNDS rounds, next to its target
# (issue 3): mark of an already-marked block, scattered over 1 TiB, <= 5 ns; query of a 1 TiB
# disk with 1% changed over 100 epochs < 10 ms, warm and cold (first query after open, .ctk
# evicted); <= 32 MiB of measured RSS per TiB at 64 KiB; first marks (1 and 8 threads) quoted
# beside them.
#
# Usage: bench/cbt.sh [DIR]   env: ROUNDS=5, BENCH_QUICK=1 (fewer mark iterations: a smoke
#        test), BENCH_DIR (default /var/tmp/svm-bench). DIR: where the first-mark and the
#        cold-query .ctk files live (default: a temporary directory under BENCH_DIR, removed
#        at exit): the disk the trackers would really live on.
#        A full run takes about 10-20 s (plus the Release build the first time).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_help "$@"
bench_init cbt
bench_need cmake cmake
dir=${1:-$BENCH_WORK}
cd "$BENCH_TOP"
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j"$(nproc)" --target cbt-bench >/dev/null
echo "cbt-bench on $(uname -m), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')); .ctk files in $dir ($(df --output=fstype "$dir" | tail -1))"
args=(--rounds "$ROUNDS")
[ "$BENCH_QUICK" = 1 ] && args+=(--quick)
build-bench/bench/cbt-bench "${args[@]}" "$dir"
bench_footer "the order of the mark loops shuffled per round; the cold query checked against the warm one."
