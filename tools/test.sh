#!/usr/bin/env bash
# Install what is needed, build three trees and run the tests on each:
#   build/       gcc, -Werror                (the build the programs and benchmarks use)
#   build-asan/  clang (or gcc), ASan+UBSan, -Werror: the whole suite
#   build-tsan/  clang (or gcc), TSan, -Werror: only the tests labelled "threads" (the unit
#                tests that run threads; tests/CMakeLists.txt), and only their programs are built
# Usage: tools/test.sh [ctest args...]      e.g. tools/test.sh -R cbt
set -euo pipefail
cd "$(dirname "$0")/.."
./tools/install-deps.sh

jobs=$(nproc)
cc_san=gcc
command -v clang >/dev/null && cc_san=clang

cmake -S . -B build -DCMAKE_C_COMPILER=gcc -DSVM_WERROR=ON >/dev/null
cmake --build build -j"$jobs"
cmake -S . -B build-asan -DCMAKE_C_COMPILER="$cc_san" -DSVM_WERROR=ON -DSVM_SANITIZE=ON \
      -DSVM_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$jobs"
cmake -S . -B build-tsan -DCMAKE_C_COMPILER="$cc_san" -DSVM_WERROR=ON -DSVM_TSAN=ON \
      -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-tsan -j"$jobs" --target svm-threads-tests

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
echo "== tests: build (gcc -Werror) =="
(cd build && ctest --output-on-failure -j"$jobs" "$@") || status=1
echo "== tests: build-asan ($cc_san, ASan+UBSan) =="
(cd build-asan && ctest --output-on-failure -j"$jobs" "$@") || status=1
# halt_on_error: a race fails the test instead of scrolling by in a passing one
echo "== tests: build-tsan ($cc_san, TSan, label threads) =="
(cd build-tsan && TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1} \
   ctest --output-on-failure -j"$jobs" -L threads "$@") || status=1
exit $status
