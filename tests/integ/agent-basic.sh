#!/usr/bin/env bash
# svmd + svmctl: vm create/list/show/delete with --json, provisioning of the disk files,
# every error the operator can hit (no such VM / datastore, agent not running, usage errors,
# a second svmd on the same state dir), and the VMs coming back after a restart.
source "$(dirname "$0")/agent-lib.sh"

# ---- usage errors and help, no agent needed ----
"$SVM_BIN/svmd" --help | grep -q -- '--datastore NAME=DIR' || fail "svmd --help"
"$SVM_BIN/svmd" --help | grep -q -- '--migration-gateway GW' || fail "svmd --help: migration"
[ "$("$SVM_BIN/svmd" --version)" = "svmd 0.1.0" ] || fail "svmd --version"
[ "$(svmctl --version)" = "svmctl 0.1.0" ] || fail "svmctl --version"
svmctl --help | grep -q 'cbt query VM DISK --since' || fail "svmctl --help"
svmctl vm create --help | grep -q 'PROVISIONING' || fail "svmctl vm create --help"
svmctl cbt query --help | grep -q 'svm-cbt:CHANGEID' || fail "svmctl cbt query --help"
expect_fail 2 "unknown option --bogus" "$SVM_BIN/svmd" --bogus
expect_fail 2 "--name HOST is required" "$SVM_BIN/svmd" --state "$SVM_STATE" --datastore "ds1=$T/ds1"
expect_fail 2 "option --state needs an argument" "$SVM_BIN/svmd" --name h --state
expect_fail 2 "exclude each other" "$SVM_BIN/svmd" --name h --state "$SVM_STATE" \
  --datastore "ds1=$T/ds1" --tls-dir "$T" --insecure
expect_fail 1 "No such file or directory (give an existing directory)" "$SVM_BIN/svmd" --name h \
  --state "$SVM_STATE" --datastore "ds1=$T/nonexistent"
expect_fail 2 "unknown option '--bogus'" svmctl --bogus vm list
expect_fail 2 "unknown command 'vm frobnicate'" svmctl vm frobnicate
expect_fail 2 "unknown command 'frobnicate'" svmctl frobnicate vm1
expect_fail 2 "unknown option '--bogus'" svmctl vm list --bogus
expect_fail 2 "needs --datastore DS" svmctl vm create vm1 --disk 1G
expect_fail 2 "needs at least one --disk" svmctl vm create vm1 --datastore ds1
expect_fail 2 "'12Q' is not a size" svmctl vm create vm1 --datastore ds1 --disk 12Q
expect_fail 2 "'fat' is not a provisioning" svmctl vm create vm1 --datastore ds1 --disk 1G:fat
expect_fail 2 "needs --since CHANGEID" svmctl cbt query vm1 0
expect_fail 2 "expects VM and DISK" svmctl cbt changeid vm1
expect_fail 2 "expects a VM name" svmctl vm show
expect_fail 2 "expects one FILE.ctk" svmctl cbt info
expect_fail 2 "unexpected argument 'x'" svmctl vm list x
expect_fail 2 "option '--disk' needs a value" svmctl vm create vm1 --datastore ds1 --disk
expect_fail 1 "$T/nothere.ctk: No such file or directory" svmctl cbt info "$T/nothere.ctk"
expect_fail 2 "no state directory" env -u SVM_STATE "$SVM_BIN/svmctl" vm list

# ---- agent not running: the message says how to start it ----
expect_fail 1 "the agent svmd is not running" svmctl vm list
expect_fail 1 "start it with: svmd --name HOST --state $SVM_STATE --datastore NAME=DIR" svmctl vm list --json

start_svmd
grep -q "datastore ds2 = $T/ds2" "$LOG" || fail "svmd did not log its datastores"

# ---- a second svmd on the same state directory is refused ----
expect_fail 1 "another svmd (pid $SVMD_PID) is already running with state directory" \
  "$SVM_BIN/svmd" --name other --state "$SVM_STATE" --datastore "ds1=$T/ds1"

