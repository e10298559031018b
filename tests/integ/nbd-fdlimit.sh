#!/usr/bin/env bash
# 2000 connections to one VM's disk while svmd runs under `ulimit -n 1024`: the VM's listener
# takes at most its own share of connections, the rest wait in the backlog (or are refused),
# another VM is still served, and svmd neither spins nor floods its log. Then the same with
# a limit so low that accept() fails with EMFILE: svmd backs off (one log line a second at
# most, no busy loop) and serves everybody again once the hog is gone.
source "$(dirname "$0")/agent-lib.sh"
requires nbdinfo
export PATH=/usr/bin:/bin:$PATH

# start_limited NOFILE [SOFT]: svmd with that descriptor limit (hard; soft SOFT, default the same)
start_limited() {
  local ready_before
  ready_before=$(grep -c ': ready$' "$LOG" || true)
  (ulimit -Sn "${2:-$1}" && ulimit -Hn "$1" && exec "$SVM_BIN/svmd" --name testhost --state "$SVM_STATE" \
    --datastore "ds1=$T/ds1" --datastore "ds2=$T/ds2" --insecure) 2>>"$LOG" &
  SVMD_PID=$!
  for _ in $(seq 1 200); do
    [ "$(grep -c ': ready$' "$LOG" || true)" -gt "$ready_before" ] && return 0
    kill -0 "$SVMD_PID" 2>/dev/null || fail "svmd exited at start"
    sleep 0.05
  done
  fail "svmd did not become ready"
}

# cpu_ticks: svmd's user+system clock ticks so far
cpu_ticks() { awk '{print $14 + $15}' /proc/"$SVMD_PID"/stat; }

# hog N SOCKET|tcp:PORT SECONDS: N connections held open (never a byte sent) for SECONDS, in
# the background; writes how many connected to $T/hog.n
hog() {
  python3 - "$@" "$T/hog.n" <<'PY' &
import resource, socket, sys, time
n, path, secs, out = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
held = []
tcp = path.startswith("tcp:")
for _ in range(n):
    s = socket.socket(socket.AF_INET if tcp else socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", int(path[4:])) if tcp else path)
        held.append(s)
    except BlockingIOError:
        held.append(s)                    # TCP: in progress, or waiting in the backlog
    except OSError:
        s.close()
open(out, "w").write(f"{len(held)}\n")
time.sleep(secs)
PY
  HOG_PID=$!
  for _ in $(seq 1 200); do [ -s "$T/hog.n" ] && return 0; sleep 0.05; done
  fail "the hog did not connect"
}

served() {   # served VM: nbdinfo answers within 20 s
  timeout 20 nbdinfo --size "$(uri "$1" 0)" >/dev/null
}

# svmd raises its soft limit to the hard one
start_limited 4096 1024
grep -q '^Max open files *4096 *4096' /proc/"$SVMD_PID"/limits ||
  fail "svmd did not raise its open files limit: $(grep 'open files' /proc/"$SVMD_PID"/limits)"
stop_svmd

start_limited 1024
svmctl vm create vm1 --datastore ds1 --disk 16M --tcp 127.0.0.1:0 --json >"$T/vm1.json"
svmctl vm create vm2 --datastore ds2 --disk 16M >/dev/null
rm -f "$T/hog.n"
hog 2000 "$SVM_STATE/nbd/vm1-disk0.sock" 30
echo "hog: $(cat "$T/hog.n") of 2000 connections made"
t0=$(cpu_ticks)
served vm2 || fail "vm2 was not served while 2000 connections hit vm1"
sleep 1
served vm2 || fail "vm2 was not served while 2000 connections hit vm1 (2nd try)"
t1=$(cpu_ticks)
fds=$(ls /proc/"$SVMD_PID"/fd | wc -l)
echo "svmd: $fds descriptors open, $((t1 - t0)) CPU ticks over the check"
[ "$fds" -lt 1000 ] || fail "svmd holds $fds descriptors: vm1's listener took them all"
kill "$HOG_PID"; wait "$HOG_PID" 2>/dev/null || true
served vm1 || fail "vm1 not served after the hog left"

# TCP clients never take the places of the local guest: 1100 on vm1's TCP listener, and
# vm1's unix socket still serves
port=$(json_get 'd["disks"][0]["nbd-tcp-uri"]' <"$T/vm1.json" | sed 's|.*:\([0-9]*\)/.*|\1|')
rm -f "$T/hog.n"
hog 1100 "tcp:$port" 30
echo "TCP hog: $(cat "$T/hog.n") of 1100 connections made"
served vm1 || fail "vm1's unix socket was not served while 1100 TCP clients held its TCP port"
served vm2 || fail "vm2 was not served while 1100 TCP clients held vm1's TCP port"
kill "$HOG_PID"; wait "$HOG_PID" 2>/dev/null || true
stop_svmd

# ---- EMFILE: a limit below what the hog can take ----
start_limited 64
rm -f "$T/hog.n"
lines0=$(grep -c 'accept' "$LOG" || true)
hog 500 "$SVM_STATE/nbd/vm1-disk0.sock" 30
t0=$(cpu_ticks); s0=$(date +%s.%N)
sleep 3
t1=$(cpu_ticks); s1=$(date +%s.%N)
lines=$(( $(grep -c 'accept' "$LOG" || true) - lines0 ))
hz=$(getconf CLK_TCK)
echo "EMFILE: $lines log lines, $((t1 - t0)) CPU ticks in 3 s"
grep 'accept' "$LOG" | tail -3
[ "$lines" -ge 1 ] || fail "no log line about accept() failing"
[ "$lines" -le 6 ] || fail "$lines log lines about accept() in 3 s: not rate-limited"
# a spinning acceptor burns a whole CPU (3 s = $((3 * hz)) ticks); backing off costs nearly nothing
[ $((t1 - t0)) -lt $((hz * 3 / 2)) ] || fail "svmd used $((t1 - t0)) ticks in 3 s: it spins on EMFILE"
kill "$HOG_PID"; wait "$HOG_PID" 2>/dev/null || true
served vm1 || fail "vm1 not served after EMFILE"
served vm2 || fail "vm2 not served after EMFILE"
stop_svmd
echo OK
