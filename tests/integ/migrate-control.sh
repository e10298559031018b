#!/usr/bin/env bash
# The control plane never stalls behind one client: while a client trickles a request one
# byte at a time (and would keep a one-at-a-time server busy for ever), another connects and
# never sends, and a long eager-zeroed create runs, `svmctl vm list` and `status` are answered.
# The trickling client is still waiting for its answer when they are.
source "$(dirname "$0")/agent-lib.sh"

start_svmd
svmctl vm create vm1 --datastore ds1 --disk 1M >/dev/null
python3 - "$SVM_STATE/control.sock" "$T" <<'EOF2' &
import os, socket, sys, time
path, t = sys.argv[1], sys.argv[2]
idle = socket.socket(socket.AF_UNIX); idle.connect(path)          # sends nothing
s = socket.socket(socket.AF_UNIX); s.connect(path)
req = b"SVMCTL/1 vm-list format=json" + b" x=" + b"y" * 10000
open(t + "/slow.started", "w").close()
for i in range(len(req)):
    if os.path.exists(t + "/slow.stop"):
        break
    s.send(req[i:i + 1])
    time.sleep(0.05)
# the answer comes only now: the request's deadline (or its end)
s.settimeout(30)
data = s.recv(4096)
open(t + "/slow.answer", "wb").write(data)
EOF2
SLOW=$!
for _ in $(seq 1 100); do [ -e "$T/slow.started" ] && break; sleep 0.05; done
[ -e "$T/slow.started" ] || fail "the slow client did not start"
# an eager-zeroed create writes every byte; it runs beside the others
svmctl vm create big --datastore ds2 --disk 256M:eager-zeroed-thick >"$T/big.out" &
BIG=$!
timeout 30 "$SVM_BIN/svmctl" vm list --json >"$T/list.json" || fail "vm list did not answer"
json_get '[v["name"] for v in d["vms"]]' <"$T/list.json" | grep -q vm1 || fail "vm list: $(cat "$T/list.json")"
timeout 30 "$SVM_BIN/svmctl" status --json >"$T/status.json" || fail "status did not answer"
json_get 'd["running"]' <"$T/status.json" >/dev/null || fail "status: $(cat "$T/status.json")"
[ ! -e "$T/slow.answer" ] || fail "the slow client was answered before vm list: the test proves nothing"
kill -0 "$SLOW" || fail "the slow client is gone"
wait "$BIG" || fail "the eager-zeroed create failed: $(cat "$T/big.out")"
touch "$T/slow.stop"
wait "$SLOW" || fail "slow client"
grep -q "ERR" "$T/slow.answer" || fail "the slow client's answer: $(cat "$T/slow.answer")"
echo "slow client answered: $(cat "$T/slow.answer")"
timeout 30 "$SVM_BIN/svmctl" vm list >/dev/null || fail "vm list after"
stop_svmd
echo PASS
