# The NFC channel: unit tests over socketpairs, the frame parser's fuzzer, integration tests
# with the svm-nfc driver over loopback TCP.
add_subdirectory(tools/svm-nfc)
svm_unit_test(test-nfc SOURCES unit/test-nfc.c LIBS svmotion)
set_tests_properties(test-nfc PROPERTIES LABELS threads)
