#!/usr/bin/env bash
# NFC --nfc-rate: a copy capped at 16 MiB/s over about 10 s runs at the cap within 10%.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nfc-lib.sh"
require openssl python3

src=$TMP/src.raw
dd if=/dev/urandom of="$src" bs=1M count=160 status=none
mkdir "$TMP/dst"
start_nfc_recv "$TMP/dst"
"$NFC" send "${NFC_TLS[@]}" --json --streams 2 --rate 16M "$NFC_ADDR" "$src" capped.raw >"$TMP/out.json"
cmp "$src" "$TMP/dst/capped.raw" || fail "contents differ"
python3 - "$TMP/out.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
rate = d["bytes_wire"] / d["seconds"] / (1 << 20)
print(f"ok: {d['bytes_wire']} bytes in {d['seconds']:.2f} s: {rate:.2f} MiB/s against a 16 MiB/s cap")
assert 16 * 0.9 <= rate <= 16 * 1.1, f"rate {rate:.2f} MiB/s is not within 10% of 16 MiB/s"
PY
