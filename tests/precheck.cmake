# The migration network and the prechecks (svm/net, svm/precheck, svmctl precheck): two hosts
# in network namespaces (tests/integ/netns-lib.sh), faults injected, exact messages asserted.
svm_unit_test(test-precheck SOURCES unit/test-precheck.c LIBS svmotion)
svm_integ_test(precheck-net precheck-net.sh TIMEOUT 120)
svm_integ_test(precheck-routed precheck-routed.sh TIMEOUT 120)
svm_integ_test(precheck-tls-ds precheck-tls-ds.sh TIMEOUT 120)
svm_integ_test(precheck-vlan-delay precheck-vlan-delay.sh TIMEOUT 120)
