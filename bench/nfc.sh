#!/usr/bin/env bash
# Benchmark: the NFC channel (svm-nfc: the copy engine with an NFC end, TLS 1.3 with a
# pre-shared key) against the ways people move a raw disk to another host, all over loopback on
# the same source. Conventions (rounds, shuffle, verification, eviction, min/median/max, ratio
# vs best peer): bench/README.md.
#
# Source disk: bench/convert.sh's (kept in $BENCH_DIR as convert-src-v2-<SIZE_MB>M.raw): SIZE_MB
# (4096) of 1 MiB slots, even slots allocated, odd ones holes (50% allocated); 1 in 5 allocated
# slots zeros, the others random. Every result is thin: only the random data allocated.
#
# Rows (each writes a new DST in the bench directory; "why" is each tool's own tuning advice):
#   nfc tls 1 stream      svm-nfc recv --tls-psk K 127.0.0.1:0 DIR;
#                         svm-nfc send --tls-psk K --streams 1 ADDR SRC dst.raw
#   nfc tls 4 streams     the same with --streams 4 (--nfc-streams: the file's data split
#                         between 4 TLS connections, a copy engine each)
#   qemu-img local        qemu-img convert -f raw -O raw -W -m 16 -t none -T none SRC DST: the
#                         local copy NFC is measured against. -m 16 -W: qemu-img(1)'s parallel
#                         mode (16 coroutines, out-of-order writes, "improves performance");
#                         -t none -T none: O_DIRECT both sides, so no page cache is filled and
#                         the final sync has nothing left to write (on bench/convert.sh's runs
#                         the fastest qemu-img variant once durability is timed)
#   qemu-img local -W     qemu-img convert -f raw -O raw -W -m 16 SRC DST (buffered, for scale)
#   nbdcopy tcp           nbdkit --tls=off file DST over TCP; nbdcopy --target-is-zero
#                         --request-size=2097152 SRC nbd://127.0.0.1:PORT (--target-is-zero:
#                         DST is a fresh sparse file, so zero blocks are skipped, not sent)
#   nbdcopy tls           the same with nbdkit --tls=require --tls-psk=K and an nbds:// URI with
#                         tls-psk-file (TLS 1.3 PSK through GnuTLS on both ends)
#   rsync ssh aes-gcm     a private sshd on 127.0.0.1 (temporary host key and authorized_keys);
#                         rsync --sparse --whole-file -e "ssh -c aes128-gcm@openssh.com
#                         -o Compression=no" SRC 127.0.0.1:DST (--sparse: zeros become holes;
#                         --whole-file: rsync(1)'s advice when the network outruns the delta
#                         algorithm, and there is nothing to delta against)
#
# Each run: DST removed and synced, SRC evicted (posix_fadvise DONTNEED), the receiving server
# (svm-nfc recv, nbdkit, sshd) started fresh and not timed; then timed from the start of the
# sender to the end of `sync -f` on the bench file system. CPU: the sender's user+sys (its
# process and children), the receiver's user+sys (the server process with its reaped children:
# /proc/PID/stat utime+stime+cutime+cstime). Verified every run: qemu-img compare, size,
# allocation (no more than the random data + 1% + 1 MiB).
#
# Targets (issue 12): nfc tls within 1.15x of the local copy; at least 3x faster than nbdcopy
# over TLS.
#
# Usage: bench/nfc.sh   env: ROUNDS=5 SIZE_MB=4096 BENCH_DIR=/var/tmp/svm-bench SVM_BIN=build/bin
#        BENCH_QUICK=1  smoke test: SIZE_MB=256, 1 round (not a result)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_help "$@"
if [ "$BENCH_QUICK" = 1 ]; then
  SIZE_MB=${SIZE_MB:-256}
  ROUNDS=${ROUNDS:-1}
fi
SIZE_MB=${SIZE_MB:-4096}
bench_init nfc
bench_need qemu-img qemu-utils
bench_need nbdcopy libnbd-bin
bench_need nbdkit nbdkit
bench_need rsync rsync
bench_need ssh openssh-client
bench_need /usr/sbin/sshd openssh-server
bench_need ssh-keygen openssh-client
bench_need openssl openssl
bench_need python3 python3
bench_need_bin svm-nfc
[ "$SIZE_MB" -ge 10 ] || bench_fail "SIZE_MB=$SIZE_MB: at least 10"

# ---- the source disk: bench/convert.sh's layout version 2 ----
bench_convert_src

W=$BENCH_WORK
dstdir=$W/dst
mkdir -p "$dstdir"
dst=$dstdir/dst.raw

