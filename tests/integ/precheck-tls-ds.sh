#!/bin/bash
# Prechecks of the peer and its datastore: a peer whose certificate comes from another CA (the
# precheck's tls error, and `svmctl migrate` refused before anything moves), an agent without
# a migration interface (an error for precheck; a cold move still goes, the prechecks let it),
# and a full destination datastore (a small tmpfs): not writable, not enough space.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/peer-lib.sh"
. "$(dirname "$0")/netns-lib.sh"
require openssl python3 mount

ns_net flat
make_ca "$TMP/tls-b" hostB
make_ca "$TMP/tls-a" hostA "$TMP/tls-b"
make_ca "$TMP/tls-other" hostA
mkdir -p "$TMP/hostB/ds1"
mount -t tmpfs -o size=16M,mode=0700 "pc$$-ds" "$TMP/hostB/ds1"
on_exit "umount '$TMP/hostB/ds1'"
ns_agent b --tls-dir "$TMP/tls-b"

# svmd refuses a migration address it does not have, and a gateway off the migration subnet
mkdir -p "$TMP/x-ds"
svmd_x() { nsx a "$SVM_BIN/svmd" --name x --state "$TMP/x-state" --datastore "ds1=$TMP/x-ds" --insecure "$@"; }
expect_exit 1 "svmd: --migration 198.51.100.9:7300: no interface of this host has address 198.51.100.9 \(ip addr add 198.51.100.9/PREFIX dev IFACE\)" \
  svmd_x --migration 198.51.100.9:7300
expect_exit 1 "svmd: --migration-gateway 203.0.113.254 is not on mig0's subnet 198.51.100.1/24" \
  svmd_x --migration 198.51.100.1:7300 --migration-gateway 203.0.113.254
expect_exit 2 "svmd: --migration-gateway needs --migration ADDR:PORT" svmd_x --migration-gateway 198.51.100.254
says 21334 nsx a ip rule && fail "a refused svmd left a rule"
ok "svmd refuses a migration address it does not have and a gateway off its subnet"

# another CA
ns_agent a --tls-dir "$TMP/tls-other"
on hostA vm create vm1 --datastore ds1 --disk 8M:thin >/dev/null
precheck
expect_check 1 error tls "no peer link to $MGMT_B:7100: "
grep -qF "; fix: give both hosts credentials of one CA (svmctl tls init --dir DIR --host NAME --ca CA-DIR) or the same --tls-psk file, and --host the name or address the peer's certificate carries" "$TMP/pc.out" ||
  { cat "$TMP/pc.out"; fail "no fix for another CA"; }
n=$(grep -c . "$TMP/pc.out"); [ "$n" -eq 2 ] || { cat "$TMP/pc.out"; fail "checks ran without a peer ($n lines)"; }
wait_log hostB "refused: .*(unknown ca|another CA)"
expect_exit 1 "move of VM vm1 to $MGMT_B:7100 failed: the prechecks found errors \(svmctl precheck tells more\): tls: no peer link to $MGMT_B:7100: .*; fix: give both hosts credentials of one CA" \
  on hostA migrate vm1 --datastore ds1 --host "$MGMT_B:7100"
[ -f "$TMP/hostA/ds1/vm1/disk0.raw" ] || fail "vm1 left hostA"
[ -z "$(ls -A "$TMP/hostB/ds1")" ] || fail "hostB's datastore is not empty"
ok "migrate refused by the prechecks, nothing moved"
stop_agent hostA

# no migration interface: an error for precheck, not for a cold move
AGENT_PREFIX="ip netns exec $NS_A" start_agent hostA --mgmt "$MGMT_A:7100" --tls-dir "$TMP/tls-a"
precheck
expect_check 1 error interface "host hostA: svmd runs without a migration interface (--migration); fix: start svmd on host hostA with --migration ADDR:PORT, ADDR being the address of its migration interface"
expect_check 1 ok tls "peer link to $MGMT_B:7100: host hostB, x509 identity hostB"
on hostA migrate vm1 --datastore ds1 --host "$MGMT_B:7100" >/dev/null
[ -f "$TMP/hostB/ds1/vm1/vm1.svm" ] || fail "the cold move did not go"
ok "a cold move without a migration interface passes the prechecks"

# a full datastore
on hostA vm create vm2 --datastore ds1 --disk 8M:thick >/dev/null
dd if=/dev/zero of="$TMP/hostB/ds1/fill" bs=1M 2>/dev/null || true
PC_RC=0
on hostA precheck vm2 --datastore ds1 --host "$MGMT_B:7100" >"$TMP/pc.out" 2>&1 || PC_RC=$?
expect_check 1 error datastore "datastore ds1 on host hostB is not writable: No space left on device; fix: check datastore ds1 on host hostB: its file system (read-only? full?) and that svmd may write its folder"
expect_check 1 error space "datastore ds1 on host hostB has 0 B free, VM vm2 needs 8.0 MiB (same); fix: free 8.0 MiB on datastore ds1 of host hostB, or choose another datastore or thin provisioning"
{ on hostA precheck vm2 --datastore ds1 --host "$MGMT_B:7100" --json || true; } |
  json_get "d['result'], d['errors']" >"$TMP/j"
[ "$(cat "$TMP/j")" = "('error', 3)" ] || fail "--json: $(cat "$TMP/j")"
ok "--json: result error, 3 errors"
expect_exit 1 "the prechecks found errors .*space: datastore ds1 on host hostB has 0 B free" \
  on hostA migrate vm2 --datastore ds1 --host "$MGMT_B:7100"
ok "migrate of vm2 refused: the datastore is full"
