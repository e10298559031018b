#!/usr/bin/env bash
# TCP exports are asked for on purpose: a wildcard address (0, 0.0.0.0, ::) only through
# --tcp-any PORT, ports parsed strictly (1-65535, and PORT+N for N disks must fit), and
# plaintext NBD over TCP only when svmd runs with --insecure, each refusal naming the flag;
# with --tls-dir, TCP exports speak TLS (nbdinfo with the client certificate) and refuse
# plaintext.
source "$(dirname "$0")/agent-lib.sh"
requires nbdinfo
export PATH=/usr/bin:/bin:$PATH

start_svmd
expect_fail 1 "start svmd with --tls-dir DIR or --tls-psk FILE (TCP clients then need TLS) or --insecure" \
  svmctl vm create plain --datastore ds1 --disk 1M --tcp 127.0.0.1:0
[ ! -e "$T/ds1/plain" ] || fail "a refused VM left its folder"
stop_svmd

start_svmd --insecure
for a in 0 0.0.0.0 '[::]' '[0::0]'; do
  expect_fail 1 "--tcp-any PORT" svmctl vm create w --datastore ds1 --disk 1M --tcp "$a:0"
done
for p in 65536 99999999999999999999 -1 +80 '' 8x; do
  expect_fail 1 "--tcp" svmctl vm create w --datastore ds1 --disk 1M --tcp "127.0.0.1:$p"
done
expect_err "1 to 65535"
expect_fail 1 "3 disks need ports 65534-65536" \
  svmctl vm create w --datastore ds1 --disk 1M --disk 1M --disk 1M --tcp 127.0.0.1:65534
expect_fail 1 "--tcp and --tcp-any exclude each other" \
  svmctl vm create w --datastore ds1 --disk 1M --tcp 127.0.0.1:0 --tcp-any 0
expect_fail 1 "--tcp-any" svmctl vm create w --datastore ds1 --disk 1M --tcp-any 70000
# the ones that are fine
svmctl vm create lo --datastore ds1 --disk 1M --disk 1M --tcp 127.0.0.1:0 >/dev/null
svmctl vm create any --datastore ds1 --disk 1M --tcp-any 0 --json >"$T/any.json"
port=$(json_get 'd["disks"][0]["nbd-tcp-uri"]' <"$T/any.json" | sed 's|.*:\([0-9]*\)/.*|\1|')
[ -n "$port" ] || fail "no TCP URI for VM any: $(cat "$T/any.json")"
nbdinfo --size "nbd://127.0.0.1:$port/any/disk0" | grep -qx 1048576 || fail "--tcp-any export"
stop_svmd

# restarted without --insecure: the VMs are served on their unix sockets, not over TCP
start_svmd
grep -q "lo/disk0: not exported over TCP .*--insecure" "$LOG" || fail "no log line for lo"
nbdinfo --size "$(uri lo 1)" | grep -qx 1048576 || fail "lo not served on its unix socket"
svmctl vm show lo --json | json_get 'd["disks"][0]["nbd-tcp-uri"]' | grep -qx None ||
  fail "vm show still lists a TCP URI for lo"
stop_svmd

# ---- with --tls-dir: TLS on TCP, plaintext refused ----
requires openssl
d=$T/pki
mkdir -p "$d"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=test CA" -keyout "$d/ca-key.pem" -out "$d/ca-cert.pem" 2>/dev/null
for who in server client; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout "$d/$who-key.pem" -out "$d/$who.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$d/$who.ext"
  openssl x509 -req -in "$d/$who.csr" -CA "$d/ca-cert.pem" -CAkey "$d/ca-key.pem" \
    -CAcreateserial -days 2 -extfile "$d/$who.ext" -out "$d/$who-cert.pem" 2>/dev/null
done
chmod 600 "$d"/*-key.pem
start_svmd --tls-dir "$d"
svmctl vm create sec --datastore ds2 --disk 1M --tcp 127.0.0.1:0 --json >"$T/sec.json"
json_get 'd["disks"][0]["nbd-tcp-uri"]' <"$T/sec.json" | grep -q '^nbds://127.0.0.1:' ||
  fail "the TLS export's URI is not nbds://: $(cat "$T/sec.json")"
port=$(json_get 'd["disks"][0]["nbd-tcp-uri"]' <"$T/sec.json" | sed 's|.*:\([0-9]*\)/.*|\1|')
nbdinfo --size "nbds://127.0.0.1:$port/sec/disk0?tls-certificates=$d" | grep -qx 1048576 ||
  fail "svmd --tls-dir: nbdinfo over TLS"
! nbdinfo --size "nbd://127.0.0.1:$port/sec/disk0" 2>/dev/null ||
  fail "svmd --tls-dir: a plaintext client was served over TCP"
nbdinfo --size "$(uri sec 0)" | grep -qx 1048576 || fail "svmd --tls-dir: the unix socket"
stop_svmd

# ---- with --tls-psk: the same VM, TLS with a pre-shared key ----
printf 'alice:%s\n' "$(openssl rand -hex 32)" >"$T/keys.psk"
printf 'alice:%s\n' "$(openssl rand -hex 32)" >"$T/wrong.psk"
chmod 600 "$T"/*.psk
start_svmd --tls-psk "$T/keys.psk"
port=$(svmctl vm show sec --json | json_get 'd["disks"][0]["nbd-tcp-uri"]' |
       sed 's|.*:\([0-9]*\)/.*|\1|')
nbdinfo --size "nbds://alice@127.0.0.1:$port/sec/disk0?tls-psk-file=$T/keys.psk" |
  grep -qx 1048576 || fail "svmd --tls-psk: nbdinfo over TLS"
! nbdinfo --size "nbds://alice@127.0.0.1:$port/sec/disk0?tls-psk-file=$T/wrong.psk" 2>/dev/null ||
  fail "svmd --tls-psk: a wrong key was accepted"
! nbdinfo --size "nbd://127.0.0.1:$port/sec/disk0" 2>/dev/null ||
  fail "svmd --tls-psk: a plaintext client was served over TCP"
stop_svmd
expect_fail 2 "exclude each other" "$SVM_BIN/svmd" --name x --state "$T/st2" \
  --datastore "ds1=$T/ds1" --tls-dir "$d" --tls-psk "$T/keys.psk"
echo OK