# ---- credentials ----
psk=$W/keys.psk
(umask 077 && echo "svmbench:$(openssl rand -hex 32)" >"$psk")
ssh_dir=$W/ssh
mkdir -m 700 "$ssh_dir"
ssh-keygen -q -t ed25519 -N '' -f "$ssh_dir/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$ssh_dir/user_key"
cp "$ssh_dir/user_key.pub" "$ssh_dir/authorized_keys"
# sshd refuses to start without its privilege separation directory (made by the service unit)
[ -d /run/sshd ] || [ "$(id -u)" -ne 0 ] || mkdir -m 0755 /run/sshd
chmod 600 "$ssh_dir/authorized_keys"

free_port()
{
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port()
{
  local port=$1 pid=$2 i
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pid" 2>/dev/null || bench_fail "the server (pid $pid) for port $port died"
    python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$port" 2>/dev/null && return 0
    sleep 0.05
  done
  bench_fail "nothing listens on port $port after 10 s"
}

# CPU seconds of a process and its reaped children.
proc_cpu()
{
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13 + $14 + $15) / hz }' "/proc/$1/stat"
}

SERVER_PID=
stop_server()
{
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}
bench_on_exit stop_server

# Start the receiving side of a peer; sets SERVER_PID and PORT.
start_server()
{
  PORT=
  case $1 in
    "nfc tls"*)
      rm -f "$W/port"
      "$BIN/svm-nfc" recv --tls-psk "$psk" --port-file "$W/port" 127.0.0.1:0 "$dstdir" \
        2>>"$W/server.log" &
      SERVER_PID=$!
      local i
      for ((i = 0; i < 200; i++)); do [ -s "$W/port" ] && break; sleep 0.05; done
      [ -s "$W/port" ] || bench_fail "svm-nfc recv did not start: $(cat "$W/server.log")"
      PORT=$(cat "$W/port") ;;
    "nbdcopy tcp" | "nbdcopy tls")
      PORT=$(free_port)
      truncate -s "$size" "$dst"
      local tls=(--tls=off)
      [ "$1" = "nbdcopy tls" ] && tls=(--tls=require --tls-psk="$psk")
      nbdkit --foreground --exit-with-parent --ipaddr 127.0.0.1 --port "$PORT" "${tls[@]}" \
        file "$dst" 2>>"$W/server.log" &
      SERVER_PID=$!
      wait_port "$PORT" "$SERVER_PID" ;;
    "rsync ssh aes-gcm")
      PORT=$(free_port)
      cat >"$ssh_dir/sshd_config" <<CFG
Port $PORT
ListenAddress 127.0.0.1
HostKey $ssh_dir/host_key
AuthorizedKeysFile $ssh_dir/authorized_keys
PidFile $ssh_dir/sshd.pid
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Ciphers aes128-gcm@openssh.com
CFG
      /usr/sbin/sshd -D -e -f "$ssh_dir/sshd_config" 2>>"$W/server.log" &
      SERVER_PID=$!
      wait_port "$PORT" "$SERVER_PID" ;;
    *) SERVER_PID= ;;
  esac
}

# Run the sender: prints "wall_seconds cpu_seconds" (its own and its children's user+sys).
timed()
{
  python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t0 = time.monotonic()
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)
t1 = time.monotonic()
u = resource.getrusage(resource.RUSAGE_CHILDREN)
if r.returncode != 0:
    sys.exit(f"exit status {r.returncode}")
print(f"{t1 - t0:.4f} {u.ru_utime + u.ru_stime:.3f}")
PY
}

run_peer()
{
  local ssh_cmd="ssh -p $PORT -i $ssh_dir/user_key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o Compression=no -c aes128-gcm@openssh.com"
  case $1 in
    "nfc tls 1 stream") timed "$BIN/svm-nfc" send --tls-psk "$psk" --streams 1 "127.0.0.1:$PORT" "$src" dst.raw ;;
    "nfc tls 4 streams") timed "$BIN/svm-nfc" send --tls-psk "$psk" --streams 4 "127.0.0.1:$PORT" "$src" dst.raw ;;
    "qemu-img local") timed qemu-img convert -f raw -O raw -W -m 16 -t none -T none "$src" "$dst" ;;
    "qemu-img local -W") timed qemu-img convert -f raw -O raw -W -m 16 "$src" "$dst" ;;
    "nbdcopy tcp") timed nbdcopy --target-is-zero --request-size=2097152 "$src" "nbd://127.0.0.1:$PORT" ;;
    "nbdcopy tls") timed nbdcopy --target-is-zero --request-size=2097152 "$src" \
                     "nbds://svmbench@127.0.0.1:$PORT/?tls-psk-file=$psk" ;;
    "rsync ssh aes-gcm") timed rsync --sparse --whole-file -e "$ssh_cmd" "$src" "127.0.0.1:$dst" ;;
    *) bench_fail "unknown peer $1" ;;
  esac
}

