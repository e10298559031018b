# The NBD server: the pure parser, the export in process with libnbd clients, and
# integration tests with real NBD clients against svm-nbd-serve.
svm_unit_test(test-nbd-parse SOURCES unit/test-nbd-parse.c LIBS svmotion)
svm_unit_test(test-nbd-export SOURCES unit/test-nbd-export.c LIBS svmotion)
