#!/usr/bin/env bash
# Changed-block tracking benchmark: builds a Release tree (build-bench/) and runs
# bench/cbt/cbt-bench (what it measures and why: the comment at its top; conventions:
# bench/README.md). Each figure is min/median/max over ROUNDS rounds, next to its target
# (issue 3): mark of an already-marked block, scattered over 1 TiB, <= 5 ns; query of a 1 TiB
# disk with 1% changed over 100 epochs < 10 ms, warm and cold (first query after open, .ctk
# evicted); <= 32 MiB of measured RSS per TiB at 64 KiB; first marks (1 and 8 threads) quoted
# beside them. Then the cost through svmd (issue 9): bench/nbd.sh with CBT_ONLY=1, from the
# same Release tree: fio 4 KiB random writes at depth 1 and 32 through svmd with CBT, warm and
# cold (a change ID right before the cell), and through svm-nbd-serve (the same export without
# tracking), side by side in one run, each round shuffled; target <= 3% of IOPS and of p99.
#
# Usage: bench/cbt.sh [DIR]   env: ROUNDS=5, BENCH_QUICK=1 (fewer mark iterations: a smoke
#        test), BENCH_DIR (default /var/tmp/svm-bench). DIR: where the first-mark and the
#        cold-query .ctk files live (default: a temporary directory under BENCH_DIR, removed
#        at exit): the disk the trackers would really live on.
#        CBT_NBD=0 skips the svmd part. A full run takes about 10-20 s for the library part
#        and about 5 min for the svmd part (5 rounds x 3 servers x 2 cells of 2 s + 5 s, plus
#        preconditioning and verification), plus the Release build the first time.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_help "$@"
bench_init cbt
bench_need cmake cmake
dir=${1:-$BENCH_WORK}
cd "$BENCH_TOP"
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j"$(nproc)" --target cbt-bench svmd svmctl svm-nbd-serve >/dev/null
echo "cbt-bench on $(uname -m), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')); .ctk files in $dir ($(df --output=fstype "$dir" | tail -1))"
args=(--rounds "$ROUNDS")
[ "$BENCH_QUICK" = 1 ] && args+=(--quick)
build-bench/bench/cbt-bench "${args[@]}" "$dir"
bench_footer "the order of the mark loops shuffled per round; the cold query checked against the warm one."
if [ "${CBT_NBD:-1}" = 1 ]; then
  echo
  echo "== CBT through svmd: bench/nbd.sh CBT_ONLY=1 (Release build in build-bench) =="
  CBT_ONLY=1 SVM_BIN="$BENCH_TOP/build-bench/bin" "$BENCH_TOP/bench/nbd.sh"
fi
