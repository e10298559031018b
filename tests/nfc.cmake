# The NFC channel: unit tests over socketpairs, the frame parser's fuzzer, integration tests
# with the svm-nfc driver over loopback TCP.
add_subdirectory(tools/svm-nfc)
svm_unit_test(test-nfc SOURCES unit/test-nfc.c LIBS svmotion)
set_tests_properties(test-nfc PROPERTIES LABELS threads)

# libFuzzer target for the frame parser and the receiver's state machine: clang, SVM_FUZZ=ON.
if(SVM_FUZZ AND CMAKE_C_COMPILER_ID MATCHES "Clang")
  add_executable(fuzz-nfc-frame fuzz/fuzz-nfc-frame.c
                 ${CMAKE_SOURCE_DIR}/nfc/frame.c ${CMAKE_SOURCE_DIR}/nfc/conn.c
                 ${CMAKE_SOURCE_DIR}/nfc/recv.c ${CMAKE_SOURCE_DIR}/nfc/rate.c)
  target_compile_options(fuzz-nfc-frame PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz-nfc-frame PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz-nfc-frame PRIVATE svm_common)
  set_target_properties(fuzz-nfc-frame PROPERTIES RUNTIME_OUTPUT_DIRECTORY
                        ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME fuzz-nfc-frame
           COMMAND fuzz-nfc-frame -max_total_time=20 -max_len=65536 -timeout=10)
  set_tests_properties(fuzz-nfc-frame PROPERTIES TIMEOUT 120)
endif()

svm_integ_test(nfc-copy nfc-copy.sh TIMEOUT 120)
svm_integ_test(nfc-resume nfc-resume.sh TIMEOUT 120)
svm_integ_test(nfc-rate nfc-rate.sh TIMEOUT 60)
svm_integ_test(nfc-linkcut nfc-linkcut.sh TIMEOUT 120)
