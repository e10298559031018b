#!/usr/bin/env bash
# NBD over TCP with TLS (NBD_OPT_STARTTLS), through the one TLS module (nfc/tls.h): libnbd's
# nbdinfo and nbdsh read and write with x509 certificates (QEMU's layout) and with a PSK;
# plaintext, a client without a certificate, a certificate of another CA and a wrong key are
# all refused; the unix socket of the same export stays plaintext for the local guest.
source "$(dirname "$0")/nbd-lib.sh"
requires nbdinfo nbdsh openssl

# x509 credentials: a CA, the server's and the client's certificates (EC P-256, TLS 1.3)
mkcreds() {   # mkcreds DIR CN
  local d=$1
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=test CA $2" -keyout "$d/ca-key.pem" -out "$d/ca-cert.pem" 2>/dev/null
  for who in server client; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
      -keyout "$d/$who-key.pem" -out "$d/$who.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=%s\n' \
      "$([ $who = server ] && echo serverAuth || echo clientAuth)" >"$d/$who.ext"
    openssl x509 -req -in "$d/$who.csr" -CA "$d/ca-cert.pem" -CAkey "$d/ca-key.pem" \
      -CAcreateserial -days 2 -extfile "$d/$who.ext" -out "$d/$who-cert.pem" 2>/dev/null
  done
  chmod 600 "$d"/*-key.pem
}
mkcreds "$NBD_TMP/pki" localhost
mkcreds "$NBD_TMP/other" localhost        # same names, another CA
mkdir "$NBD_TMP/nocert" && cp "$NBD_TMP/pki/ca-cert.pem" "$NBD_TMP/nocert/"

disk=$NBD_TMP/disk.raw
truncate -s 16M "$disk"
start_serve "$disk" --tcp 127.0.0.1:0 --tls-dir "$NBD_TMP/pki"
port=$(sed -n 's|^nbds://127.0.0.1:\([0-9]*\)/.*|\1|p' "$NBD_TMP/serve.uri")
[ -n "$port" ] || fail "no TCP URI: $(cat "$NBD_TMP/serve.uri")"
tls_uri="nbds://127.0.0.1:$port/disk?tls-certificates=$NBD_TMP/pki"

nbdinfo --size "$tls_uri" | grep -qx 16777216 || fail "nbdinfo over TLS (x509)"
URI=$tls_uri nbdsh -c '
import os
h.set_uri_allow_local_file(True)
h.connect_uri(os.environ["URI"])
h.pwrite(b"\xab" * 65536, 1 << 20)
assert h.pread(65536, 1 << 20) == b"\xab" * 65536
for i in range(64):                       # many in flight, replies larger than a record
    h.aio_pread(nbd.Buffer(1 << 20), i << 17)
while h.aio_in_flight() > 0:
    h.poll(-1)
' || fail "nbdsh over TLS"
cmp <(head -c 65536 /dev/zero | tr '\0' '\253') <(dd if="$disk" bs=64k skip=16 count=1 status=none) ||
  fail "the write over TLS is not in the file"
# the unix socket of the same export: plaintext, for the local hypervisor
nbdinfo --size "$NBD_URI" | grep -qx 16777216 || fail "unix socket beside a TLS TCP listener"

# refused: plaintext, no client certificate, another CA
! nbdinfo --size "nbd://127.0.0.1:$port/disk" >/dev/null 2>"$NBD_TMP/err" ||
  fail "plaintext client served by a TLS export"
grep -qi "tls" "$NBD_TMP/err" || fail "plaintext refusal does not mention TLS: $(cat "$NBD_TMP/err")"
! nbdinfo --size "nbds://127.0.0.1:$port/disk?tls-certificates=$NBD_TMP/nocert" 2>/dev/null ||
  fail "a client without a certificate was served"
! nbdinfo --size "nbds://127.0.0.1:$port/disk?tls-certificates=$NBD_TMP/other" 2>/dev/null ||
  fail "a client with another CA's certificate was served"
stop_serve

# ---- PSK ----
printf 'alice:%s\n' "$(openssl rand -hex 32)" >"$NBD_TMP/keys.psk"
printf 'alice:%s\n' "$(openssl rand -hex 32)" >"$NBD_TMP/wrong.psk"
chmod 600 "$NBD_TMP"/*.psk
start_serve "$disk" --tcp 127.0.0.1:0 --tls-psk "$NBD_TMP/keys.psk"
port=$(sed -n 's|^nbds://127.0.0.1:\([0-9]*\)/.*|\1|p' "$NBD_TMP/serve.uri")
URI="nbds://alice@127.0.0.1:$port/disk?tls-psk-file=$NBD_TMP/keys.psk" nbdsh -c '
import os
h.set_uri_allow_local_file(True)
h.connect_uri(os.environ["URI"])
assert h.pread(65536, 1 << 20) == b"\xab" * 65536' || fail "nbdsh over TLS (PSK)"
! nbdinfo --size "nbds://alice@127.0.0.1:$port/disk?tls-psk-file=$NBD_TMP/wrong.psk" 2>/dev/null ||
  fail "a wrong PSK was accepted"
! nbdinfo --size "nbd://127.0.0.1:$port/disk" 2>/dev/null || fail "plaintext served (PSK export)"
kill -0 "$SERVE_PID" || fail "the server died"
stop_serve
grep -q "STARTTLS" "$NBD_TMP/serve.log" || fail "no log line for the refused TLS clients"
echo OK