# ---- create, one VM per provisioning ----
svmctl vm list --json >"$T/l.json"
[ "$(json_get 'len(d["vms"])' <"$T/l.json")" = 0 ] || fail "empty list"
[ "$(json_get '[x["name"] for x in d["datastores"]]' <"$T/l.json")" = '["ds1", "ds2"]' ] || fail "datastores"
svmctl vm create thin1 --datastore ds1 --disk 64M --disk 1M:thin --json >"$T/c.json"
[ "$(json_get 'd["name"]' <"$T/c.json")" = thin1 ] || fail "create json name"
[ "$(json_get 'len(d["disks"])' <"$T/c.json")" = 2 ] || fail "create json disks"
[ "$(json_get 'd["disks"][0]["size"]' <"$T/c.json")" = 67108864 ] || fail "disk0 size"
[ "$(json_get 'd["disks"][0]["nbd-uri"]' <"$T/c.json")" = "$(uri thin1 0)" ] || fail "nbd uri"
svmctl vm create thick1 --datastore ds2 --disk 8M:thick >/dev/null
svmctl vm create eager1 --datastore ds2 --disk 8M:eager-zeroed-thick >/dev/null
# thin: a sparse file; thick and eager: every block allocated
[ "$(stat -c %s "$T/ds1/thin1/disk0.raw")" = 67108864 ] || fail "thin size"
[ "$(( $(stat -c '%b * %B' "$T/ds1/thin1/disk0.raw") ))" -lt 1048576 ] || fail "thin disk is allocated"
[ "$(( $(stat -c '%b * %B' "$T/ds2/thick1/disk0.raw") ))" -ge 8388608 ] || fail "thick disk not allocated"
[ "$(( $(stat -c '%b * %B' "$T/ds2/eager1/disk0.raw") ))" -ge 8388608 ] || fail "eager disk not allocated"
if command -v filefrag >/dev/null && filefrag -v "$T/ds2/eager1/disk0.raw" | grep -q unwritten; then
  fail "eager-zeroed disk still has unwritten extents"
fi
grep -q '^disk0.provisioning = thick$' "$T/ds2/thick1/thick1.svm" || fail "descriptor provisioning"

svmctl vm list --json >"$T/l.json"
[ "$(json_get '[x["name"] for x in d["vms"]]' <"$T/l.json")" = '["eager1", "thick1", "thin1"]' ] || fail "list names"
[ "$(json_get '[x["datastore"] for x in d["vms"]]' <"$T/l.json")" = '["ds2", "ds2", "ds1"]' ] || fail "list datastores"
[ "$(json_get 'd["vms"][2]["disks"][1]["nbd-uri"]' <"$T/l.json")" = "$(uri thin1 1)" ] || fail "list uri"
[ "$(json_get 'd["vms"][2]["path"]' <"$T/l.json")" = "$T/ds1/thin1" ] || fail "list path"
svmctl vm list | grep -q "nbd+unix:///thick1/disk0?socket=" || fail "vm list text"
svmctl vm show thick1 --json >"$T/s.json"
[ "$(json_get 'd["disks"][0]["provisioning"]' <"$T/s.json")" = thick ] || fail "show provisioning"
svmctl vm show eager1 | grep -q "eager-zeroed-thick" || fail "show text"

# ---- operator errors ----
expect_fail 1 "no such VM 'nope' on host testhost" svmctl vm show nope
expect_fail 1 "no such VM 'nope'" svmctl vm delete nope --json
expect_fail 1 "no such VM 'nope'" svmctl cbt changeid nope 0
expect_fail 1 "VM thin1 has no disk 5" svmctl cbt changeid thin1 5
expect_fail 1 "no such datastore 'ds9' on host testhost (it has: ds1, ds2)" \
  svmctl vm create vm9 --datastore ds9 --disk 1M
expect_fail 1 "VM thin1 exists already" svmctl vm create thin1 --datastore ds2 --disk 1M
expect_fail 1 "not a valid VM name" svmctl vm create .bad --datastore ds1 --disk 1M
mkdir "$T/ds1/taken"
expect_fail 1 "a folder of that name is in the datastore already" \
  svmctl vm create taken --datastore ds1 --disk 1M
[ -z "$(ls -A "$T/ds1/taken")" ] || fail "failed create touched an existing folder"
# not enough space (twice the free space): nothing is left behind
avail=$(df --output=avail -B1M "$T/ds1" | tail -1 | tr -d ' ')
expect_fail 1 "not enough space" svmctl vm create huge --datastore ds1 --disk "$((avail * 2))M:thick"
[ ! -e "$T/ds1/huge" ] || fail "failed create left $T/ds1/huge"
svmctl vm list --json | json_get 'len(d["vms"])' | grep -qx 3 || fail "failed creates added VMs"

