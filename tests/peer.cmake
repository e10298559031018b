# The peer link and the cold host move (svm/peer, svm/agent/peer.c, svm/agent/hostmove.c):
# real agents on loopback and in network namespaces.
svm_integ_test(peer-refuse peer-refuse.sh TIMEOUT 120)
svm_integ_test(hostmove-loopback hostmove-loopback.sh TIMEOUT 180)
svm_integ_test(hostmove-faults hostmove-faults.sh TIMEOUT 180)
svm_integ_test(hostmove-netns hostmove-netns.sh TIMEOUT 180)

# libFuzzer target for the peer link's message parser (headers, payloads, the requests the
# server reads). clang only, SVM_FUZZ=ON.
if(SVM_FUZZ AND CMAKE_C_COMPILER_ID MATCHES "Clang")
  add_executable(fuzz-peer fuzz/fuzz-peer.c ${CMAKE_SOURCE_DIR}/svm/peer/proto.c)
  target_compile_options(fuzz-peer PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz-peer PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz-peer PRIVATE svm_common)
  set_target_properties(fuzz-peer PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME fuzz-peer COMMAND fuzz-peer -max_total_time=10 -max_len=20000 -timeout=10)
  set_tests_properties(fuzz-peer PROPERTIES TIMEOUT 120)
endif()

# The peer link's messages and the server's state table (a real server over loopback TLS).
svm_unit_test(test-peer SOURCES unit/test-peer.c LIBS svmotion)
set_tests_properties(test-peer PROPERTIES LABELS threads)
