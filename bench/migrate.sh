#!/usr/bin/env bash
# Benchmark: a live storage move (`svmctl migrate`) against the copy engine alone (the floor)
# and QEMU's blockdev-mirror, idle and under a steady guest write load. Conventions (rounds,
# shuffle, verification, min/median/max, ratio vs best peer): bench/README.md.
#
# The disk (made once, kept in $BENCH_DIR as migrate-src-<SIZE>M.raw): SIZE_MB (4096) of 1 MiB
# slots, even slots random bytes, odd slots holes: 50% allocated, nothing compresses. Before
# every run it is copied afresh (cp --sparse=always) to the run's source file, synced and
# evicted from the page cache (bench_evict: that file only), so every row starts from the same
# cold, identical disk.
#
# Rows (the time of one move, from the command to the end of `sync FILE`, an fsync of the
# row's destination file, so every row pays for its data reaching the disk; an fsync of the
# file, not `sync -f` of the file system, since svmd frees the old folder's blocks right after
# its move - outside the timing, the bench waits for it before the next run - and a file
# system sync waited for the trims of those blocks too, which no other row pays for):
#   svmd migrate      svmctl migrate bench --datastore DS --json: svmd's live move of VM bench
#                     (disk 0 = the source file) to the other datastore; defaults (the copier's
#                     defaults are its tuned mode; provisioning "same": thin to thin). The wall
#                     time of svmctl is recorded (it polls the agent 10 times a second: up to
#                     0.1 s of it is svmctl noticing the end); the agent's own `seconds` is the
#                     extra column.
#   svm-convert       svm-convert --force SRC DST: the same copy engine alone, on a disk nobody
#                     uses: the floor of a move (ours, not a peer)
#   qemu mirror       qemu-storage-daemon serving the source over NBD (unix socket), the move
#                     by QMP (bench/migrate/qmp-mirror.py): blockdev-add of the target with
#                     cache.direct=on and aio=io_uring, blockdev-mirror sync=full
#                     copy-mode=write-blocking, block-job-complete at READY. Why: the issue asks
#                     for QEMU's synchronous mode (a guest write to a copied region completes
#                     once it is on both sides, svmotion's contract; the default background
#                     mode lets the guest run ahead of the target), and qemu-storage-daemon(1)
#                     and QEMU's block docs give O_DIRECT with a native/io_uring AIO as the setup
#                     for bulk I/O that should not go through the host page cache; the source
#                     node uses the same (cache.direct=on, aio=io_uring). granularity and
#                     buf-size are QEMU's defaults (the cluster size or 64 KiB, 16 MiB).
#
# Cells:
#   idle          the move with no guest I/O: svmd migrate, svm-convert, qemu mirror
#   load          the move while fio's nbd engine (the guest) writes 4 KiB at random over the
#                 whole disk at a steady RATE_IOPS (3000; fio --rate_iops, depth QD=8) through
#                 the disk's NBD export (svmd's, or qemu-storage-daemon's): svmd migrate and
#                 qemu mirror. The guest runs PHASE_S (5) s before the move and PHASE_S after.
#                 Idle moves are timed to a `sync FILE` of the destination after the job
#                 ended; loaded moves to the job's end alone: a sync
#                 would flush svmd's buffered guest writes (QEMU's go O_DIRECT), and land in
#                 the switchover's latency window of both.
#   iops-before/during/after, p50-*/p99-*   the guest's completed writes per second and its
#                 total write latency (submission to completion) median and 99th percentile,
#                 from fio's per-I/O latency log (--write_lat_log, --log_avg_msec=0,
#                 --log_unix_epoch=1), in the PHASE_S before the move (after a 2 s ramp),
#                 during the move, and in the PHASE_S after it. fio's rate control makes up
#                 for a shortfall as soon as it can, so "after" may exceed RATE_IOPS when the
#                 guest fell behind during the move
#   gap           the longest time between two consecutive guest completions around the
#                 switchover (svmd: the last second of the move and 0.5 s after; QEMU: 0.5 s
#                 before block-job-complete to 0.5 s after the job's end): the pause the guest
#                 feels; fio logs whole milliseconds, so +-1 ms
#
# Every timed run is verified. Idle: the destination file equals the disk (cmp), the source
# file of a move is gone (svmd). Load: fio writes crc32c-headed blocks (--verify=crc32c
# --do_verify=0) and logs every write (--write_iolog); after the move the whole disk is read
# back through the export (now on the destination) into bench/nbd/fio-check.c: every offset
# fio wrote holds a fio block for that offset with a good crc32c (a write lost by a mirror
# fails), every other byte is the disk's.
#
# Targets (issue 8), printed with the ratios at the end: idle move <= 1.1x the floor and no
# slower than QEMU's idle mirror; under load no slower than QEMU's write-blocking mirror, the
# guest keeps >= 95% of its offered IOPS during the move and its p99 during <= 2x before;
# switchover gap < 5 ms.
#
# Usage: bench/migrate.sh   env: ROUNDS=5 SIZE_MB=4096 RATE_IOPS=3000 QD=8 PHASE_S=5
#                                BENCH_DIR=/var/tmp/svm-bench SVM_BIN=build/bin
#        BENCH_QUICK=1      smoke test: SIZE_MB=256, ROUNDS=1, PHASE_S=2 (not a result)
#        ROWS="svmd qemu"   a subset of svmd convert qemu (idle) / svmd qemu (load)
#        MIGRATE_LOGS=DIR   keep each loaded move's fio latency log, its windows and svmd's log
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_help "$@"
if [ "$BENCH_QUICK" = 1 ]; then
  SIZE_MB=${SIZE_MB:-256}
  ROUNDS=${ROUNDS:-1}
  PHASE_S=${PHASE_S:-2}
