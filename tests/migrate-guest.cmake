# Live moves with real guests (issue 8): a QEMU guest booting Debian's kernel on the export,
# fio's nbd engine and qemu-io writing and verifying through it while `svmctl migrate` moves the
# disk; a write rate above the copier's; provisioning changed on the way. The QEMU guest is
# built once per build tree (tests/guest/make-guest.sh into build/guest).
foreach(_t guest fio qemu-io rate provisioning)
  svm_integ_test(migrate-${_t} migrate-${_t}.sh TIMEOUT 240)
  set_tests_properties(migrate-${_t} PROPERTIES LABELS "migrate;guest")
endforeach()
