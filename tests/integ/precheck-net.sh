#!/bin/bash
# svmctl precheck on a flat migration network (two hosts in network namespaces, management
# and migration on separate bridges): all ok, then each fault injected and its exact error and
# fix asserted - MTU 9000 against 1500, a path that does not carry jumbo frames, a duplicate
# address (a third host holds hostA's migration address), the migration interface down, its
# address gone. The bandwidth probe's bytes appear only on the migration interfaces' counters,
# also with a route that prefers management.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/peer-lib.sh"
. "$(dirname "$0")/netns-lib.sh"
require openssl python3

ns_net flat
make_ca "$TMP/tls-b" hostB
make_ca "$TMP/tls-a" hostA "$TMP/tls-b"
ns_agent a --tls-dir "$TMP/tls-a"
ns_agent b --tls-dir "$TMP/tls-b"
on hostA vm create vm1 --datastore ds1 --disk 8M:thin >/dev/null

precheck
expect_check 0 ok tls "peer link to $MGMT_B:7100: host hostB, x509 identity hostB"
expect_check 0 ok interface "host hostB: migration interface mig0 198.51.100.2/24 up, MTU 1500"
expect_check 0 ok tcp "198.51.100.1 (mig0) -> 198.51.100.2:7200: host hostB answered over x509"
expect_check 0 ok mtu "MTU 1500 on both; a 1472-byte don't-fragment probe to 198.51.100.2 answered"
expect_check 0 ok vlan "both migration interfaces untagged"
grep -Eq '^ok      rtt        round trip [0-9.]+ ms to 198.51.100.2 \(limit 150 ms\)$' "$TMP/pc.out" ||
  fail "no rtt line"
grep -Eq '^ok      cpu        .*shared baseline x86-64' "$TMP/pc.out" || fail "no cpu baseline"
on hostA precheck vm1 --datastore ds1 --host "$MGMT_B:7100" --json |
  json_get "d['result'] + ' ' + ','.join(c['check'] for c in d['checks'])" >"$TMP/j"
[ "$(cat "$TMP/j")" = "ok tls,interface,interface,address,address,subnet,subnet,route,route,vlan,tcp,icmp,rtt,mtu,space,cpu" ] ||
  fail "precheck --json: $(cat "$TMP/j")"
ok "--json: every check, result ok"

# Bandwidth over the migration network, with a hostile routing table on both hosts: a host
# route to the peer's migration address through the management interface.
nsx a ip route add 198.51.100.2/32 dev mgmt0
nsx b ip route add 198.51.100.1/32 dev mgmt0
says 'dev mgmt0' nsx a ip route get 198.51.100.2 || fail "the hostile route is not preferred"
for x in a b; do for i in mgmt0 mig0; do printf -v "C0_${x}_$i" %s "$(ns_counter $x $i)"; done; done
precheck --bandwidth
expect_check 0 ok icmp "198.51.100.1 -> 198.51.100.2: 3 of 3 echoes answered"
expect_check 0 ok tcp "198.51.100.1 (mig0) -> 198.51.100.2:7200: host hostB answered over x509"
grep -Eq '^ok      bandwidth  [0-9.]+ [KMG]i?B/s from 198.51.100.1 \(mig0\) to 198.51.100.2 over x509' \
  "$TMP/pc.out" || { cat "$TMP/pc.out"; fail "no bandwidth line"; }
for x in a b; do for i in mgmt0 mig0; do
  v="C0_${x}_$i"
  printf -v "D_${x}_$i" %s $(($(ns_counter $x $i) - ${!v}))
done; done
echo "bytes: a mig0 $D_a_mig0 mgmt0 $D_a_mgmt0, b mig0 $D_b_mig0 mgmt0 $D_b_mgmt0"
[ "$D_a_mig0" -gt $((64 << 20)) ] && [ "$D_b_mig0" -gt $((64 << 20)) ] ||
  fail "the bandwidth probe's bytes are not on mig0"
[ "$D_a_mgmt0" -lt $((1 << 20)) ] && [ "$D_b_mgmt0" -lt $((1 << 20)) ] ||
  fail "the bandwidth probe's bytes went through mgmt0"
ok "bandwidth probe: $D_a_mig0 bytes on mig0, $D_a_mgmt0 on mgmt0 (peer link only)"
nsx a ip route del 198.51.100.2/32 dev mgmt0
nsx b ip route del 198.51.100.1/32 dev mgmt0

# MTU 9000 against 1500
nsx b ip link set dev mig0 mtu 9000
precheck
expect_check 1 error mtu "MTU mismatch: host hostA mig0 MTU 1500, host hostB mig0 MTU 9000; fix: set the same MTU on both migration interfaces: ip link set dev mig0 mtu 9000 on host hostA (with jumbo frames on every switch between), or MTU 1500 on host hostB's mig0"
# both 9000, the switch still 1500: the don't-fragment probe finds the path's limit
nsx a ip link set dev mig0 mtu 9000
precheck
expect_check 1 error mtu "path MTU below 9000: a 8972-byte don't-fragment probe from 198.51.100.1 to 198.51.100.2 got no answer; fix: enable frames of 9000 bytes (jumbo frames) on every switch and router between, or lower both interfaces' MTU to what the path carries"
for p in ma mb; do nsx sw ip link set dev $p mtu 9000; done
precheck
expect_check 0 ok mtu "MTU 9000 on both; a 8972-byte don't-fragment probe to 198.51.100.2 answered"

# A third host on the segment holds hostA's migration address
ns_third 198.51.100.1
mac=$(nsx "$NS_P-c" cat /sys/class/net/mig0/address)
precheck
expect_check 1 error address "host hostA: migration address 198.51.100.1 on mig0 is also used by $mac (ARP probe answered); fix: give the host with MAC $mac or host hostA another address: a migration address must be unique on the segment"
expect_check 1 ok address "host hostB: 198.51.100.2 is unique on mig0's segment (ARP probe unanswered)"
ip netns del "$NS_P-c"

# The migration interface down, then its address gone
nsx b ip link set dev mig0 down
precheck
expect_check 1 error interface "host hostB: migration interface mig0 (198.51.100.2/24) is down; fix: bring it up on host hostB: ip link set dev mig0 up (and check its link: cable, switch port)"
grep -q '^error   tcp' "$TMP/pc.out" && fail "probes ran over an interface that is down"
nsx b ip link set dev mig0 up
nsx b ip addr del 198.51.100.2/24 dev mig0
precheck
expect_check 1 error interface "host hostB: no interface holds the migration address 198.51.100.2; fix: add the address to host hostB's migration interface (ip addr add 198.51.100.2/PREFIX dev IFACE), or start svmd there with the --migration address it has"