fi
SIZE_MB=${SIZE_MB:-4096}
RATE_IOPS=${RATE_IOPS:-3000}
QD=${QD:-8}
PHASE_S=${PHASE_S:-5}
ROWS=${ROWS:-svmd convert qemu}
bench_init migrate
bench_need fio fio
bench_need nbdcopy libnbd-bin
bench_need qemu-storage-daemon qemu-system-common
bench_need gcc gcc
bench_need python3 python3
for b in svmd svmctl svm-convert; do bench_need_bin "$b"; done
fio --enghelp=nbd >/dev/null 2>&1 ||
  bench_fail "fio has no nbd engine (Debian's fio has it; fio >= 3.19 built with libnbd)"
[ "$SIZE_MB" -ge 16 ] || bench_fail "SIZE_MB=$SIZE_MB: at least 16"
here=$BENCH_TOP/bench
work=$BENCH_WORK
gcc -O2 -std=c11 -Wall -Wextra -o "$work/fio-check" "$here/nbd/fio-check.c" ||
  bench_fail "cannot build bench/nbd/fio-check.c"

# ---- the disk ----
master=$BENCH_DIR/migrate-src-${SIZE_MB}M.raw
size=$((SIZE_MB * 1048576))
bench_slots_disk "$master" "$SIZE_MB" 0      # every allocated slot random

# fresh SRC: the master's content, synced, not in the page cache
fresh() {
  cp --sparse=always --reflink=never "$master" "$1"
  bench_evict "$1"
}

# ---- svmd: VM bench, disk 0, moved between datastores a and b ----
state=$work/state
mkdir -p "$work/a" "$work/b" "$work/fio"
svmd_pid=
start_svmd() {
  "$BIN/svmd" --name bench --state "$state" --datastore "a=$work/a" --datastore "b=$work/b" \
    2>>"$work/svmd.log" &
  svmd_pid=$!   # stopped by the exit handler (bench_on_exit below)
  for _ in $(seq 1 200); do
    [ -S "$state/control.sock" ] && "$BIN/svmctl" --state "$state" vm list >/dev/null 2>&1 &&
      return 0
    sleep 0.05
  done
  cat "$work/svmd.log" >&2
  bench_fail "svmd did not start"
}
bench_on_exit '[ -z "$svmd_pid" ] || bench_stop "$svmd_pid"'
fio_pid=      # the guest of a loaded row, while it runs (run_load)
bench_on_exit '[ -z "$fio_pid" ] || bench_stop "$fio_pid" 10'
start_svmd
svmctl() { "$BIN/svmctl" --state "$state" "$@"; }
svmd_uri="nbd+unix:///bench/disk0?socket=$state/nbd/bench-disk0.sock"
here_ds=a
# svmd_fresh: VM bench anew in datastore $here_ds with the master's content in its disk
svmd_fresh() {
  svmctl vm delete bench >/dev/null 2>&1 || true
  svmctl vm create bench --datastore "$here_ds" --disk "${SIZE_MB}M:thin" >/dev/null ||
    bench_fail "svmctl vm create bench failed (log: $work/svmd.log)"
  # the file svmd just made, rewritten in place (same inode, no guest connected yet)
  fresh "$work/$here_ds/bench/disk0.raw"
}
other_ds() { [ "$here_ds" = a ] && echo b || echo a; }

