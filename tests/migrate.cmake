# Live moves between datastores (svm/migrate, svm/agent/move.c): real svmd, real NBD guests
# (qemu-io) writing through the move, failures of every kind, crash and restart.
svm_integ_test(migrate-basic migrate-basic.sh TIMEOUT 180)
svm_integ_test(migrate-cancel migrate-cancel.sh TIMEOUT 180)
svm_integ_test(migrate-enospc migrate-enospc.sh TIMEOUT 180)
svm_integ_test(migrate-eio migrate-eio.sh TIMEOUT 180)
svm_integ_test(migrate-crash migrate-crash.sh TIMEOUT 180)
svm_integ_test(migrate-cbt migrate-cbt.sh TIMEOUT 180)
svm_integ_test(migrate-control migrate-control.sh TIMEOUT 120)
svm_integ_test(migrate-queue migrate-queue.sh TIMEOUT 180)
# the journal parser (a file read back after a crash) and the limits
svm_unit_test(test-migrate SOURCES unit/test-migrate.c LIBS svmotion)
svm_integ_test(migrate-switch-fail migrate-switch-fail.sh TIMEOUT 120)
