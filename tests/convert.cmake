# Extents, zero detection, provisioning, the converter and svm-convert.
svm_unit_test(test-zero SOURCES unit/test-zero.c LIBS svmotion)
svm_unit_test(test-extents SOURCES unit/test-extents.c LIBS svmotion)
svm_unit_test(test-provision SOURCES unit/test-provision.c LIBS svmotion)
