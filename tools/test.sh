#!/usr/bin/env bash
# Install what is needed, build twice and run the whole suite on both builds:
#   build/       gcc, -Werror                (the build the programs and benchmarks use)
#   build-asan/  clang (or gcc), ASan+UBSan, -Werror
# Usage: tools/test.sh [ctest args...]      e.g. tools/test.sh -R cbt
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/install-deps.sh

jobs=$(nproc)
cc_asan=gcc
command -v clang >/dev/null && cc_asan=clang

cmake -S . -B build -DCMAKE_C_COMPILER=gcc -DSVM_WERROR=ON >/dev/null
cmake --build build -j"$jobs"
cmake -S . -B build-asan -DCMAKE_C_COMPILER="$cc_asan" -DSVM_WERROR=ON -DSVM_SANITIZE=ON \
      -DSVM_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$jobs"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
echo "== tests: build (gcc -Werror) =="
(cd build && ctest --output-on-failure -j"$jobs" "$@") || status=1
echo "== tests: build-asan ($cc_asan, ASan+UBSan) =="
(cd build-asan && ctest --output-on-failure -j"$jobs" "$@") || status=1
exit $status
