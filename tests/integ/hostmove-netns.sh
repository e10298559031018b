#!/bin/bash
# Two hosts in network namespaces joined by a veth pair (192.0.2.1/24 and 192.0.2.2/24, the
# documentation range), each agent on its own management address, TLS with certificates:
#   - a cold move across, data checked;
#   - the link cut mid-copy (ip link set down, then up once the source has noticed): the move
#     resumes and completes, the destination told the source what it already had durable
#     (bytes_resumed > 0), and the data matches.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/peer-lib.sh"
require ip qemu-img qemu-io python3
require_root

NA=tls-a-$$ NB=tls-b-$$ VA=tlsa$$ VB=tlsb$$
ip netns add "$NA" || { echo "SKIP: cannot make network namespaces" >&2; exit 77; }
on_exit "ip netns del $NA"
ip netns add "$NB"
on_exit "ip netns del $NB"
ip link add "$VA" type veth peer name "$VB"
ip link set "$VA" netns "$NA"
ip link set "$VB" netns "$NB"
ip -n "$NA" addr add 192.0.2.1/24 dev "$VA"
ip -n "$NB" addr add 192.0.2.2/24 dev "$VB"
for ns in "$NA" "$NB"; do ip -n "$ns" link set lo up; done
ip -n "$NA" link set "$VA" up
ip -n "$NB" link set "$VB" up

make_ca "$TMP/tls-a" hostA
make_ca "$TMP/tls-b" hostB "$TMP/tls-a"
AGENT_PREFIX="ip netns exec $NB" start_agent hostB --mgmt 192.0.2.2:0 --tls-dir "$TMP/tls-b"
# A stream whose writes stall for 2 s counts as cut (the default is 15 s).
AGENT_PREFIX="env SVM_PEER_NFC_WRITE_MS=2000 ip netns exec $NA" \
  start_agent hostA --mgmt 192.0.2.1:0 --tls-dir "$TMP/tls-a" --nfc-rate 4M
DEST=192.0.2.2:$PORT_hostB
SRC=$TMP/hostA/ds1 DST=$TMP/hostB/ds1
M=$((1024 * 1024))
uri() { on "$1" vm show "$2" --json | json_get "d['disks'][$3]['nbd-uri']"; }

# across the veth pair
on hostA vm create vm1 --datastore ds1 --disk 16M:thin >/dev/null
qemu-io -f raw -c 'write -P 0x31 2M 2M' "$(uri hostA vm1 0)" >/dev/null
SUM1=$(checksum "$SRC/vm1/disk0.raw")
on hostA migrate vm1 --datastore ds1 --host "$DEST" >/dev/null
[ "$(checksum "$DST/vm1/disk0.raw")" = "$SUM1" ] || fail "vm1 differs on hostB"
grep -q 'peer 192.0.2.1:[0-9]*: host hostA (x509, identity hostA) connected' "$TMP/hostB.log" ||
  fail "hostB did not log hostA's identity and address"
ok "vm1 moved from 192.0.2.1 to 192.0.2.2"

# the link cut mid-copy: 24 MiB of data at 4 MiB/s
on hostA vm create vm2 --datastore ds1 --disk 48M:thin >/dev/null
qemu-io -f raw -c 'write -P 0x32 0 16M' -c 'write -P 0x33 32M 8M' "$(uri hostA vm2 0)" >/dev/null
cp --sparse=always "$SRC/vm2/disk0.raw" "$TMP/ref2.raw"
on hostA migrate vm2 --datastore ds1 --host "$DEST" --json >"$TMP/mig2.json" 2>"$TMP/mig2.err" &
MIG=$!
wait_received "$DST/.svm-incoming.vm2/disk0.raw" $((6 * M))
ip -n "$NA" link set "$VA" down
wait_log hostA 'host move .* of VM vm2: disk0.raw: .*; resuming' 60
ip -n "$NA" link set "$VA" up
rc=0
wait "$MIG" || rc=$?
[ "$rc" -eq 0 ] || fail "the move did not survive the cut: $(cat "$TMP/mig2.err")"
qemu-img compare -q -f raw -F raw "$TMP/ref2.raw" "$(uri hostB vm2 0)" || fail "vm2 differs"
cmp "$TMP/ref2.raw" "$DST/vm2/disk0.raw" || fail "vm2's file differs"
json_get "d['state'] == 'done' and d['resumes'] >= 1 and d['bytes_resumed'] > 0" \
  <"$TMP/mig2.json" | grep -q True || fail "no resume counted: $(cat "$TMP/mig2.json")"
[ ! -e "$SRC/vm2" ] || fail "hostA kept vm2"
ok "link cut mid-copy: resumed $(json_get "d['resumes']" <"$TMP/mig2.json") time(s), $(json_get "d['bytes_resumed']" <"$TMP/mig2.json") bytes not sent again, data identical"
