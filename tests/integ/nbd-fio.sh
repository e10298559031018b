#!/usr/bin/env bash
# fio's nbd engine against svm-nbd-serve, with data verification: 4 KiB random writes at
# iodepth 32 with flushes, several connections at once on disjoint ranges (multi-conn), and
# 1 MiB sequential writes; every block read back and checked with crc32c.
source "$(dirname "$0")/nbd-lib.sh"
requires fio
fio --enghelp=nbd >/dev/null 2>&1 || { echo "SKIP: fio without the nbd engine" >&2; exit 77; }

disk=$NBD_TMP/disk.raw
truncate -s 128M "$disk"
start_serve "$disk" --dirty-layer

run_fio()
{
  local name=$1
  shift
  fio --name="$name" --ioengine=nbd --uri="$NBD_URI" --output-format=json \
    --output="$NBD_TMP/$name.json" "$@" || fail "fio $name: exit $?"
  python3 - "$NBD_TMP/$name.json" <<'PY' || fail "fio $name reported errors"
import json, sys
d = json.load(open(sys.argv[1]))
for j in d["jobs"]:
    assert j["error"] == 0, j["error"]
    assert j["write"]["io_bytes"] > 0
PY
}

run_fio rand4k --rw=randwrite --bs=4k --iodepth=32 --size=32M --fsync=64 \
  --verify=crc32c --do_verify=1 --verify_fatal=1
run_fio multi --rw=randwrite --bs=16k --iodepth=16 --size=16M --numjobs=4 --offset_increment=16M \
  --verify=crc32c --do_verify=1 --verify_fatal=1 --group_reporting=0
run_fio seq1m --rw=write --bs=1M --iodepth=8 --size=64M --offset=64M \
  --verify=crc32c --do_verify=1 --verify_fatal=1
# and a mixed random read/write load (no verification: reads race writes by design)
run_fio mixed --rw=randrw --bs=4k --iodepth=64 --size=32M --runtime=2 --time_based=1
stop_serve
echo "nbd-fio: ok"
