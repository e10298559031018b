# Two hosts with real networks for the migration network and precheck tests (sourced after
# lib.sh and peer-lib.sh; needs root and iproute2). Every name carries a prefix unique to this
# run (pc<pid>), and everything is removed at exit.
#
#   ns_net flat|routed|shared   builds the namespaces:
#     $NS_A, $NS_B   the two hosts; each has mgmt0 (management) and mig0 (migration), veths
#                    into $NS_SW
#     $NS_SW         the "switch": a bridge per segment (br-mgmt, br-mig); with `routed` it is
#                    also the router between the two migration subnets (br-mig, br-mig2)
#     flat:    mgmt 192.0.2.1 / .2, migration 198.51.100.1 / .2 (one migration segment)
#     routed:  migration of A 198.51.100.1/24, of B 203.0.113.2/24, router .254 on each
#     shared:  as flat, but management is also in 198.51.100.0/24 (198.51.100.11 / .12)
#   MGMT_A MGMT_B MIG_A MIG_B   the addresses; GW_A GW_B the router's (routed)
#   nsx a|b|sw CMD...           run CMD in that namespace
#   ns_agent a|b [svmd args...] svmd in host a or b (agent name hostA / hostB), --mgmt on
#                               MGMT_X:7100 and --migration MIG_X:${MIG_PORT:-7200}
#   ns_third IP                 a third host on the migration segment holding IP
#   ns_counter a|b IFACE        the interface's tx+rx bytes (/sys/class/net/*/statistics)
require ip
require_root

NS_P=pc$$
NS_A=$NS_P-a
NS_B=$NS_P-b
NS_SW=$NS_P-sw

nsx() {
  local ns
  case "$1" in a) ns=$NS_A ;; b) ns=$NS_B ;; sw) ns=$NS_SW ;; *) ns=$1 ;; esac
  shift
  ip netns exec "$ns" "$@"
}

# _ns_port HOST SEGMENT IFACE BRIDGE: a veth from HOST's IFACE to BRIDGE in the switch
_ns_port() {
  local ns=$1 seg=$2 ifc=$3 br=$4
  ip link add "$NS_P$seg" netns "$ns" type veth peer name "$seg" netns "$NS_SW"
  ip -n "$ns" link set "$NS_P$seg" name "$ifc"
  ip -n "$NS_SW" link set dev "$seg" master "$br" up
  ip -n "$ns" link set "$ifc" up
}

ns_net() {
  local mode=$1
  for ns in "$NS_SW" "$NS_A" "$NS_B"; do
    ip netns add "$ns"
    on_exit "ip netns del $ns"
    ip -n "$ns" link set lo up
  done
  ip -n "$NS_SW" link add br-mgmt type bridge
  ip -n "$NS_SW" link add br-mig type bridge
  ip -n "$NS_SW" link set br-mgmt up
  ip -n "$NS_SW" link set br-mig up
  _ns_port "$NS_A" ga mgmt0 br-mgmt
  _ns_port "$NS_B" gb mgmt0 br-mgmt
  _ns_port "$NS_A" ma mig0 br-mig
  MGMT_A=192.0.2.1 MGMT_B=192.0.2.2 MIG_A=198.51.100.1 MIG_B=198.51.100.2
  GW_A='' GW_B=''
  case "$mode" in
  flat) _ns_port "$NS_B" mb mig0 br-mig ;;
  shared)
    _ns_port "$NS_B" mb mig0 br-mig
    MGMT_A=198.51.100.11 MGMT_B=198.51.100.12 ;;
  routed)
    ip -n "$NS_SW" link add br-mig2 type bridge
    ip -n "$NS_SW" link set br-mig2 up
    _ns_port "$NS_B" mb mig0 br-mig2
    MIG_B=203.0.113.2 GW_A=198.51.100.254 GW_B=203.0.113.254
    ip -n "$NS_SW" addr add 198.51.100.254/24 dev br-mig
    ip -n "$NS_SW" addr add 203.0.113.254/24 dev br-mig2
    nsx sw sysctl -qw net.ipv4.ip_forward=1 ;;
  *) fail "ns_net: flat, routed or shared, not '$mode'" ;;
  esac
  ip -n "$NS_A" addr add "$MGMT_A/24" dev mgmt0
  ip -n "$NS_B" addr add "$MGMT_B/24" dev mgmt0
  ip -n "$NS_A" addr add "$MIG_A/24" dev mig0
  ip -n "$NS_B" addr add "$MIG_B/24" dev mig0
  # the kernel's own DAD is not in IPv4: an address is usable at once, the veths need a moment
  # to carry frames (carrier): wait for the management path
  local i
  for i in $(seq 1 50); do
    nsx a ping -c1 -W1 -q "$MGMT_B" >/dev/null 2>&1 && return 0
  done
  fail "the management network between $NS_A and $NS_B does not carry packets"
}

ns_agent() {
  local x=$1 name mgmt mig
  shift
  case "$x" in
  a) name=hostA mgmt=$MGMT_A mig=$MIG_A ;;
  b) name=hostB mgmt=$MGMT_B mig=$MIG_B ;;
  esac
  AGENT_PREFIX="ip netns exec $NS_P-$x" start_agent "$name" --mgmt "$mgmt:7100" \
    --migration "$mig:${MIG_PORT:-7200}" "$@"
}

ns_third() {
  ip netns add "$NS_P-c"
  on_exit "ip netns del $NS_P-c"
  _ns_port "$NS_P-c" mc mig0 br-mig
  ip -n "$NS_P-c" addr add "$1/24" dev mig0
}

ns_counter() {
  local d=/sys/class/net/$2/statistics
  nsx "$1" sh -c "echo \$((\$(cat $d/tx_bytes) + \$(cat $d/rx_bytes)))"
}

# precheck [ARGS...]: svmctl precheck vm1 from hostA to hostB's datastore ds1; its output in
# $TMP/pc.out, its exit status in $PC_RC
precheck() {
  PC_RC=0
  on hostA precheck vm1 --datastore ds1 --host "$MGMT_B:7100" "$@" >"$TMP/pc.out" 2>&1 || PC_RC=$?
}
# expect_check RC LEVEL CHECK TEXT: the last precheck exited RC and has the line
# "LEVEL CHECK TEXT" (TEXT: the exact words, found and fix, as a fixed string)
expect_check() {
  local line
  [ "$PC_RC" -eq "$1" ] || { cat "$TMP/pc.out" >&2; fail "precheck exited $PC_RC, not $1"; }
  line=$(printf '%-7s %-10s %s' "$2" "$3" "$4")
  grep -qF -- "$line" "$TMP/pc.out" ||
    { cat "$TMP/pc.out" >&2; fail "precheck does not say: $line"; }
  ok "$2 $3: ${4:0:100}"
}

# ns_down: stop both agents and remove the namespaces (to build another network)
ns_down() {
  stop_agent hostA
  stop_agent hostB
  ip netns del "$NS_A"
  ip netns del "$NS_B"
  ip netns del "$NS_SW"
}

# says REGEX CMD...: CMD's output matches REGEX (read whole: `CMD | grep -q` under pipefail
# fails when grep stops reading before CMD has written everything)
says() {
  local re=$1 out
  shift
  out=$("$@" 2>&1) || true
  grep -Eq -- "$re" <<<"$out"
}
