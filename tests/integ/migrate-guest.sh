#!/usr/bin/env bash
# A real QEMU guest moved live: Debian's kernel and a busybox initramfs (tests/guest/, built
# from Debian packages on first use and cached in the build tree) boot under TCG with their
# virtio disk on svmd's NBD export. The guest writes its pattern with O_DIRECT slot after slot,
# reads every pass back and compares, and keeps doing so while `svmctl migrate` moves the disk
# from ds1 to ds2 and after the switchover, until the test writes STOP on its control disk.
# Checked: the guest's own verdict (GUEST-OK, every pass verified by the guest), passes before,
# during (the copier is capped so that the move lasts several passes) and after the move on
# the same connection, the destination file holding the last pass
# of every slot (from the host, after the guest stopped), the data written before the guest
# booted, and the source folder gone.
source "$(dirname "$0")/agent-lib.sh"
source "$(dirname "$0")/migrate-guest-lib.sh"
source "$(dirname "$0")/../guest/guest-lib.sh"
requires qemu-system-x86_64 qemu-io apt-get dpkg cpio
mg_on_exit _guest_stop_qemu

guest_build
start_svmd
svmctl vm create vm1 --datastore ds1 --disk 96M >/dev/null
src=$(disk_file vm1 0)
U=$(uri vm1 0)
gb=$(guest_bytes)
# data the guest never touches, above its slots: the copier must carry it
qemu_io_check "$U" "write -P 0x5a $((gb + 1048576)) 24M" "write -P 0xa5 $((80 << 20)) 8M"

guest_start "$SVM_STATE/nbd/vm1-disk0.sock" vm1/disk0
guest_wait_pass 2 120
before=$(guest_passes)
# the copier capped at 8 MiB/s: 40 MiB of data take 5 s, so the guest completes passes while
# the move runs, not only before and after it
move vm1 ds2 --rate 8M
during=$(($(guest_passes) - before))
after_move=$(guest_passes)
[ "$during" -ge 1 ] || fail "the guest completed no pass during the move"
# the guest goes on after the switchover on the same connection: three more verified passes
guest_wait_pass $((after_move + 3)) 120
guest_stop
check_moved vm1 ds2 "$src"
dst=$(disk_file vm1 0)
guest_check_disk "$dst"
qemu_io_check "$dst" "read -P 0x5a $((gb + 1048576)) 24M" "read -P 0xa5 $((80 << 20)) 8M"
[ ! -e "$T/ds1/vm1" ] || fail "the VM's folder is still in ds1"
echo "migrate-guest: guest OK after $GUEST_PASSES_DONE passes ($before before the move, $during" \
  "completed during it, $((GUEST_PASSES_DONE - after_move)) after it)"
echo PASS
