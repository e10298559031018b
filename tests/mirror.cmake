# The synchronous mirror (issue 8): its region table, the layer and bulk copy one behaviour at
# a time, and a model of guest writes on several threads racing the copier.
svm_unit_test(test-mirror-region SOURCES unit/test-mirror-region.c LIBS svmotion)
svm_unit_test(test-mirror SOURCES unit/test-mirror.c LIBS svmotion)
set_tests_properties(test-mirror-region test-mirror PROPERTIES LABELS threads)
svm_unit_test(test-mirror-model SOURCES unit/test-mirror-model.c LIBS svmotion)
set_tests_properties(test-mirror-model PROPERTIES LABELS threads TIMEOUT 300)
# the same with every request of the raw layers on the I/O engine (no inline fast path)
add_test(NAME test-mirror-model-engine COMMAND test-mirror-model)
set_tests_properties(test-mirror-model-engine PROPERTIES LABELS threads TIMEOUT 300
                     ENVIRONMENT "${SVM_TEST_ENV};SVM_NBD_INLINE=0;SVM_MIRROR_SEEDS=64"
                     SKIP_RETURN_CODE 77)
# the mirror under a real NBD export: libnbd clients writing through the mirror's swap-in, the
# copy, and the switchover (source and destination identical while paused)
svm_unit_test(test-mirror-export SOURCES unit/test-mirror-export.c LIBS svmotion)
set_tests_properties(test-mirror-export PROPERTIES LABELS threads TIMEOUT 300)
