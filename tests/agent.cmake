# The agent: descriptor, control protocol, datastore unit tests; integration tests with a real svmd.
svm_unit_test(test-descriptor SOURCES unit/test-descriptor.c LIBS svmotion)
svm_unit_test(test-control SOURCES unit/test-control.c LIBS svmotion)
set_tests_properties(test-control PROPERTIES LABELS threads)   # the server runs in a thread
svm_unit_test(test-datastore SOURCES unit/test-datastore.c LIBS svmotion)
svm_integ_test(agent-basic agent-basic.sh TIMEOUT 120)
svm_integ_test(agent-nbd agent-nbd.sh TIMEOUT 120)
svm_integ_test(agent-crash agent-crash.sh TIMEOUT 120)
svm_integ_test(agent-descriptor agent-descriptor.sh TIMEOUT 120)

# libFuzzer targets for the parsers of untrusted input: descriptors (from disk) and control
# requests (from any local process). clang only, SVM_FUZZ=ON (tools/test.sh's ASan build).
if(SVM_FUZZ AND CMAKE_C_COMPILER_ID MATCHES "Clang")
  foreach(_fz descriptor control)
    add_executable(fuzz-${_fz} fuzz/fuzz-${_fz}.c ${CMAKE_SOURCE_DIR}/svm/agent/descriptor.c
                   ${CMAKE_SOURCE_DIR}/svm/control/proto.c)
    target_compile_options(fuzz-${_fz} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_options(fuzz-${_fz} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(fuzz-${_fz} PRIVATE svm_common)
    set_target_properties(fuzz-${_fz} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
    add_test(NAME fuzz-${_fz} COMMAND fuzz-${_fz} -max_total_time=10 -max_len=8192 -timeout=10)
    set_tests_properties(fuzz-${_fz} PROPERTIES TIMEOUT 120)
  endforeach()
endif()
svm_integ_test(agent-stop-hung agent-stop-hung.sh TIMEOUT 120)
