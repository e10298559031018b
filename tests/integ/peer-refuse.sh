#!/bin/bash
# The peer link refuses, before any file is made, every peer that does not authenticate: a
# certificate from another CA, an expired certificate, no TLS at all (plaintext), a wrong
# pre-shared key, and a host that claims another name than its certificate. Each refusal is a
# log line on the destination naming the peer and the reason; the source's move fails with a
# message and keeps its VM, exported. The same pairs with matching credentials do move.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/peer-lib.sh"
require openssl python3

make_ca "$TMP/tls-b" hostB
make_ca "$TMP/tls-a" hostA "$TMP/tls-b"          # same CA: the good source
make_ca "$TMP/tls-other" hostA                    # another CA
make_ca "$TMP/tls-liar" hostA "$TMP/tls-b"        # a good certificate for hostA ...
# ... and one that expired yesterday, signed by the right CA (OpenSSL's own tool: a second
# implementation, so the refusal does not depend on how svmctl makes certificates)
mkdir -m 700 "$TMP/tls-expired"
cp "$TMP/tls-b/ca-cert.pem" "$TMP/tls-expired/"
cp "$TMP/tls-a/server-cert.pem" "$TMP/tls-a/server-key.pem" "$TMP/tls-expired/"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$TMP/tls-expired/client-key.pem" -subj /CN=hostA 2>/dev/null |
  openssl x509 -req -CA "$TMP/tls-b/ca-cert.pem" -CAkey "$TMP/tls-b/ca-key.pem" -days -1 \
    -out "$TMP/tls-expired/client-cert.pem" 2>/dev/null
openssl x509 -in "$TMP/tls-expired/client-cert.pem" -noout -checkend 0 >/dev/null &&
  fail "the test certificate is not expired"
printf 'svm:%s\n' "$(openssl rand -hex 32)" >"$TMP/good.psk"
printf 'svm:%s\n' "$(openssl rand -hex 32)" >"$TMP/bad.psk"

start_agent hostB --mgmt 127.0.0.1:0 --tls-dir "$TMP/tls-b"
DESTNAME=hostB DEST=127.0.0.1:$PORT_hostB

# try NAME CREDS-ARGS LOG-REGEX: a source with these credentials is refused
try() {
  local name=$1 regex=$3
  read -r -a creds <<<"$2"
  start_agent "$name" "${creds[@]}"
  on "$name" vm create vm1 --datastore ds1 --disk 8M:thin >/dev/null
  local before
  before=$(checksum "$TMP/$name/ds1/vm1/disk0.raw")
  expect_exit 1 "move of VM vm1 to $DEST failed" on "$name" migrate vm1 --datastore ds1 \
    --host "$DEST"
  wait_log "$DESTNAME" "$regex"
  grep -E "$regex" "$TMP/$DESTNAME.log" | grep -q '127.0.0.1:' ||
    fail "$name: the refusal does not name the peer"
  ds_empty "$DESTNAME"
  # the source keeps its VM, exported again
  [ "$(checksum "$TMP/$name/ds1/vm1/disk0.raw")" = "$before" ] || fail "$name: disk changed"
  on "$name" vm show vm1 --json | json_get "d['disks'][0]['nbd-uri']" | grep -q nbd+unix ||
    fail "$name: vm1 is not exported again"
  qemu-img info "$(on "$name" vm show vm1 --json | json_get "d['disks'][0]['nbd-uri']")" \
    >/dev/null || fail "$name: vm1's export does not answer"
  stop_agent "$name"
  ok "$name refused: $(grep -E "$regex" "$TMP/$DESTNAME.log" | tail -1 | cut -c1-160)"
}

try otherca "--tls-dir $TMP/tls-other" 'refused: .*unknown ca|refused: .*another CA'
try expired "--tls-dir $TMP/tls-expired" 'refused: .*certificate has expired'
try plain "--insecure" 'refused: .*plaintext peer'
# claims to be hostX with hostA's certificate
start_agent hostX --tls-dir "$TMP/tls-liar"
on hostX vm create vm1 --datastore ds1 --disk 8M:thin >/dev/null
expect_exit 1 "certificate is for 'hostA'" on hostX migrate vm1 --datastore ds1 --host "$DEST"
wait_log hostB "refused: .*says it is host 'hostX' but its certificate is for 'hostA'"
ds_empty hostB
stop_agent hostX
ok "a host name that does not match the certificate is refused"

# A TLS source and a plaintext destination do not talk either.
start_agent plaindest --mgmt 127.0.0.1:0 --insecure
start_agent hostA --tls-dir "$TMP/tls-a"
on hostA vm create vm1 --datastore ds1 --disk 8M:thin >/dev/null
expect_exit 1 "failed" on hostA migrate vm1 --datastore ds1 --host "127.0.0.1:$PORT_plaindest"
ds_empty plaindest
ok "a TLS source refuses a plaintext destination: $(tail -1 "$TMP/stderr" | cut -c1-160)"

# The good source moves.
on hostA migrate vm1 --datastore ds1 --host "$DEST" >/dev/null
[ -f "$TMP/hostB/ds1/vm1/disk0.raw" ] || fail "the good source did not move vm1"
ok "the source with the right CA moves"

# PSK: the wrong key is refused, the right one moves.
stop_agent hostB
start_agent hostB2 --mgmt 127.0.0.1:0 --tls-psk "$TMP/good.psk"
DESTNAME=hostB2 DEST=127.0.0.1:$PORT_hostB2
try badpsk "--tls-psk $TMP/bad.psk" 'refused: .*(wrong pre-shared key|binder|decrypt)'
start_agent goodpsk --tls-psk "$TMP/good.psk"
on goodpsk vm create vm2 --datastore ds1 --disk 8M:thin >/dev/null
on goodpsk migrate vm2 --datastore ds1 --host "127.0.0.1:$PORT_hostB2" >/dev/null
[ -f "$TMP/hostB2/ds1/vm2/disk0.raw" ] || fail "the PSK source did not move vm2"
ok "PSK: the right key moves, the wrong one is refused"
