# A shadow model of the NBD export: libnbd clients with many overlapping requests in flight
# across pauses and live swaps of the layer stack, every acknowledged write checked.
svm_unit_test(test-export-model SOURCES unit/test-export-model.c LIBS svmotion)
# the same with every request on the I/O engine (no page-cache fast path, svm/disk/layer.c)
add_test(NAME test-export-model-engine COMMAND test-export-model)
set_tests_properties(test-export-model-engine PROPERTIES
                     ENVIRONMENT "${SVM_TEST_ENV};SVM_NBD_INLINE=0" SKIP_RETURN_CODE 77)
