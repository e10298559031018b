#!/usr/bin/env bash
# A live move of a two-disk VM from ds1 to ds2 while a guest keeps one NBD connection open on
# each disk and writes through it: every write acknowledged, the data identical after, the
# folder (descriptor, disks, trackers, other files) in ds2 and gone from ds1, the export names
# and sockets unchanged, the result object complete; a restart finds the VM in ds2; a move
# back converts the provisioning on the way. Usage errors exit 2, failures 1.
source "$(dirname "$0")/agent-lib.sh"
source "$(dirname "$0")/migrate-lib.sh"

umask 0                         # the modes of what a move makes must not depend on it
start_svmd
svmctl vm create vm1 --datastore ds1 --disk 64M --disk 32M:thick >/dev/null
U0=$(uri vm1 0)
U1=$(uri vm1 1)
qemu-io -f raw -c "write -P 7 0 8M" -c "write -P 9 16M 1M" "$U0" >/dev/null
qemu-io -f raw -c "write -P 5 1M 2M" "$U1" >/dev/null
echo "annotation = kept" >"$T/ds1/vm1/vm1.notes"
chmod 0640 "$T/ds1/vm1/vm1.notes"

# usage errors: 2, without an agent round trip; failures: 1
expect_fail 2 "expects a VM name" svmctl migrate
expect_fail 2 "needs --datastore DS" svmctl migrate vm1
expect_fail 2 "--provisioning must be" svmctl migrate vm1 --datastore ds2 --provisioning fat
expect_fail 2 "unknown option" svmctl migrate vm1 --datastore ds2 --bogus
expect_fail 1 "no such VM 'nope'" svmctl migrate nope --datastore ds2
expect_fail 1 "no such datastore 'ds9'" svmctl migrate vm1 --datastore ds9
expect_fail 1 "is on datastore ds1 already" svmctl migrate vm1 --datastore ds1

start_writer w0 "$U0" $((32 << 20)) $((32 << 20))
start_writer w1 "$U1" $((8 << 20)) $((24 << 20))
svmctl migrate vm1 --datastore ds2 --json >"$T/result.json"
stop_writer w0
stop_writer w1
cat "$T/result.json"
R=$(cat "$T/result.json")
[ "$(json_get 'd["state"]' <<<"$R")" = "done" ] || fail "state: $R"
[ "$(json_get 'd["vm"]' <<<"$R")" = vm1 ] || fail "vm: $R"
[ "$(json_get 'd["from"] + ">" + d["to"]' <<<"$R")" = "ds1>ds2" ] || fail "from/to: $R"
[ "$(json_get 'd["disks"]' <<<"$R")" = 2 ] || fail "disks: $R"
[ "$(json_get 'd["bytes_total"]' <<<"$R")" = $((96 << 20)) ] || fail "bytes_total: $R"
[ "$(json_get 'd["bytes_done"]' <<<"$R")" = $((96 << 20)) ] || fail "bytes_done: $R"
# at least the data written before the move was copied (zeros may be skipped)
[ "$(json_get 'd["bytes_copied"] >= 11 * 2**20' <<<"$R")" = True ] || fail "bytes_copied: $R"
[ "$(json_get 'd["seconds"] > 0 and d["downtime_ms"] >= 0 and d["error"] is None' <<<"$R")" = True ] ||
  fail "seconds/downtime_ms/error: $R"
json_get 'd["bytes_mirrored"], d["writes_parked"], d["queued_seconds"], d["provisioning"]' <<<"$R" >/dev/null ||
  fail "members missing: $R"

# the folder moved, whole
[ ! -e "$T/ds1/vm1" ] || fail "the source folder is still there: $(ls -la "$T/ds1/vm1")"
# its blocks are freed after the move reported, from a folder renamed out of the way
wait_retired_gone "$T/ds1"

