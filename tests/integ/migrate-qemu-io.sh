#!/usr/bin/env bash
# qemu-io as the guest of a live move: one qemu-io process, one NBD connection, writing
# patterns (`write -P`) of 64 KiB to 512 slots of a 128 MiB disk in a pseudo-random order, one
# write after another, each acknowledged before the next, from before `svmctl migrate` starts
# until 200 writes after it returned. Every slot's last pattern is then read back with `read -P`:
# on the same connection, on a new one, and from the destination file. The driver counts the
# writes acknowledged before, during and after the move.
source "$(dirname "$0")/agent-lib.sh"
source "$(dirname "$0")/migrate-guest-lib.sh"
requires qemu-io
QIO_PID=
mg_on_exit '[ -z "$QIO_PID" ] || { kill "$QIO_PID"; wait "$QIO_PID"; }'

start_svmd
svmctl vm create vm1 --datastore ds1 --disk 128M >/dev/null
src=$(disk_file vm1 0)
U=$(uri vm1 0)
qemu_io_check "$U" "write -P 0x77 96M 32M"      # data the writer never touches

# The driver: writes until $T/stop exists; "phase" files tell it where the move is. It writes
# the final map (slot -> pattern) to $T/map.json after checking it on its own connection.
python3 - "$U" "$T" <<'PY' >"$T/driver.out" 2>&1 &
import json, os, random, subprocess, sys
uri, t = sys.argv[1], sys.argv[2]
q = subprocess.Popen(["qemu-io", "-f", "raw", uri], stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
def cmd(c, want):
    q.stdin.write(c + "\n"); q.stdin.flush()
    while True:
        line = q.stdout.readline()
        if not line:
            sys.exit(f"qemu-io exited during '{c}'")
        if "fail" in line.lower() or "error" in line.lower():
            sys.exit(f"'{c}': {line.strip()}")
        if want in line:
            return
rng = random.Random(8)
slot, n = 65536, 512
last, counts, i = {}, {"before": 0, "during": 0, "after": 0}, 0
open(os.path.join(t, "driver.started"), "w").close()
while not os.path.exists(os.path.join(t, "stop")):
    phase = ("after" if os.path.exists(os.path.join(t, "moved")) else
             "during" if os.path.exists(os.path.join(t, "moving")) else "before")
    s, p = rng.randrange(n), i % 255 + 1
    cmd(f"write -P {p} {s * slot} {slot}", "wrote ")
    last[s] = p
    counts[phase] += 1
    i += 1
    if counts[phase] % 50 == 0:
        with open(os.path.join(t, "driver.progress.tmp"), "w") as f:
            json.dump(counts, f)
        os.rename(os.path.join(t, "driver.progress.tmp"), os.path.join(t, "driver.progress"))
for s, p in sorted(last.items()):
    cmd(f"read -P {p} {s * slot} {slot}", "read ")
q.stdin.close()
if q.wait() != 0:
    sys.exit(f"qemu-io exit {q.returncode}")
json.dump({"last": last, "counts": counts}, open(os.path.join(t, "map.json"), "w"))
print("driver:", counts)
PY
QIO_PID=$!

progress() { [ -f "$T/driver.progress" ] && json_get "d['$1']" <"$T/driver.progress" || echo 0; }
wait_writes() {   # wait_writes PHASE N
  for _ in $(seq 1 1200); do
    [ "$(progress "$1")" -ge "$2" ] && return 0
    kill -0 "$QIO_PID" 2>/dev/null || { cat "$T/driver.out"; fail "the qemu-io driver died"; }
    sleep 0.05
  done
  fail "the qemu-io driver did not reach $2 writes $1 the move"
}
wait_writes before 200
touch "$T/moving"
move vm1 ds2
touch "$T/moved"
wait_writes after 200
touch "$T/stop"
rc=0
wait "$QIO_PID" || rc=$?
QIO_PID=
[ "$rc" -eq 0 ] || { cat "$T/driver.out"; fail "the qemu-io driver failed (exit $rc)"; }
cat "$T/driver.out"
[ "$(json_get 'd["counts"]["during"]' <"$T/map.json")" -ge 1 ] || fail "no write while the move ran"

check_moved vm1 ds2 "$src"
dst=$(disk_file vm1 0)
# every slot's last pattern (zeros where none), on a new connection and in the destination file
python3 -c '
import json, sys
last = {int(s): p for s, p in json.load(open(sys.argv[1]))["last"].items()}
for s in range(512):
    print(f"read -P {last.get(s, 0)} {s * 65536} 65536")' "$T/map.json" >"$T/reads"
mapfile -t reads <"$T/reads"
written=$(json_get 'len(d["last"])' <"$T/map.json")
[ "$written" -gt 100 ] || fail "only $written slots written"
qemu_io_check "$U" "${reads[@]}" "read -P 0x77 96M 32M"
qemu_io_check "$dst" "${reads[@]}" "read -P 0x77 96M 32M"
echo "migrate-qemu-io: $written slots written and 512 checked"
echo PASS