# ---- qemu-storage-daemon ----
qsd_pid=
qsd_start() {   # qsd_start SRC
  rm -f "$work/qsd.sock" "$work/qmp.sock"
  qemu-storage-daemon \
    --blockdev "driver=file,node-name=src-file,filename=$1,cache.direct=on,aio=io_uring" \
    --blockdev driver=raw,node-name=src,file=src-file \
    --nbd-server "addr.type=unix,addr.path=$work/qsd.sock" \
    --export type=nbd,id=exp0,node-name=src,name=disk,writable=on \
    --chardev "socket,id=qmp0,path=$work/qmp.sock,server=on,wait=off" \
    --monitor chardev=qmp0 2>>"$work/qsd.log" &
  qsd_pid=$!
  for _ in $(seq 1 200); do
    [ -S "$work/qsd.sock" ] && [ -S "$work/qmp.sock" ] && return 0
    sleep 0.05
  done
  cat "$work/qsd.log" >&2
  bench_fail "qemu-storage-daemon did not start"
}
qsd_stop() {
  [ -z "$qsd_pid" ] && return 0
  bench_stop "$qsd_pid"
  qsd_pid=
}
bench_on_exit 'qsd_stop'
qsd_uri="nbd+unix:///disk?socket=$work/qsd.sock"

