#!/usr/bin/env bash
# fio's nbd engine (libnbd) as the guest of a live move: 4 KiB random writes at depth 16 with
# crc32c-headed blocks over a 128 MiB region of a 256 MiB disk (filled with fio blocks in
# order first), at 2000 IOPS in one pass, each 256 writes read back and verified by fio while
# it writes (verify_backlog), from before `svmctl migrate` starts until well after the switchover,
# on one connection. The test stops fio through a trigger file once fio's write log shows
# thousands of writes issued after the move returned. Then: a full read-verify pass of the
# region through the export and from the destination file (fio: offset and crc32c of every
# block), every write fio issued found in the destination file (fio_check_last: a write lost
# by the mirror leaves an older, valid fio block that fio's verify cannot tell apart), and the
# export compared byte for byte with the destination file.
source "$(dirname "$0")/agent-lib.sh"
source "$(dirname "$0")/migrate-guest-lib.sh"
requires fio qemu-io nbdcopy
fio --enghelp=nbd >/dev/null 2>&1 || { echo "SKIP: fio without the nbd engine" >&2; exit 77; }

start_svmd
svmctl vm create vm1 --datastore ds1 --disk 256M >/dev/null
src=$(disk_file vm1 0)
U=$(uri vm1 0)
qemu_io_check "$U" "write -P 0x5a 160M 64M" "write -P 0xc3 250M 6M"   # fio never touches these
fio_fill "$U" 0 128M

fio_writer_start "$U" 0 128M --rate_iops=2000   # one pass: 16 s
before=$(stat -c %s "$T/fio-w.log")
move vm1 ds2
during=$(($(stat -c %s "$T/fio-w.log") - before))
[ "$during" -gt 0 ] || fail "fio wrote nothing while the move ran"
wait_file_grows "$T/fio-w.log" 98304        # thousands of writes issued after the move
fio_writer_stop

fio_verify_range "$U" 0 128M
check_moved vm1 ds2 "$src"
dst=$(disk_file vm1 0)
fio_verify_range "$dst" 0 128M
fio_check_last "$dst"
nbdcopy "$U" - | cmp - "$dst" || fail "the export and the destination file $dst differ"
qemu_io_check "$dst" "read -P 0x5a 160M 64M" "read -P 0xc3 250M 6M"
echo "migrate-fio: $FIO_WRITES writes and $FIO_READS verify reads, all good; fio's log grew by $during" \
  "bytes while the move ran"
echo PASS
