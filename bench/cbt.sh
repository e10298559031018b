#!/usr/bin/env bash
# Changed-block tracking benchmark: builds a Release tree (build-bench/) and runs
# bench/cbt/cbt-bench, which prints each number next to its target (issue 3):
#   mark of an already-marked block <= 5 ns; query of a 1 TiB disk with 1% changed over
#   100 epochs < 10 ms; <= 32 MiB of memory per TiB at 64 KiB granularity.
# Usage: bench/cbt.sh [--quick] [DIR]     DIR: where the first-mark test puts its .ctk
#                                         (default $TMPDIR or /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j"$(nproc)" --target cbt-bench >/dev/null
echo "cbt-bench on $(uname -m), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'))"
exec build-bench/bench/cbt-bench "$@"
