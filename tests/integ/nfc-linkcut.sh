#!/usr/bin/env bash
# NFC across a link that is cut without a reset: sender and receiver in two network namespaces
# joined by a veth pair (192.0.2.1 and 192.0.2.2, documentation addresses; nothing changes in
# the host's namespace). Mid-copy the link goes down (`ip link set down`): the sender's write
# times out, the receiver's connection just goes silent. The link comes back up and the copy is
# sent again: the receiver takes the range over from the silent connection (without waiting
# for its 60 s timeout) and only about what was not yet durable travels again. Bytes counted.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nfc-lib.sh"
require_root
require ip openssl qemu-img python3
MiB=$((1024 * 1024))

id=nfc$$
nsa=$id-a nsb=$id-b
ip netns add "$nsa"
on_exit "ip netns del $nsa"
ip netns add "$nsb"
on_exit "ip netns del $nsb"
ip link add "${id}a" netns "$nsa" type veth peer name "${id}b" netns "$nsb"
ip -n "$nsa" addr add 192.0.2.1/24 dev "${id}a"
ip -n "$nsb" addr add 192.0.2.2/24 dev "${id}b"
for ns in "$nsa" "$nsb"; do ip -n "$ns" link set lo up; done
ip -n "$nsa" link set "${id}a" up
ip -n "$nsb" link set "${id}b" up

# 256 MiB, 128 MiB of it data in 2 MiB extents
src=$TMP/src.raw
truncate -s 256M "$src"
for ((o = 0; o < 256; o += 4)); do
  dd if=/dev/urandom of="$src" bs=1M count=2 seek=$o conv=notrunc status=none
done
mkdir "$TMP/dst"
ip netns exec "$nsb" "$NFC" recv "${NFC_TLS[@]}" --sync-mb 4 --port-file "$TMP/port" \
  192.0.2.2:0 "$TMP/dst" 2>>"$TMP/nfc-recv.log" &
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
ip -n "$nsa" link set "${id}a" down
rc=0
wait "$send_pid" || rc=$?
[ $rc -eq 1 ] || fail "the cut copy exited $rc: $(cat "$TMP/cut.err")"
first=$(json_get "$TMP/cut.json" bytes_wire)
ip -n "$nsa" link set "${id}a" up

# Again, uncapped: the receiver still has the silent connection on the range.
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
grep -q "x.raw: connection dropped" "$TMP/nfc-recv.log" ||
  fail "the receiver did not log the dropped connection: $(cat "$TMP/nfc-recv.log")"
ok "link cut after $first bytes on the wire; resumed with $again ($((again * 100 / full))%" \
   "of the data) in $((t1 - t0)) s, the silent connection taken over"
