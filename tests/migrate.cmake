# Live moves between datastores (svm/migrate, svm/agent/move.c): real svmd, real NBD guests
# (qemu-io) writing through the move, failures of every kind, crash and restart.
svm_integ_test(migrate-basic migrate-basic.sh TIMEOUT 180)
svm_integ_test(migrate-cancel migrate-cancel.sh TIMEOUT 180)
svm_integ_test(migrate-enospc migrate-enospc.sh TIMEOUT 180)
svm_integ_test(migrate-eio migrate-eio.sh TIMEOUT 180)
svm_integ_test(migrate-crash migrate-crash.sh TIMEOUT 180)
svm_integ_test(migrate-cbt migrate-cbt.sh TIMEOUT 180)
svm_integ_test(migrate-control migrate-control.sh TIMEOUT 120)
svm_integ_test(migrate-queue migrate-queue.sh TIMEOUT 180)
# the journal parser (a file read back after a crash) and the limits
svm_unit_test(test-migrate SOURCES unit/test-migrate.c LIBS svmotion)
svm_integ_test(migrate-switch-fail migrate-switch-fail.sh TIMEOUT 120)

# libFuzzer target for the journal parser (clang, SVM_FUZZ=ON as tools/test.sh's ASan build)
if(SVM_FUZZ AND CMAKE_C_COMPILER_ID MATCHES "Clang")
  add_executable(fuzz-journal fuzz/fuzz-journal.c ${CMAKE_SOURCE_DIR}/svm/migrate/journal.c)
  target_compile_options(fuzz-journal PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz-journal PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz-journal PRIVATE svm_common)
  set_target_properties(fuzz-journal PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME fuzz-journal COMMAND fuzz-journal -max_total_time=10 -max_len=8192 -timeout=10)
  set_tests_properties(fuzz-journal PROPERTIES TIMEOUT 120)
endif()
