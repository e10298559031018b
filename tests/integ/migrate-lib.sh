# shellcheck shell=bash
# Helpers for the live-move tests (sourced after agent-lib.sh): a guest that keeps one NBD
# connection open and writes through it for as long as the test wants, then proves that
# every write succeeded and that the disk holds the last pattern written at every offset.
requires qemu-io

WRITERS=()

# start_writer NAME URI BASE SIZE: qemu-io connected to URI, fed 4 KiB pattern writes over
# [BASE, BASE+SIZE) (a new one every 10 ms) until stop_writer NAME. The commands it was given
# are logged in $T/NAME.cmds, its answers in $T/NAME.out.
start_writer() {
  local name=$1 uri=$2 base=$3 size=$4
  rm -f "$T/$name.stop" "$T/$name.cmds"
  (
    i=0
    while [ ! -e "$T/$name.stop" ]; do
      off=$(( base + (i * 7919 % (size / 4096)) * 4096 ))
      pat=$(( i % 250 + 1 ))
      echo "write -P $pat $off 4k"
      echo "$off $pat" >>"$T/$name.cmds"
      i=$((i + 1))
      sleep 0.01
    done
  ) | qemu-io -f raw "$uri" >"$T/$name.out" 2>&1 &
  WRITERS+=("$!")
  eval "WRITER_PID_$name=$!"
  # the connection is up once the first write is answered
  for _ in $(seq 1 200); do
    grep -q "^qemu-io> wrote" "$T/$name.out" 2>/dev/null && return 0
    sleep 0.05
  done
  fail "writer $name never wrote: $(cat "$T/$name.out")"
}

# stop_writer NAME: ends the writer, checks that every write it was given succeeded.
stop_writer() {
  local name=$1 pid n ok
  touch "$T/$name.stop"
  pid=$(eval echo "\$WRITER_PID_$name")
  wait "$pid" || fail "writer $name: qemu-io failed: $(grep -v '^qemu-io> wrote\|ops/sec' "$T/$name.out" | head -5)"
  n=$(wc -l <"$T/$name.cmds")
  ok=$(grep -c "wrote 4096/4096" "$T/$name.out" || true)
  [ "$n" -eq "$ok" ] || fail "writer $name: $ok of $n writes succeeded: $(grep -iv 'wrote\|ops/sec' "$T/$name.out" | head -5)"
  ! grep -qi "fail\|error" "$T/$name.out" || fail "writer $name saw errors: $(grep -i 'fail\|error' "$T/$name.out" | head -5)"
  echo "writer $name: $n writes, all acknowledged"
}

# verify_writer NAME URI: the disk holds the last pattern the writer wrote at each offset.
verify_writer() {
  local name=$1 uri=$2
  python3 - "$T/$name.cmds" >"$T/$name.verify" <<'EOF'
import sys
last = {}
for line in open(sys.argv[1]):
    off, pat = line.split()
    last[int(off)] = int(pat)
for off in sorted(last):
    print("read -P %d %d 4k" % (last[off], off))
EOF
  qemu-io -f raw "$uri" <"$T/$name.verify" >"$T/$name.vout" 2>&1 ||
    fail "writer $name: data differs after the move: $(grep -i 'fail' "$T/$name.vout" | head -3)"
  ! grep -qi "fail" "$T/$name.vout" || fail "writer $name: verify: $(grep -i fail "$T/$name.vout" | head -3)"
}

# fill URI SIZE PATTERN: write every byte of the disk (so that it is allocated, and the copy has
# work to do), in 1 MiB pieces
fill() {
  local uri=$1 size=$2 pat=$3
  qemu-io -f raw -c "write -P $pat 0 $size" "$uri" >/dev/null || fail "fill $uri"
}

# move_state ID: the state of move #ID
move_field() {
  svmctl status --json | json_get "[m for k in ('running','queued','done') for m in d[k] if m['id'] == $1][0]['$2']"
}

# wait_phase VM PHASE: until VM's move reports PHASE (bounded)
wait_phase() {
  local vm=$1 phase=$2 got=
  for _ in $(seq 1 600); do
    got=$(svmctl status --json | json_get "next((m['phase'] for m in d['running'] + d['queued'] if m['vm'] == '$vm'), '')")
    [ "$got" = "$phase" ] && return 0
    sleep 0.05
  done
  fail "VM $vm's move never reached phase $phase (last: '$got'); status: $(svmctl status)"
}

# wait_copied VM BYTES: until VM's move has dealt with at least BYTES of the bulk copy
wait_copied() {
  local vm=$1 want=$2 got=0
  for _ in $(seq 1 600); do
    got=$(svmctl status --json | json_get "sum(m['bytes_done'] for m in d['running'] if m['vm'] == '$vm')")
    [ "$got" -ge "$want" ] && return 0
    sleep 0.05
  done
  fail "VM $vm's move never copied $want bytes (at $got); status: $(svmctl status)"
}

# wait_move_end ID: until move #ID is done, failed or cancelled; prints the state
wait_move_end() {
  local id=$1 st=
  for _ in $(seq 1 1200); do
    st=$(move_field "$id" state)
    case $st in done|failed|cancelled) echo "$st"; return 0 ;; esac
    sleep 0.05
  done
  fail "move #$id never ended; status: $(svmctl status)"
}

# wait_retired_gone DS_DIR: until the old folders svmd retired after a move (.svm-removing-*)
# are gone from the datastore folder
wait_retired_gone() {
  for _ in $(seq 1 1200); do
    compgen -G "$1/.svm-removing-*" >/dev/null || return 0
    sleep 0.05
  done
  fail "the retired folders in $1 were never removed: $(ls -la "$1")"
}
