# The I/O engine layer: the same unit tests run once per backend.
svm_unit_test(test-io SOURCES unit/test-io.c LIBS svmotion)
set_tests_properties(test-io PROPERTIES
                     ENVIRONMENT "${SVM_TEST_ENV};SVM_IO_ENGINE=io_uring"
                     LABELS threads)   # completion threads: tools/test.sh runs it under TSan
add_test(NAME test-io-libaio COMMAND test-io)
set_tests_properties(test-io-libaio PROPERTIES
                     ENVIRONMENT "${SVM_TEST_ENV};SVM_IO_ENGINE=libaio" SKIP_RETURN_CODE 77
                     LABELS threads)
