#!/bin/bash
# VLAN 100 against VLAN 200 (802.1Q sub-interfaces of mig0 holding the migration addresses),
# and the round trip: tc netem delay on hostA's mig0, 120 ms (a warning) then 200 ms (an
# error). Needs the kernel's 8021q and sch_netem: skipped (77) where neither exists (each part
# is skipped alone when only one is missing).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/peer-lib.sh"
. "$(dirname "$0")/netns-lib.sh"
require openssl python3 tc

ns_net flat
have_vlan=1 have_netem=1
nsx a ip link add link mig0 name vl type vlan id 100 2>/dev/null || have_vlan=0
[ "$have_vlan" = 1 ] && nsx a ip link del vl
nsx a tc qdisc add dev mig0 root netem delay 1ms 2>/dev/null || have_netem=0
[ "$have_netem" = 1 ] && nsx a tc qdisc del dev mig0 root
[ "$have_vlan$have_netem" = 00 ] && { echo "SKIP: no 802.1Q VLANs and no netem in this kernel" >&2; exit 77; }
make_ca "$TMP/tls-b" hostB
make_ca "$TMP/tls-a" hostA "$TMP/tls-b"

if [ "$have_netem" = 1 ]; then
  ns_agent a --tls-dir "$TMP/tls-a"
  ns_agent b --tls-dir "$TMP/tls-b"
  on hostA vm create vm1 --datastore ds1 --disk 8M:thin >/dev/null
  nsx a tc qdisc add dev mig0 root netem delay 120ms
  precheck
  [ "$PC_RC" -eq 0 ] || { cat "$TMP/pc.out"; fail "a warning made precheck fail"; }
  grep -Eq '^warning rtt        round trip 1[2-4][0-9]\.[0-9]{2} ms to 198.51.100.2: close to the 150 ms limit of live moves; fix: expect long switchovers; a closer host or a faster migration link keeps it under 100 ms$' "$TMP/pc.out" ||
    { cat "$TMP/pc.out"; fail "no rtt warning at 120 ms"; }
  ok "120 ms: a warning"
  nsx a tc qdisc change dev mig0 root netem delay 200ms
  precheck
  [ "$PC_RC" -eq 1 ] || { cat "$TMP/pc.out"; fail "200 ms did not fail the precheck"; }
  grep -Eq '^error   rtt        round trip 2[0-2][0-9]\.[0-9]{2} ms to 198.51.100.2: over the 150 ms limit of live moves; fix: a live move needs a round trip under 150 ms: move the VM cold, or choose a closer host or a faster migration link$' "$TMP/pc.out" ||
    { cat "$TMP/pc.out"; fail "no rtt error at 200 ms"; }
  ok "200 ms: an error"
  nsx a tc qdisc del dev mig0 root
  stop_agent hostA
  stop_agent hostB
fi

if [ "$have_vlan" = 1 ]; then
  for x in a:198.51.100.1:100 b:198.51.100.2:200; do
    IFS=: read -r h addr id <<<"$x"
    nsx "$h" ip addr del "$addr/24" dev mig0
    nsx "$h" ip link add link mig0 name "mig0.$id" type vlan id "$id"
    nsx "$h" ip addr add "$addr/24" dev "mig0.$id"
    nsx "$h" ip link set dev "mig0.$id" up
  done
  ns_agent a --tls-dir "$TMP/tls-a"
  ns_agent b --tls-dir "$TMP/tls-b"
  says vm1 on hostA vm list || on hostA vm create vm1 --datastore ds1 --disk 8M:thin >/dev/null
  precheck
  expect_check 1 error vlan "VLAN IDs differ: host hostA mig0.100 VLAN 100, host hostB mig0.200 VLAN 200; fix: put both migration interfaces on the same VLAN (e.g. VLAN 100 on host hostB as on host hostA)"
fi
