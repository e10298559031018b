# Changed-block tracking: unit tests, the model-based test, the .ctk fuzzer, the benchmark.
svm_unit_test(test-cbt SOURCES unit/test-cbt.c LIBS svmcbt)
# tests/unit/data/ctk-v1.ctk: a version-1 .ctk written by the build before the activity log.
target_compile_definitions(test-cbt PRIVATE CBT_TEST_DATA="${CMAKE_SOURCE_DIR}/tests/unit/data")
svm_unit_test(test-cbt-model SOURCES unit/test-cbt-model.c LIBS svmcbt)
set_tests_properties(test-cbt-model PROPERTIES TIMEOUT 300)
# Under TSan (tools/test.sh: ctest -L threads in build-tsan): test-cbt marks from several
# threads at once. test-cbt-model starts no thread itself but checks the tracker's mutex use
# across its fork-and-kill -9 crashes (8 s under TSan, most of the TSan run); it closes its
# tracker before each fork and the process is single-threaded then, so TSan's fork-in-a-
# threaded-process checks (die_after_fork) have nothing to object to.
set_tests_properties(test-cbt test-cbt-model PROPERTIES LABELS threads)

# bench/cbt.sh builds this in a Release tree and runs it.
add_executable(cbt-bench ${CMAKE_SOURCE_DIR}/bench/cbt/cbt-bench.c)
target_link_libraries(cbt-bench PRIVATE svmcbt)
set_target_properties(cbt-bench PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)

# libFuzzer target for the .ctk parser: clang only, SVM_FUZZ=ON (tools/test.sh's ASan build).
# The library is compiled again with coverage instrumentation for the fuzzer to steer by.
if(SVM_FUZZ AND CMAKE_C_COMPILER_ID MATCHES "Clang")
  file(GLOB _cbt_fuzz_src CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/cbt/*.c)
  add_library(svmcbt_fuzz STATIC ${_cbt_fuzz_src})
  target_compile_options(svmcbt_fuzz PRIVATE -fsanitize=fuzzer-no-link,address,undefined)
  target_link_libraries(svmcbt_fuzz PUBLIC svm_common PkgConfig::SSL Threads::Threads)

  add_executable(fuzz-ctk fuzz/fuzz-ctk.c)
  target_compile_options(fuzz-ctk PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz-ctk PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz-ctk PRIVATE svmcbt_fuzz)
  set_target_properties(fuzz-ctk PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)

  # Seeds: valid .ctk files made by the library itself (same source, no fuzzer main).
  add_executable(fuzz-ctk-seeds fuzz/fuzz-ctk.c)
  target_compile_definitions(fuzz-ctk-seeds PRIVATE FUZZ_CTK_SEEDS_MAIN)
  target_link_libraries(fuzz-ctk-seeds PRIVATE svmcbt)
  set_target_properties(fuzz-ctk-seeds PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)

  add_test(NAME fuzz-ctk COMMAND sh -c
    "d=$(mktemp -d) && trap 'rm -rf \"$d\"' EXIT && \"$0\" \"$d/seeds\" && cp \"$2\" \"$d/seeds/\" && mkdir \"$d/corpus\" && \"$1\" -max_total_time=20 -rss_limit_mb=1024 -max_len=65536 \"$d/corpus\" \"$d/seeds\""
    $<TARGET_FILE:fuzz-ctk-seeds> $<TARGET_FILE:fuzz-ctk> ${CMAKE_SOURCE_DIR}/tests/unit/data/ctk-v1.ctk)
  set_tests_properties(fuzz-ctk PROPERTIES TIMEOUT 120 ENVIRONMENT "${SVM_TEST_ENV}")
endif()

# A full datastore (a small tmpfs) and recovery, through svmd (root: mounts a tmpfs).
svm_integ_test(cbt-enospc cbt-enospc.sh TIMEOUT 120)
# A damaged .ctk page through svmd: its blocks reported, the log says so.
svm_integ_test(cbt-damage cbt-damage.sh TIMEOUT 120)
