#!/usr/bin/env bash
# NFC across a link that is cut without a reset: sender and receiver in two network namespaces
# joined by a veth pair (192.0.2.0/24, then 198.51.100.0/24: documentation addresses; nothing
# in the host's namespace changes). Mid-copy the link goes down (`ip link set down`): the
# sender's write times out; then the sender's namespace is deleted, so the receiver's connection stays silent
# (no FIN or reset ever arrives). A new sender on a new link sends the copy again: the
# receiver takes the range over from the silent connection (without waiting for its 60 s
# timeout) and only about what was not yet durable travels again. Bytes counted.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nfc-lib.sh"
require_root
require ip openssl qemu-img python3
MiB=$((1024 * 1024))

id=nfc$$
nsb=$id-b
ip netns add "$nsb"
on_exit "ip netns del $nsb"
ip -n "$nsb" link set lo up
# The sender's side: a namespace and its veth into the receiver's; made again after the cut,
# under new names and in another documentation subnet (a deleted namespace lingers while the
# dead sender's sockets still hold it, and with it the old link and its route).
n=0
link_up() {
  local net=$1
  n=$((n + 1))
  nsa=$id-a$n dev=${id}a$n
  ip netns add "$nsa"
  on_exit "ip netns del $nsa"
  ip link add "$dev" netns "$nsa" type veth peer name "${id}b$n" netns "$nsb"
  ip -n "$nsa" addr add "$net.1/24" dev "$dev"
  ip -n "$nsb" addr add "$net.2/24" dev "${id}b$n"
  ip -n "$nsa" link set lo up
  ip -n "$nsa" link set "$dev" up
  ip -n "$nsb" link set "${id}b$n" up
}
link_up 192.0.2

# 256 MiB, 128 MiB of it data in 2 MiB extents
src=$TMP/src.raw
truncate -s 256M "$src"
for ((o = 0; o < 256; o += 4)); do
  dd if=/dev/urandom of="$src" bs=1M count=2 seek=$o conv=notrunc status=none
done
mkdir "$TMP/dst"
ip netns exec "$nsb" "$NFC" recv "${NFC_TLS[@]}" --sync-mb 4 --port-file "$TMP/port" \
  0.0.0.0:0 "$TMP/dst" 2>>"$TMP/nfc-recv.log" &
recv_pid=$!
on_exit "stop_pid $recv_pid"
for ((i = 0; i < 400; i++)); do [ -s "$TMP/port" ] && break; sleep 0.05; done
[ -s "$TMP/port" ] || fail "the receiver did not start: $(cat "$TMP/nfc-recv.log")"
addr=192.0.2.2:$(cat "$TMP/port")

# A capped copy (16 MiB/s: about 8 s), cut once a third of the data is on the receiver's disk.
SVM_NFC_IO_TIMEOUT_MS=2000 ip netns exec "$nsa" "$NFC" send "${NFC_TLS[@]}" --json \
  --rate 16M "$addr" "$src" x.raw >"$TMP/cut.json" 2>"$TMP/cut.err" &
send_pid=$!
on_exit "stop_pid $send_pid"
for ((i = 0; i < 600; i++)); do
  [ -f "$TMP/dst/x.raw" ] && [ "$(allocated "$TMP/dst/x.raw")" -ge $((40 * MiB)) ] && break
  sleep 0.05
done
[ "$(allocated "$TMP/dst/x.raw")" -ge $((40 * MiB)) ] || fail "the copy did not get going"
ip -n "$nsa" link set "$dev" down
rc=0
wait "$send_pid" || rc=$?
[ $rc -eq 1 ] || fail "the cut copy exited $rc: $(cat "$TMP/cut.err")"
first=$(json_get "$TMP/cut.json" bytes_wire)
# The sender's host is gone for good (its namespace, sockets and link deleted: not even a
# retransmitted FIN will reach the receiver); a new one comes up at the same address.
ip netns del "$nsa"
link_up 198.51.100
addr=198.51.100.2:$(cat "$TMP/port")

# Again, uncapped: the receiver still has the silent connection on the range (60 s timeout).
t0=$(date +%s)
ip netns exec "$nsa" "$NFC" send "${NFC_TLS[@]}" --json "$addr" "$src" x.raw >"$TMP/again.json"
t1=$(date +%s)
again=$(json_get "$TMP/again.json" bytes_wire)
qemu-img compare -q -f raw -F raw "$src" "$TMP/dst/x.raw" || fail "contents differ"
full=$((128 * MiB + 64 * 1024))
# What was sent but not yet durable (a sync interval, socket buffers) travels twice; the rest
# once. Far from sending all of it again.
[ $((first + again)) -le $((full + 24 * MiB)) ] ||
  fail "$first bytes before the cut and $again after: more than the rest was sent again"
[ "$again" -le $((full * 3 / 4)) ] || fail "$again bytes sent again of $full"
[ $((t1 - t0)) -lt 30 ] || fail "the resume waited $((t1 - t0)) s for the silent connection"
grep -Eq "x.raw: .*connection (dropped|closed)" "$TMP/nfc-recv.log" ||
  fail "the receiver did not log the dropped connection: $(cat "$TMP/nfc-recv.log")"
ok "link cut after $first bytes on the wire; resumed with $again ($((again * 100 / full))%" \
   "of the data) in $((t1 - t0)) s, the silent connection taken over"
