#!/bin/bash
# A routed migration network (hostA 198.51.100.0/24, hostB 203.0.113.0/24, a router namespace
# between): without --migration-gateway an error naming the flag, with it svmd's policy routing
# (rule and table 21334, removed when svmd stops) carries the probes and the bandwidth probe.
# Then management and migration in one subnet: a warning, and migration traffic still only on
# mig0 although the management interface's route comes first.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/peer-lib.sh"
. "$(dirname "$0")/netns-lib.sh"
require openssl python3

ns_net routed
make_ca "$TMP/tls-b" hostB
make_ca "$TMP/tls-a" hostA "$TMP/tls-b"
ns_agent a --tls-dir "$TMP/tls-a"
ns_agent b --tls-dir "$TMP/tls-b"
on hostA vm create vm1 --datastore ds1 --disk 8M:thin >/dev/null

precheck
expect_check 1 error route "host hostA: migration peer 203.0.113.2 is not on mig0's subnet 198.51.100.1/24 and no migration gateway is set; fix: start svmd on host hostA with --migration-gateway GW, GW being the router of its migration network on mig0"
expect_check 1 error route "host hostB: migration peer 198.51.100.1 is not on mig0's subnet 203.0.113.2/24 and no migration gateway is set; fix: start svmd on host hostB with --migration-gateway GW, GW being the router of its migration network on mig0"
grep -q '^[a-z]* *tcp' "$TMP/pc.out" && fail "probes ran without a route"

stop_agent hostA
stop_agent hostB
says default nsx a ip route && fail "hostA has a default route: the test would prove nothing"
ns_agent a --tls-dir "$TMP/tls-a" --migration-gateway "$GW_A"
ns_agent b --tls-dir "$TMP/tls-b" --migration-gateway "$GW_B"
says "from 198.51.100.1 lookup 21334" nsx a ip rule || fail "no policy rule on hostA"
says "default via $GW_A dev mig0" nsx a ip route show table 21334 || fail "no route on hostA"
precheck --bandwidth
expect_check 0 ok route "host hostA: 203.0.113.2 is routed through migration gateway 198.51.100.254 on mig0"
expect_check 0 ok route "host hostB: 198.51.100.1 is routed through migration gateway 203.0.113.254 on mig0"
expect_check 0 ok tcp "198.51.100.1 (mig0) -> 203.0.113.2:7200: host hostB answered over x509"
expect_check 0 ok icmp "198.51.100.1 -> 203.0.113.2: 3 of 3 echoes answered"
grep -q '^ok      bandwidth  .* from 198.51.100.1 (mig0) to 203.0.113.2 over x509' "$TMP/pc.out" ||
  { cat "$TMP/pc.out"; fail "no bandwidth over the routed network"; }
# management keeps the host's main table: no default route there
nsx a ip route get 203.0.113.2 2>/dev/null && fail "the main table routes migration traffic"
stop_agent hostA
says 21334 nsx a ip rule && fail "svmd left its rule behind"
ok "the migration gateway's rule and table are gone with svmd"
ns_down

# Management and migration in one subnet
ns_net shared
ns_agent a --tls-dir "$TMP/tls-a"
MIG_PORT=0 ns_agent b --tls-dir "$TMP/tls-b"     # a port of the kernel's choice, told by INFO
grep -Eq 'migration interface mig0: listening on 198\.51\.100\.2:[1-9][0-9]* \(x509\)' "$TMP/hostB.log" ||
  fail "hostB's migration port 0 was not resolved"
says 'dev mgmt0' nsx a ip route get 198.51.100.2 || fail "management is not the preferred route"
for x in a b; do for i in mgmt0 mig0; do printf -v "C0_${x}_$i" %s "$(ns_counter $x $i)"; done; done
precheck --bandwidth
expect_check 0 warning subnet "host hostA: management (mgmt0 198.51.100.11) and migration (mig0 198.51.100.1) share subnet 198.51.100.0/24; fix: svmotion still binds migration traffic to mig0; to separate them, put host hostA's migration interface on a subnet (or VLAN) of its own"
expect_check 0 warning subnet "host hostB: management (mgmt0 198.51.100.12) and migration (mig0 198.51.100.2) share subnet 198.51.100.0/24; fix: svmotion still binds migration traffic to mig0; to separate them, put host hostB's migration interface on a subnet (or VLAN) of its own"
grep -q '^ok      bandwidth' "$TMP/pc.out" || { cat "$TMP/pc.out"; fail "no bandwidth"; }
for x in a b; do for i in mgmt0 mig0; do
  v="C0_${x}_$i"
  printf -v "D_${x}_$i" %s $(($(ns_counter $x $i) - ${!v}))
done; done
echo "bytes: a mig0 $D_a_mig0 mgmt0 $D_a_mgmt0, b mig0 $D_b_mig0 mgmt0 $D_b_mgmt0"
[ "$D_a_mig0" -gt $((64 << 20)) ] && [ "$D_a_mgmt0" -lt $((1 << 20)) ] &&
  [ "$D_b_mig0" -gt $((64 << 20)) ] && [ "$D_b_mgmt0" -lt $((1 << 20)) ] ||
  fail "migration traffic left through mgmt0 in a shared subnet"
ok "shared subnet: $D_a_mig0 bytes on mig0, $D_a_mgmt0 on mgmt0"