verify_run()
{
  local peer=$1 round=$2 got alloc
  got=$(stat -c %s "$dst")
  [ "$got" -eq "$size" ] || bench_fail "$peer (round $round): $dst has $got bytes, want $size"
  qemu-img compare -q -f raw -F raw "$src" "$dst" ||
    bench_fail "$peer (round $round): the copy differs from $src (qemu-img compare)"
  alloc=$(($(stat -c %b "$dst") * 512))
  [ "$alloc" -le "$thin_max" ] ||
    bench_fail "$peer (round $round): $alloc bytes allocated, more than the $data_bytes bytes of data (+1% +1 MiB): not thin"
  [ "$alloc" -ge "$data_bytes" ] ||
    bench_fail "$peer (round $round): $alloc bytes allocated, less than the $data_bytes bytes of data"
}

peers=("nfc tls 1 stream" "nfc tls 4 streams" "qemu-img local" "qemu-img local -W"
       "nbdcopy tcp" "nbdcopy tls" "rsync ssh aes-gcm")
bench_log "source $src: $SIZE_MB MiB, $((data_bytes / 1048576)) MiB random data; $ROUNDS rounds"
for round in $(seq 1 "$ROUNDS"); do
  mapfile -t order < <(bench_shuffle "${peers[@]}")
  for peer in "${order[@]}"; do
    rm -f "$dst" "$dstdir"/.dst.raw.nfc-*
    sync -f "$W"
    start_server "$peer"
    bench_evict "$src"
    rcpu0=0
    [ -n "$SERVER_PID" ] && rcpu0=$(proc_cpu "$SERVER_PID")
    t0=$(bench_now)
    out=$(run_peer "$peer") || bench_fail "$peer (round $round) failed: $out; $(tail -3 "$W/server.log")"
    sync -f "$W"
    t1=$(bench_now)
    secs=$(bench_elapsed "$t0" "$t1")
    rcpu=0
    if [ -n "$SERVER_PID" ]; then
      sleep 0.2     # let the server's session processes exit and be reaped into cutime
      rcpu=$(awk -v a="$(proc_cpu "$SERVER_PID")" -v b="$rcpu0" 'BEGIN { printf "%.3f", a - b }')
    fi
    stop_server
    verify_run "$peer" "$round"
    scpu=${out#* }
    bench_record nfc "$peer" "$secs" "$scpu" "$rcpu"
    bench_log "round $round: $peer: $secs s, CPU sender $scpu s, receiver $rcpu s, verified"
  done
done
rm -f "$dst"

echo
echo "NFC vs peers: $SIZE_MB MiB raw disk (50% holes, 40% random data, 10% allocated zeros), loopback"
echo "on $(df --output=fstype "$BENCH_DIR" | tail -1) ($(df --output=source "$BENCH_DIR" | tail -1)); SRC evicted before each run;"
echo "time = sender start to the end of sync -f on the bench file system."
echo
ours="nfc tls 1 stream,nfc tls 4 streams"
bench_summary --lower "seconds" "$ours" nfc
echo
bench_summary --lower "sender CPU seconds, user+sys" "$ours" nfc 4
echo
bench_summary --lower "receiver CPU seconds, user+sys (0: no receiver process)" "$ours" nfc 5
echo
python3 - "$BENCH_RESULTS" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    cell, peer, secs, *_ = line.rstrip("\n").split("\t")
    runs.setdefault(peer, []).append(float(secs))
med = {p: statistics.median(v) for p, v in runs.items()}
nfc = min(("nfc tls 1 stream", "nfc tls 4 streams"), key=med.get)
local = min(("qemu-img local", "qemu-img local -W"), key=med.get)
r1 = med[nfc] / med[local]
r2 = med["nbdcopy tls"] / med[nfc]
print(f"{nfc} / {local}: {med[nfc]:.3f} / {med[local]:.3f} s = {r1:.2f} (target <= 1.15): "
      f"{'met' if r1 <= 1.15 else 'NOT met'}")
print(f"nbdcopy tls / {nfc}: {med['nbdcopy tls']:.3f} / {med[nfc]:.3f} s = {r2:.2f}x (target >= 3): "
      f"{'met' if r2 >= 3 else 'NOT met'}")
print(f"TLS cost for nbdcopy: nbdcopy tls / nbdcopy tcp = {med['nbdcopy tls'] / med['nbdcopy tcp']:.2f}")
PY
bench_footer