# ---- one move of each row; sets T0 T1 (the move), SW0 SW1 (around the switchover), EXTRA ----
move_svmd() {   # move_svmd [nosync]
  local to
  to=$(other_ds)
  # as the other rows do before their T0: the disk's fresh copy (svmd_fresh) is written back
  # now, not inside the timed move
  sync -f "$work"
  T0=$(bench_now)
  svmctl migrate bench --datastore "$to" --json >"$work/move.json" 2>"$work/move.err" ||
    bench_fail "svmd migrate (round $round): $(cat "$work/move.err")"
  [ "${1:-}" = nosync ] || sync "$work/$to/bench/disk0.raw"
  T1=$(bench_now)
  # read with bash, not python: the guest is still writing, and a python start-up right after
  # the move (tens of ms of CPU on 2 cores) stalled its completions inside the gap window
  local j
  j=$(<"$work/move.json")
  [[ $j =~ \"state\":\ *\"done\" ]] || bench_fail "svmd migrate (round $round): $j"
  [[ $j =~ \"seconds\":\ *([0-9.]+) ]] || bench_fail "svmd migrate (round $round): no seconds in $j"
  EXTRA=${BASH_REMATCH[1]}
  [ ! -e "$work/$here_ds/bench" ] || bench_fail "svmd migrate (round $round): the source is still there"
  # svmd frees the old folder's blocks after the move has reported (it renames the folder
  # out of the way first: svm/migrate/folder.c); wait for that outside the timing, so that it
  # does not run into the next timed run
  local i
  for i in $(seq 600); do
    compgen -G "$work/$here_ds/.svm-removing-*" >/dev/null || break
    sleep 0.1
  done
  ! compgen -G "$work/$here_ds/.svm-removing-*" >/dev/null ||
    bench_fail "svmd migrate (round $round): the old folder was not removed within 60 s"
  here_ds=$to
  DST=$work/$to/bench/disk0.raw
  SW0=$(awk -v t="$T1" 'BEGIN { printf "%.3f", t - 1.0 }')
  SW1=$(awk -v t="$T1" 'BEGIN { printf "%.3f", t + 0.5 }')
}

move_qemu() {   # move_qemu [nosync]
  DST=$work/qemu-dst.raw
  rm -f "$DST"
  truncate -s "$size" "$DST"
  sync -f "$work"
  T0=$(bench_now)
  python3 "$here/migrate/qmp-mirror.py" "$work/qmp.sock" src "$DST" io_uring >"$work/qmp.json" ||
    bench_fail "qemu mirror (round $round): the mirror failed (log: $work/qsd.log)"
  [ "${1:-}" = nosync ] || sync "$DST"
  T1=$(bench_now)
  # the job's own time (QMP command to BLOCK_JOB_COMPLETED); the window around the pivot (awk,
  # not python, for the reason given in move_svmd)
  read -r EXTRA SW0 SW1 < <(tr -d '{}" ' <"$work/qmp.json" | tr ',' '\n' | awk -F: '
    { v[$1] = $2 } END { printf "%.4f %.3f %.3f\n", v["done"] - v["start"], v["complete"] - 0.5, v["done"] + 0.5 }')
}

verify_same() {   # verify_same ROW FILE: the file equals the disk
  cmp -s "$master" "$2" || bench_fail "$1 (round $round): VERIFY FAILED: $2 differs from the disk"
}

run_idle() {
  local row=$1 t
  case $row in
  svmd)
    svmd_fresh
    move_svmd
    verify_same "svmd migrate" "$DST"
    t=$(bench_elapsed "$T0" "$T1")
    bench_record idle "svmd migrate" "$t" "$EXTRA" ;;
  convert)
    fresh "$work/conv-src.raw"
    rm -f "$work/conv-dst.raw"
    sync -f "$work"
    T0=$(bench_now)
    "$BIN/svm-convert" --force "$work/conv-src.raw" "$work/conv-dst.raw" >/dev/null ||
      bench_fail "svm-convert (round $round) failed"
    sync "$work/conv-dst.raw"
    T1=$(bench_now)
    verify_same svm-convert "$work/conv-dst.raw"
    t=$(bench_elapsed "$T0" "$T1")
    bench_record idle svm-convert "$t"
    rm -f "$work/conv-src.raw" "$work/conv-dst.raw" ;;
  qemu)
    fresh "$work/qemu-src.raw"
    qsd_start "$work/qemu-src.raw"
    move_qemu
    qsd_stop
    verify_same "qemu mirror" "$DST"
    t=$(bench_elapsed "$T0" "$T1")
    bench_record idle "qemu mirror" "$t" "$EXTRA"
    rm -f "$work/qemu-src.raw" "$DST" ;;
  esac
  bench_log "round $round idle $row: $t s"
}

# run_load ROW: the guest at RATE_IOPS, PHASE_S s, the move, PHASE_S s, stop; verify; record
run_load() {
  local row=$1 uri name t a0 a1 b0 b1 fields
  case $row in
  svmd) svmd_fresh; uri=$svmd_uri; name="svmd migrate" ;;
  qemu) fresh "$work/qemu-src.raw"; qsd_start "$work/qemu-src.raw"; uri=$qsd_uri; name="qemu mirror" ;;
  esac
  rm -f "$work/fio/"* 
  (cd "$work/fio" && exec fio --name=guest --ioengine=nbd "--uri=$uri" --rw=randwrite --bs=4k \
     "--iodepth=$QD" "--rate_iops=$RATE_IOPS" --size="${SIZE_MB}M" --norandommap \
     --randrepeat=0 --time_based --runtime=3600 --trigger-file="$work/fio/stop" \
     --verify=crc32c --do_verify=0 --write_iolog=w.log --write_lat_log=guest \
     --log_avg_msec=0 --log_unix_epoch=1 --output-format=json --output=out.json \
     2>"$work/fio/err") &
  fio_pid=$!    # global: a failure below stops it (the exit handler), or fio spins on
  local start
  start=$(bench_now)
  # a 2 s ramp (connection, fio's rate control settling), then the before window: the guest's
  # own time, no event stands for it
  b0=$(awk -v t="$start" 'BEGIN { printf "%.3f", t + 2 }')
  sleep $((PHASE_S + 2))
  kill -0 "$fio_pid" 2>/dev/null || bench_fail "$name (round $round): fio ended early: $(cat "$work/fio/err")"
  b1=$(bench_now)
  case $row in
  svmd) move_svmd nosync ;;
  qemu) move_qemu nosync ;;
  esac
  a0=$T1
  sleep "$PHASE_S"
  a1=$(bench_now)
  touch "$work/fio/stop"
  wait "$fio_pid" || { fio_pid=; bench_fail "$name (round $round): fio failed: $(tail -3 "$work/fio/err")"; }
  fio_pid=
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0]; sys.exit(j["error"] != 0)' \
    "$work/fio/out.json" || bench_fail "$name (round $round): fio reported an error"
  # the whole disk back through the export, now on the destination
  local checked
  checked=$(nbdcopy "$uri" - | "$work/fio-check" "$master" "$work/fio/w.log" "$DST" \
              2>"$work/fio/check.err") ||
    bench_fail "$name (round $round): VERIFY FAILED: $(head -12 "$work/fio/check.err")"
  [ "$row" = qemu ] && { qsd_stop; rm -f "$work/qemu-src.raw" "$DST"; }
  fields=$(python3 "$here/migrate/lat-phases.py" "$work/fio/guest_lat.1.log" "$b0" "$b1" \
             "$T0" "$T1" "$a0" "$a1" "$SW0" "$SW1") ||
    bench_fail "$name (round $round): no latency figures"
  local ib pb5 pb9 id pd5 pd9 ia pa5 pa9 gap
  read -r ib pb5 pb9 id pd5 pd9 ia pa5 pa9 gap <<<"$fields"
  t=$(bench_elapsed "$T0" "$T1")
  bench_record load "$name" "$t" "$EXTRA"
  bench_record iops-before "$name" "$ib"; bench_record iops-during "$name" "$id"
  bench_record iops-after "$name" "$ia"
  bench_record p50-before "$name" "$pb5"; bench_record p50-during "$name" "$pd5"
  bench_record p50-after "$name" "$pa5"
  bench_record p99-before "$name" "$pb9"; bench_record p99-during "$name" "$pd9"
  bench_record p99-after "$name" "$pa9"
  bench_record gap "$name" "$gap"
  if [ -n "${MIGRATE_LOGS:-}" ]; then
    # for finding where a gap comes from: the guest's per-I/O log, the windows (host seconds),
    # and svmd's log, whose lines give each move's phases
    mkdir -p "$MIGRATE_LOGS"
    cp "$work/fio/guest_lat.1.log" "$MIGRATE_LOGS/round$round-$row.lat.log"
    echo "before $b0 $b1 move $T0 $T1 after $a0 $a1 gap $SW0 $SW1" >"$MIGRATE_LOGS/round$round-$row.windows"
    [ "$row" = svmd ] && cp "$work/svmd.log" "$MIGRATE_LOGS/svmd.log"
  fi
  bench_log "round $round load $row: $t s; IOPS $ib / $id / $ia, p99 $pb9 / $pd9 / $pa9 ms, gap $gap ms; verified ($checked fio blocks)"
}