# ---- the control socket itself: garbage and another protocol version get ERR, svmd lives on ----
python3 - "$SVM_STATE/control.sock" <<'EOF' || fail "control socket robustness"
import socket, sys
def ask(data):
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
    try:
        s.sendall(data); s.shutdown(socket.SHUT_WR)
    except OSError:
        pass                  # svmd may answer and close before it read everything
    r = b""
    while True:
        b = s.recv(65536)
        if not b: break
        r += b
    return r.decode()
checks = [
    (b"SVMCTL/2 vm-list\n", "ERR 93 control%20protocol%20SVMCTL/2%20is%20not%20supported"),
    (b"GET / HTTP/1.0\n", "ERR 71 not%20an%20svmctl%20request"),
    (b"SVMCTL/1 ping\nSVMCTL/1 ping\n", "ERR 22 one%20request%20per%20connection"),
    (b"SVMCTL/1 vm-list bogus=1\n", "ERR 22 vm-list:%20unknown%20argument%20%27bogus%27"),
    (b"SVMCTL/1 vm-show\n", "ERR 22 vm-show:%20missing%20argument%20%27vm%27"),
    (b"SVMCTL/1 frob\n", "ERR 95 unknown%20command%20%27frob%27"),
    (b"\xff" * 70000, "ERR 90 request%20longer"),
    (b"SVMCTL/1 ping format=json\n", "OK %7B%22host%22:%20%22testhost%22"),
]
for req, want in checks:
    got = ask(req)
    if not got.startswith(want):
        print("request", req[:40], "got", got[:120], "want", want); sys.exit(1)
EOF

# ---- restart: the VMs come back from their descriptors, byte-identical files ----
sum_before=$(cat "$T"/ds*/*/*.svm | sha256sum)
stop_svmd
[ ! -e "$SVM_STATE/control.sock" ] || fail "control socket left after SIGTERM"
[ -z "$(ls -A "$SVM_STATE/nbd" 2>/dev/null)" ] || fail "NBD sockets left after SIGTERM"
start_svmd
[ "$(cat "$T"/ds*/*/*.svm | sha256sum)" = "$sum_before" ] || fail "descriptors rewritten"
svmctl vm list --json | json_get '[x["name"] for x in d["vms"]]' | grep -qxF '["eager1", "thick1", "thin1"]' \
  || fail "VMs after restart"

# ---- delete ----
svmctl vm delete thick1 --json | json_get 'd["deleted"]' | grep -qx thick1 || fail "delete json"
[ ! -e "$T/ds2/thick1" ] || fail "delete left the folder"
expect_fail 1 "no such VM 'thick1'" svmctl vm show thick1
[ ! -e "$SVM_STATE/nbd/thick1-disk0.sock" ] || fail "delete left the socket"
svmctl vm delete eager1 | grep -q "VM eager1 deleted" || fail "delete text"
svmctl vm list --json | json_get '[x["name"] for x in d["vms"]]' | grep -qxF '["thin1"]' || fail "after delete"
stop_svmd

# ---- paths with a space: the URI percent-encodes the socket path, and clients accept it ----
if command -v qemu-io >/dev/null; then
  mkdir "$T/d s"
  export SVM_STATE="$T/st ate"
  "$SVM_BIN/svmd" --name sp --state "$SVM_STATE" --datastore "ds=$T/d s" 2>>"$LOG" &
  SVMD_PID=$!
  for _ in $(seq 1 100); do [ -S "$SVM_STATE/control.sock" ] && break; sleep 0.05; done
  svmctl vm create sp1 --datastore ds --disk 1M --json >"$T/c.json"
  u=$(json_get 'd["disks"][0]["nbd-uri"]' <"$T/c.json")
  [ "$u" = "nbd+unix:///sp1/disk0?socket=${T// /%20}/st%20ate/nbd/sp1-disk0.sock" ] || fail "uri: $u"
  svmctl vm show sp1 | grep -qF "$u" || fail "text uri"
  qemu-io -f raw -c "write -P 9 0 4k" "$u" >/dev/null || fail "qemu-io with an encoded socket path"
  check_query sp1 0 '*' 0:4096
  stop_svmd
fi
echo PASS
