# Extents, zero detection, provisioning, the copy engine, the converter and svm-convert.
svm_unit_test(test-zero SOURCES unit/test-zero.c LIBS svmotion)
svm_unit_test(test-extents SOURCES unit/test-extents.c LIBS svmotion)
svm_unit_test(test-provision SOURCES unit/test-provision.c LIBS svmotion)
svm_unit_test(test-lock SOURCES unit/test-lock.c LIBS svmotion)
svm_unit_test(test-convert SOURCES unit/test-convert.c LIBS svmotion)
svm_unit_test(test-convert-copy SOURCES unit/test-convert-copy.c LIBS svmotion)
svm_unit_test(test-convert-common SOURCES unit/test-convert-common.c LIBS svm_common)
svm_integ_test(convert-provisioning convert-provisioning.sh TIMEOUT 120)
svm_integ_test(convert-errors convert-errors.sh TIMEOUT 120)
svm_integ_test(convert-nbd convert-nbd.sh TIMEOUT 120)
svm_integ_test(convert-huge convert-huge.sh TIMEOUT 120)
# the same conversions through the libaio engine
add_test(NAME convert-provisioning-libaio
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integ/convert-provisioning.sh)
set_tests_properties(convert-provisioning-libaio PROPERTIES
                     ENVIRONMENT "${SVM_TEST_ENV};SVM_IO_ENGINE=libaio" SKIP_RETURN_CODE 77
                     TIMEOUT 120)
svm_integ_test(convert-faults convert-faults.sh TIMEOUT 120)
