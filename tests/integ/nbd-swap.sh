#!/usr/bin/env bash
# Live swap of the layer under a writing client, the way a datastore move ends: fio writes
# the whole disk (rate-limited) while svm-nbd-serve is told (SIGUSR1) to pause, copy the image,
# switch the export to the copy and resume. fio must see no error and its crc32c verification
# (read back through the export, from the new file) must pass; the new file alone, served
# again, must verify too; the old one must not.
#
# The swap is made to land mid-way and checked to have: it is triggered once fio has
# demonstrably written half the disk (the file's allocated size, polled), and fio's
# per-I/O latency log (on CLOCK_MONOTONIC, like the server's swap log line) must show writes
# completed before the pause, writes sent after the resume, and writes in flight at the
# switch: sent before it (by fio's clock) and executed after it (their data is in the new
# file only).
source "$(dirname "$0")/nbd-lib.sh"
requires fio
fio --enghelp=nbd >/dev/null 2>&1 || { echo "SKIP: fio without the nbd engine" >&2; exit 77; }

disk=$NBD_TMP/disk.raw
moved=$NBD_TMP/moved.raw
size=$((64 << 20))
truncate -s "$size" "$disk"
start_serve "$disk" --swap-to "$moved"

job=(--name=swap --ioengine=nbd --rw=write --bs=16k --iodepth=8 --size=64M
     --verify=crc32c --verify_fatal=1)
# log_alternate_epoch_clock_id=1: CLOCK_MONOTONIC, in ms, as svm-nbd-serve logs the cut (ns)
fio "${job[@]}" --uri="$NBD_URI" --rate=24m --do_verify=1 --output-format=json \
  --output="$NBD_TMP/fio.json" --write_lat_log="$NBD_TMP/io" --log_offset=1 \
  --log_alternate_epoch=1 --log_alternate_epoch_clock_id=1 &
fio_pid=$!
NBD_PIDS+=("$fio_pid")

# Trigger the swap once fio has written half the disk (polled, 20 s at most): the copy of that
# half is what holds the pause open long enough for fio to send writes into it.
for i in $(seq 1 2000); do
  [ $(($(stat -c %b "$disk") * 512)) -ge $((size / 2)) ] && break
  kill -0 "$fio_pid" 2>/dev/null || fail "fio ended before it wrote half the disk"
  [ "$i" -lt 2000 ] || fail "fio wrote less than half the disk in 20 s"
  sleep 0.01
done
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

# Writes before, after and across the cut. Times: the server's in ns; fio's completion time t
# in whole ms, truncated twice (the time since fio's start, and the start's CLOCK_MONOTONIC),
# so a write's true completion lies in [t, t + 2 ms) - taken with 0.5 ms to spare either side;
# its issue time = completion - latency (ns).
inflight=$(python3 - "$NBD_TMP"/io_lat.*.log "$disk" "$swapline" <<'PY'
import re, sys
log, old, line = sys.argv[1:4]
m = re.search(r"pause (\d+) drained (\d+) switched (\d+) resumed (\d+)", line)
assert m, "the swap log line has no monotonic times: " + line
pause, drained, switched, resumed = map(int, m.groups())
MS = 1000000
f = open(old, "rb")
def in_old(off, bs):            # fio's verified blocks are never all zeros
    f.seek(off)
    return f.read(bs).strip(b"\0") != b""
before = after = 0
across = []
for row in open(log):
    t, lat, ddir, bs, off = (int(v) for v in row.split(",")[:5])
    if ddir != 1:
        continue
    lo, hi = t * MS - MS // 2, t * MS + 2 * MS + MS // 2   # bounds of the true completion
    if hi < pause:
        before += 1
        assert in_old(off, bs), "write at %d completed before the pause is not in the old file" % off
    if lo - lat > resumed:
        after += 1
        assert not in_old(off, bs), "write at %d sent after the resume is in the old file" % off
    # sent before the switch (by fio's clock), executed on the new layer (not in the old file)
    if hi - lat < switched and not in_old(off, bs):
        across.append((off, lat))
print("writes: %d completed before the pause, %d sent after the resume, %d in flight at the "
      "switch (held %.1f-%.1f ms)" % (before, after, len(across),
      min([l for _, l in across] or [0]) / MS, max([l for _, l in across] or [0]) / MS),
      file=sys.stderr)
assert before > 0, "no write completed before the pause: the swap was not mid-way"
assert after > 0, "no write sent after the resume: the swap was not mid-way"
assert across, "no write was in flight at the switch (pause %.1f ms before it)" % (
    (switched - pause) / MS)
print(len(across))
PY
) || fail "the swap did not happen while writes were in flight"

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
echo "nbd-swap: ok, $inflight writes in flight at the switch (${swapline#svm-nbd-serve: })"
