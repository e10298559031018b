# shellcheck shell=bash disable=SC2034
# Helpers for the NFC integration tests (source after lib.sh):
#   NFC_TLS                        the TLS options of both ends: a fresh pre-shared key
#   start_nfc_recv DIR [ARGS...]   start `svm-nfc recv` on a free loopback port into DIR
#                                  (ARGS default: "${NFC_TLS[@]}"); sets
#                                  NFC_ADDR (127.0.0.1:PORT) and NFC_PID; stopped at exit
#   json_get FILE KEY              a number from svm-nfc send --json
NFC=$SVM_BIN/svm-nfc
[ -x "$NFC" ] || { echo "SKIP: $NFC not built" >&2; exit 77; }

NFC_PSK=$TMP/keys.psk
(umask 077 && echo "svm-test:$(openssl rand -hex 32)" >"$NFC_PSK")
NFC_TLS=(--tls-psk "$NFC_PSK")

_nfc_n=0
start_nfc_recv() {
  local dir=$1 pf i
  shift
  [ $# -gt 0 ] || set -- "${NFC_TLS[@]}"
  _nfc_n=$((_nfc_n + 1))
  pf=$TMP/nfc-port-$_nfc_n
  "$NFC" recv --port-file "$pf" "$@" 127.0.0.1:0 "$dir" 2>>"$TMP/nfc-recv.log" &
  NFC_PID=$!
  on_exit "stop_pid $NFC_PID"
  for ((i = 0; i < 400; i++)); do
    [ -s "$pf" ] && break
    kill -0 "$NFC_PID" 2>/dev/null || fail "svm-nfc recv died: $(cat "$TMP/nfc-recv.log")"
    sleep 0.05
  done
  [ -s "$pf" ] || fail "svm-nfc recv did not listen within 20 s"
  NFC_ADDR=127.0.0.1:$(cat "$pf")
}

json_get() {
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}
