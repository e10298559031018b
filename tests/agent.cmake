# The agent: descriptor, control protocol, datastore unit tests; integration tests with a real svmd.
svm_unit_test(test-descriptor SOURCES unit/test-descriptor.c LIBS svmotion)
svm_unit_test(test-control SOURCES unit/test-control.c LIBS svmotion)
svm_unit_test(test-datastore SOURCES unit/test-datastore.c LIBS svmotion)
svm_integ_test(agent-basic agent-basic.sh TIMEOUT 120)
svm_integ_test(agent-nbd agent-nbd.sh TIMEOUT 120)
svm_integ_test(agent-crash agent-crash.sh TIMEOUT 120)
svm_integ_test(agent-descriptor agent-descriptor.sh TIMEOUT 120)
