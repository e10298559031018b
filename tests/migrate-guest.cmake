# Live moves with real guests (issue 8): QEMU booting Debian's kernel on the export, fio's nbd
# engine and qemu-io writing and verifying through it while `svmctl migrate` moves the disk.
# The guest is built once per build tree (tests/guest/make-guest.sh into build/guest).
foreach(_t guest fio qemu-io rate provisioning)
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/integ/migrate-${_t}.sh)
    svm_integ_test(migrate-${_t} migrate-${_t}.sh TIMEOUT 240)
    set_tests_properties(migrate-${_t} PROPERTIES LABELS "migrate;guest")
  endif()
endforeach()
