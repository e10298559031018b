# The NFC channel: unit tests over socketpairs, the frame parser's fuzzer, integration tests
# with the svm-nfc driver over loopback TCP.
add_subdirectory(tools/svm-nfc)
