# Live moves between datastores (svm/migrate, svm/agent/move.c): real svmd, real NBD guests
# (qemu-io) writing through the move, failures of every kind, crash and restart.
svm_integ_test(migrate-basic migrate-basic.sh TIMEOUT 180)
