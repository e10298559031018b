#!/usr/bin/env bash
# Live swap of the layer under a writing client, the way a datastore move ends: fio writes
# the whole disk (rate-limited, so the swap lands mid-way) while svm-nbd-serve is told
# (SIGUSR1) to pause, copy the image, switch the export to the copy and resume. fio must see
# no error and its crc32c verification (read back through the export, from the new file)
# must pass; the new file alone, served again, must verify too; the old one must not.
source "$(dirname "$0")/nbd-lib.sh"
requires fio
fio --enghelp=nbd >/dev/null 2>&1 || { echo "SKIP: fio without the nbd engine" >&2; exit 77; }

disk=$NBD_TMP/disk.raw
moved=$NBD_TMP/moved.raw
truncate -s 64M "$disk"
start_serve "$disk" --swap-to "$moved"

job=(--name=swap --ioengine=nbd --rw=write --bs=64k --iodepth=8 --size=64M
     --verify=crc32c --verify_fatal=1)
fio "${job[@]}" --uri="$NBD_URI" --rate=24m --do_verify=1 --output-format=json \
  --output="$NBD_TMP/fio.json" &
fio_pid=$!
NBD_PIDS+=("$fio_pid")
sleep 1
kill -USR1 "$SERVE_PID"
rc=0
wait "$fio_pid" || rc=$?
[ "$rc" -eq 0 ] || fail "fio failed across the swap (exit $rc)"
python3 - "$NBD_TMP/fio.json" <<'PY' || fail "fio saw errors across the swap"
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
assert j["error"] == 0, j["error"]
assert j["write"]["io_bytes"] == 64 << 20, j["write"]["io_bytes"]
PY
swapline=$(grep "swapped to $moved: paused" "$NBD_TMP/serve.log") || fail "no swap in the log"
grep -q 'nbd: client' "$NBD_TMP/serve.log" && fail "a client had trouble: $(cat "$NBD_TMP/serve.log")"

# what the export serves now is the new file
nbdcopy "$NBD_URI" "$NBD_TMP/served.raw" || fail "nbdcopy"
stop_serve
cmp "$NBD_TMP/served.raw" "$moved" || fail "the export does not serve the new file"
cmp -s "$disk" "$moved" && fail "the old file got the writes made after the swap"

# the new file on its own holds everything fio wrote
start_serve "$moved"
fio "${job[@]}" --uri="$NBD_URI" --verify_only=1 >"$NBD_TMP/verify.log" 2>&1 \
  || fail "fio verify of the new file: $(tail -5 "$NBD_TMP/verify.log")"
stop_serve
echo "nbd-swap: ok (${swapline#svm-nbd-serve: })"