runs=()
for r in $ROWS; do
  case $r in
  svmd | qemu) runs+=("idle:$r" "load:$r") ;;
  convert) runs+=("idle:convert") ;;
  *) bench_fail "ROWS: unknown row $r (svmd convert qemu)" ;;
  esac
done
for round in $(seq 1 "$ROUNDS"); do
  for run in $(bench_shuffle "${runs[@]}"); do
    "run_${run%%:*}" "${run#*:}"
  done
done

# ---- results ----
OURS="svmd migrate,svm-convert"
echo
echo "bench/migrate: ${SIZE_MB} MiB disk, 50% allocated; guest load: fio 4 KiB random writes at" \
  "$RATE_IOPS IOPS, depth $QD, over NBD"
bench_summary --lower s "$OURS" idle
echo "  the same moves as their own jobs time them (svmd: the agent's seconds; qemu: QMP command"
echo "  to BLOCK_JOB_COMPLETED; neither with the sync):"
bench_summary --lower s "$OURS" idle 4 | sed 1d
bench_summary --lower s "$OURS" load
echo "  as the jobs time them:"
bench_summary --lower s "$OURS" load 4 | sed 1d
for c in iops-before iops-during iops-after; do bench_summary --higher IOPS "$OURS" "$c"; done
for c in p50-before p50-during p50-after p99-before p99-during p99-after gap; do
  bench_summary --lower ms "$OURS" "$c"
done
echo
echo "targets (issue 8), medians:"
python3 - "$BENCH_RESULTS" "$RATE_IOPS" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("\t")
    runs.setdefault((f[0], f[1]), []).append(float(f[2]))
rate = float(sys.argv[2])
med = lambda c, p: statistics.median(runs[(c, p)]) if (c, p) in runs else None
def target(what, value, limit, ok):
    if value is None or limit is None:
        print(f"  {what}: not measured (row missing)")
    else:
        print(f"  {what}: {value:.3f} vs {limit:.3f}: {'met' if ok(value, limit) else 'MISSED'}")
ours, floor, qemu = med("idle", "svmd migrate"), med("idle", "svm-convert"), med("idle", "qemu mirror")
target("idle move / floor <= 1.1", ours / floor if ours and floor else None, 1.1, lambda v, l: v <= l)
target("idle move <= qemu idle mirror (s)", ours, qemu, lambda v, l: v <= l)
target("move under load <= qemu write-blocking mirror (s)", med("load", "svmd migrate"),
       med("load", "qemu mirror"), lambda v, l: v <= l)
target("guest IOPS during the move >= 95% of offered", med("iops-during", "svmd migrate"),
       0.95 * rate, lambda v, l: v >= l)
p99b = med("p99-before", "svmd migrate")
target("guest p99 during <= 2x p99 before (ms)", med("p99-during", "svmd migrate"),
       2 * p99b if p99b else None, lambda v, l: v <= l)
target("switchover gap < 5 ms", med("gap", "svmd migrate"), 5.0, lambda v, l: v < l)
PY
bench_footer "rows shuffled per round; every timed run verified (cmp, or fio-check of the whole disk through the export after a loaded move)."
