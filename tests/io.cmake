# The I/O engine layer: the same unit tests run once per backend.
svm_unit_test(test-io SOURCES unit/test-io.c LIBS svmotion)
set_tests_properties(test-io PROPERTIES
                     ENVIRONMENT "${SVM_TEST_ENV};SVM_IO_ENGINE=io_uring"
                     LABELS threads)
# In the TSan run (label threads), under a second. It starts no thread today, so TSan has
# nothing to compare in it yet: an engine is one per thread (svm/io/io.h), and a test that
# shares one between threads belongs here. The libaio run of the same program is left out.
add_test(NAME test-io-libaio COMMAND test-io)
set_tests_properties(test-io-libaio PROPERTIES
                     ENVIRONMENT "${SVM_TEST_ENV};SVM_IO_ENGINE=libaio" SKIP_RETURN_CODE 77)
