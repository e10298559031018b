# The NBD server: the pure parser, the export in process with libnbd clients, and
# integration tests with real NBD clients against svm-nbd-serve (a test program, built here).
add_subdirectory(tools/svm-nbd-serve)
svm_unit_test(test-nbd-parse SOURCES unit/test-nbd-parse.c LIBS svmotion)
svm_unit_test(test-nbd-export SOURCES unit/test-nbd-export.c LIBS svmotion)
svm_unit_test(test-nbd-log SOURCES unit/test-nbd-log.c LIBS svmotion)
# the same with every request on the I/O engine (no page-cache fast path, svm/disk/layer.c)
add_test(NAME test-nbd-export-engine COMMAND test-nbd-export)
set_tests_properties(test-nbd-export-engine PROPERTIES
                     ENVIRONMENT "${SVM_TEST_ENV};SVM_NBD_INLINE=0" SKIP_RETURN_CODE 77)

svm_integ_test(nbd-clients nbd-clients.sh TIMEOUT 120)
svm_integ_test(nbd-nbdsh nbd-nbdsh.sh TIMEOUT 120)
svm_integ_test(nbd-fio nbd-fio.sh TIMEOUT 120)
svm_integ_test(nbd-fio-engine nbd-fio.sh TIMEOUT 120)
set_tests_properties(nbd-fio-engine PROPERTIES ENVIRONMENT "${SVM_TEST_ENV};SVM_NBD_INLINE=0")
svm_integ_test(nbd-swap nbd-swap.sh TIMEOUT 120)
svm_integ_test(nbd-ctk-swap nbd-ctk-swap.sh TIMEOUT 120)
svm_integ_test(nbd-badclient nbd-badclient.sh TIMEOUT 120)

# libFuzzer on the request/option parser: a short run in the suite (SVM_FUZZ=ON, clang only).
if(SVM_FUZZ AND CMAKE_C_COMPILER_ID MATCHES "Clang")
  add_executable(fuzz-nbd-request fuzz/fuzz-nbd-request.c ${CMAKE_SOURCE_DIR}/svm/nbd/parse.c)
  target_compile_options(fuzz-nbd-request PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz-nbd-request PRIVATE -fsanitize=fuzzer,address,undefined)
  set_target_properties(fuzz-nbd-request PROPERTIES RUNTIME_OUTPUT_DIRECTORY
                        ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME fuzz-nbd-request
           COMMAND fuzz-nbd-request -max_total_time=20 -max_len=4096 -timeout=10)
  set_tests_properties(fuzz-nbd-request PROPERTIES TIMEOUT 120)
endif()
svm_integ_test(nbd-shortread nbd-shortread.sh TIMEOUT 120)
svm_integ_test(nbd-threads nbd-threads.sh TIMEOUT 120)
svm_integ_test(nbd-limits nbd-limits.sh TIMEOUT 120)
svm_integ_test(nbd-fdlimit nbd-fdlimit.sh TIMEOUT 180)
svm_integ_test(nbd-tcp-options nbd-tcp-options.sh TIMEOUT 120)
svm_integ_test(nbd-tls nbd-tls.sh TIMEOUT 120)