# status id=N wait_ms=M (svmctl follows a move with it): a finished move answers at once;
# bad values are refused naming the argument
ctl() {
  python3 - "$SVM_STATE/control.sock" "$1" <<'EOF2'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(("SVMCTL/1 " + sys.argv[2] + "\n").encode())
data = b""
while not data.endswith(b"\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(data.decode().strip())
EOF2
}
id=$(json_get 'd["id"]' <<<"$R")
ctl "status id=$id wait_ms=1000 format=json" | grep -q "^OK .*%22state%22:%20%22done%22" ||
  fail "status with wait_ms: $(ctl "status id=$id wait_ms=1000 format=json")"
ctl "status id=$id wait_ms=soon" | grep -q "^ERR 22 .*wait_ms" ||
  fail "a bad wait_ms: $(ctl "status id=$id wait_ms=soon")"
ctl "status wait_ms=10" | grep -q "^ERR 22 .*wait_ms.*id" ||
  fail "wait_ms without id: $(ctl "status wait_ms=10")"
for f in vm1.svm disk0.raw disk1.raw disk0.ctk disk1.ctk vm1.notes; do
  [ -f "$T/ds2/vm1/$f" ] || fail "ds2/vm1/$f missing: $(ls -la "$T/ds2/vm1")"
done
[ "$(cat "$T/ds2/vm1/vm1.notes")" = "annotation = kept" ] || fail "vm1.notes content"
[ "$(stat -c %a "$T/ds2/vm1/vm1.notes")" = 640 ] || fail "vm1.notes mode"
[ "$(stat -c %s "$T/ds2/vm1/disk0.raw")" = $((64 << 20)) ] || fail "disk0 size"
[ "$(stat -c %a "$T/ds2/vm1")" = 700 ] || fail "the folder's mode: $(stat -c %a "$T/ds2/vm1")"
for f in vm1.svm disk0.raw disk1.raw disk0.ctk disk1.ctk; do
  [ "$(stat -c %a "$T/ds2/vm1/$f")" = 600 ] || fail "$f's mode: $(stat -c %a "$T/ds2/vm1/$f")"
done
[ "$(stat -c %a "$SVM_STATE/moves")" = 700 ] || fail "moves/ mode"
for f in "$T/ds2/vm1"/*tmp*; do [ ! -e "$f" ] || fail "temporary file left: $f"; done
svmctl vm show vm1 --json >"$T/show.json"
[ "$(json_get 'd["datastore"]' <"$T/show.json")" = ds2 ] || fail "vm show: $(cat "$T/show.json")"
[ "$(json_get 'd["disks"][0]["file"]' <"$T/show.json")" = "$T/ds2/vm1/disk0.raw" ] ||
  fail "vm show disk0: $(cat "$T/show.json")"
[ "$(json_get 'd["disks"][1]["nbd-uri"]' <"$T/show.json")" = "$U1" ] || fail "the URI changed"
grep -q "^disk1.provisioning = thick" "$T/ds2/vm1/vm1.svm" || fail "provisioning same: $(cat "$T/ds2/vm1/vm1.svm")"

# the data: what was there before, and every write of the guests
qemu-io -f raw -c "read -P 7 0 8M" -c "read -P 9 16M 1M" -c "read -P 0 17M 15M" "$U0" |
  grep -c "^read" | grep -qx 3 || fail "disk0 data"
qemu-io -f raw -c "read -P 5 1M 2M" "$U1" | grep -q "^read 2097152" || fail "disk1 data"
verify_writer w0 "$U0"
verify_writer w1 "$U1"

# status lists it among the done ones
svmctl status --json >"$T/status.json"
[ "$(json_get 'len(d["done"]) == 1 and d["done"][0]["state"] == "done" and d["running"] == [] and d["queued"] == []' <"$T/status.json")" = True ] ||
  fail "status: $(cat "$T/status.json")"
svmctl status | grep -q "vm1 ds1 -> ds2  done" || fail "status text: $(svmctl status)"

# a restart finds the VM in ds2, with its data
stop_svmd
start_svmd
svmctl vm show vm1 --json | json_get 'd["datastore"]' | grep -qx ds2 || fail "after restart"
verify_writer w0 "$U0"

# and back, thin on the way
svmctl migrate vm1 --datastore ds1 --provisioning thin >"$T/back.txt"
grep -q "VM vm1 moved to datastore ds1 in" "$T/back.txt" || fail "text result: $(cat "$T/back.txt")"
grep -q "^disk0.provisioning = thin" "$T/ds1/vm1/vm1.svm" || fail "thin: $(cat "$T/ds1/vm1/vm1.svm")"
grep -q "^disk1.provisioning = thin" "$T/ds1/vm1/vm1.svm" || fail "thin: $(cat "$T/ds1/vm1/vm1.svm")"
[ ! -e "$T/ds2/vm1" ] || fail "ds2/vm1 left behind"
alloc=$(( $(stat -c %b "$T/ds1/vm1/disk1.raw") * 512 ))
[ "$alloc" -lt $((32 << 20)) ] || fail "disk1 is still fully allocated ($alloc bytes) after a move to thin"
verify_writer w1 "$U1"
grep -q "vm1: moved to datastore ds1" "$LOG" || fail "log line"
stop_svmd
echo PASS
