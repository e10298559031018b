# The agent: descriptor, control protocol, datastore unit tests; integration tests with a real svmd.
svm_unit_test(test-descriptor SOURCES unit/test-descriptor.c LIBS svmotion)
svm_unit_test(test-control SOURCES unit/test-control.c LIBS svmotion)
svm_unit_test(test-datastore SOURCES unit/test-datastore.c LIBS svmotion)
