#!/usr/bin/env bash
# Query results of any size reach the client: a disk whose changed blocks alternate over a
# large sparse disk has more than a million changed extents; svmctl cbt query gets every one
# of them, as JSON and as text (the control protocol pages the answer with a cursor; see
# svm/control/proto.h).
export TMPDIR=/dev/shm      # the .ctk marks are a million small syncs: on tmpfs they are free
if [ ! -d /dev/shm ] || [ ! -w /dev/shm ]; then echo "SKIP: no /dev/shm"; exit 77; fi
source "$(dirname "$0")/agent-lib.sh"

GRAN=65536
SIZE=$((GRAN * 2 * 1100000))      # 1.1 million marked blocks, one unmarked between each two
start_svmd
svmctl vm create big --datastore ds1 --disk "$SIZE" >/dev/null
UUID=$(sed -n 's/^disk0.uuid = //p' "$T/ds1/big/big.svm")
stop_svmd
N=$("$SVM_BIN/ctk-fill" "$T/ds1/big/disk0.ctk" "$UUID" "$SIZE")
[ "$N" = 1100000 ] || fail "ctk-fill marked $N blocks"

start_svmd
svmctl cbt query big 0 --since '*' --json >"$T/q.json" || fail "cbt query --json failed"
python3 - "$T/q.json" "$N" "$GRAN" <<'PYEOF' || fail "JSON answer incomplete"
import json, sys
d = json.load(open(sys.argv[1]))
n, g = int(sys.argv[2]), int(sys.argv[3])
ex = d["extents"]
assert len(ex) == n, f"{len(ex)} extents, want {n}"
for i, e in enumerate(ex):
    assert e["offset"] == 2 * g * i and e["length"] == g, f"extent {i}: {e}"
assert d["changed-bytes"] == n * g, d["changed-bytes"]
PYEOF
svmctl cbt query big 0 --since '*' >"$T/q.txt" || fail "cbt query (text) failed"
[ "$(wc -l <"$T/q.txt")" = "$N" ] || fail "text answer: $(wc -l <"$T/q.txt") lines, want $N"
[ "$(tail -1 "$T/q.txt")" = "$(( (N - 1) * 2 * GRAN )) $GRAN" ] || fail "last text line: $(tail -1 "$T/q.txt")"
echo "harden-query: ok"
