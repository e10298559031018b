#!/usr/bin/env bash
# NBD server benchmark: fio's nbd engine (--ioengine=nbd, libnbd) against svmotion's export
# and its peers, all on unix sockets, all serving the same raw file, each tuned the way its
# own documentation tunes it (bench/README.md says why). Conventions: bench/README.md.
#
#   svm-nbd-serve   $BIN/svm-nbd-serve --socket S --name disk FILE
#                   (svmotion's export, no tracking layer: the baseline of the CBT cells)
#   svmd            svmd exporting the file as VM bench disk 0, CBT on, WARM: every block
#                   written through the export (so marked) in the current epoch beforehand
#   svmd-cold       the same, COLD: `svmctl cbt changeid bench 0` right before each cell, so
#                   every write to a 64 KiB block is its first in the epoch (a mark under the
#                   tracker's mutex; its 4 MiB extent stays in the activity log across change
#                   IDs, cbt/tracker.c), only the 4 KiB random-write cells, which are the CBT
#                   cells)
#   qemu-nbd-uring  qemu-nbd --format=raw --aio=io_uring --cache=writeback --persistent
#                   --export-name=disk --socket=S FILE
#   qemu-nbd-threads  the same with --aio=threads
#   nbdkit          nbdkit --foreground --threads=32 --unix=S --exportname=disk file FILE
#
# The file: SIZE_MB (1024) raw, fully allocated (svmd creates it eager-zeroed-thick), then
# preconditioned identically before each server in each round: the same random content
# (a master copy made once per run) written over it in place and fdatasync'ed, so it is
# fully allocated, clean and PAGE-CACHE RESIDENT (checked with mincore) for every server.
# svm-nbd-serve, qemu-nbd and nbdkit get it with dd from the master; svmd with nbdcopy
# through its export after a change ID (that is what makes its CBT warm).
#
# Cells (fio, one job, time-based: RAMP s ramp + RUNTIME s measured, --norandommap,
# fixed seed): randwrite 4k qd1, randwrite 4k qd32 (the CBT cells: NO RAMP for any server, as
# a ramp would mark svmd-cold's blocks before the measurement, and a cell compared with it
# must have its shape: with a ramp the baseline measured a file whose pages the ramp had
# already dirtied, and svmd-cold one still clean, which costs about 10% of IOPS at depth 32
# and has nothing to do with tracking), randread 4k qd1, randread 4k qd32,
# write 1M qd8, read 1M qd8 (all page-cache resident), and randread 4k qd32 COLD (the file
# evicted with posix_fadvise DONTNEED right before, no ramp: it starts with nothing cached and
# warms as it reads; the log says how much was cached at the end). Every cell starts from the master's
# content. Write cells write fio's crc32c-headed blocks (--verify=crc32c --do_verify=0) and log
# every write (--write_iolog, ramp included): fio's own verify phase never runs after a
# time-based write ("write phase uses all of runtime"). After each write cell the disk is read
# back THROUGH THE SERVER (nbdcopy URI -) into bench/nbd/fio-check, which checks that every
# offset fio wrote holds a fio block of that offset with a good crc32c and every other byte is
# still the master's, then copies the written blocks back from the master. A failed check fails the
# benchmark. The server's order is shuffled per round, the cells' order per server.
#
# Prints IOPS and p99 latency (fio's total latency, --lat_percentiles=1) min/median/max per server per cell, each against the
# best peer (qemu-nbd-uring, qemu-nbd-threads, nbdkit), and the CBT table (svmd warm and cold
# against svm-nbd-serve on the same file).
#
# Usage: bench/nbd.sh   env: ROUNDS=5 RUNTIME=5 RAMP=2 SIZE_MB=1024 SERVERS="..." SVM_BIN=build/bin
#        BENCH_QUICK=1  smoke test: RUNTIME=1 RAMP=1 SIZE_MB=256 (not a result)
#        CBT_ONLY=1     only the CBT cells (4 KiB random writes, qd1 and qd32) and only
#                       svm-nbd-serve, svmd and svmd-cold unless SERVERS says otherwise
#                       (bench/cbt.sh runs it so)
# A full run (5 rounds, 5 s + 2 s per cell) takes about 30 minutes (30 min 15 s measured).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_help "$@"
if [ "$BENCH_QUICK" = 1 ]; then
  RUNTIME=${RUNTIME:-1}
  RAMP=${RAMP:-1}
  SIZE_MB=${SIZE_MB:-256}
fi
RUNTIME=${RUNTIME:-5}
RAMP=${RAMP:-2}
SIZE_MB=${SIZE_MB:-1024}
CBT_ONLY=${CBT_ONLY:-0}
if [ "$CBT_ONLY" = 1 ]; then
  SERVERS=${SERVERS:-svm-nbd-serve svmd svmd-cold}
fi
SERVERS=${SERVERS:-svm-nbd-serve svmd svmd-cold qemu-nbd-uring qemu-nbd-threads nbdkit}
PEERS="qemu-nbd-uring qemu-nbd-threads nbdkit"
OURS=svm-nbd-serve,svmd,svmd-cold
bench_init nbd
bench_need fio fio
bench_need nbdkit nbdkit
bench_need qemu-nbd qemu-utils
bench_need nbdinfo libnbd-bin
bench_need nbdcopy libnbd-bin
bench_need python3 python3
fio --enghelp=nbd >/dev/null 2>&1 || bench_fail "fio has no nbd engine (Debian's fio has it; fio >= 3.19 built with libnbd)"
bench_need gcc gcc
for b in svm-nbd-serve svmd svmctl; do bench_need_bin "$b"; done

work=$BENCH_WORK
sock=$work/nbd.sock
state=$work/state
export SVM_STATE=$state
mkdir -p "$work/ds" "$state" "$work/fio"
gcc -O2 -std=c11 -Wall -Wextra -o "$work/fio-check" "$BENCH_TOP/bench/nbd/fio-check.c" ||
  bench_fail "cannot build bench/nbd/fio-check.c"
server_pid=
stop_server()
{
  [ -n "$server_pid" ] || return 0
  bench_stop "$server_pid"
  server_pid=
}
bench_on_exit stop_server

start_svmd()
{
  "$BIN/svmd" --name bench --state "$state" --datastore "ds=$work/ds" 2>>"$work/svmd.log" &
  server_pid=$!
  for _ in $(seq 1 200); do
    [ -S "$state/control.sock" ] && "$BIN/svmctl" vm list >/dev/null 2>&1 && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.05
  done
  cat "$work/svmd.log" >&2
  bench_fail "svmd did not start"
}

# ---- the disk: VM bench's disk 0, made by svmd, served by everybody ----
start_svmd
"$BIN/svmctl" vm create bench --datastore ds --disk "${SIZE_MB}M:eager-zeroed-thick" >/dev/null ||
  bench_fail "svmctl vm create failed (log: $work/svmd.log)"
disk=$("$BIN/svmctl" vm show bench --json | python3 -c '
import json, sys; print(json.load(sys.stdin)["disks"][0]["file"])')
stop_server
[ -f "$disk" ] || bench_fail "no disk file at $disk"
case $disk in /*) ;; *) disk=$work/ds/bench/$disk ;; esac
master=$work/master.raw
python3 - "$master" "$SIZE_MB" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
for _ in range(int(sys.argv[2])):
    os.write(fd, os.urandom(1 << 20))
os.fsync(fd)
os.close(fd)
PY

uri_of()
{
  case $1 in
    svmd|svmd-cold) echo "nbd+unix:///bench/disk0?socket=$state/nbd/bench-disk0.sock" ;;
    *) echo "nbd+unix:///disk?socket=$sock" ;;
  esac
}

start_server()
{
  local s=$1 uri
  rm -f "$sock"
  case $s in
    svm-nbd-serve) "$BIN/svm-nbd-serve" --socket "$sock" --name disk "$disk" >/dev/null 2>>"$work/svm.log" & ;;
    svmd|svmd-cold) start_svmd ;;
    qemu-nbd-uring) qemu-nbd --format=raw --aio=io_uring --cache=writeback --persistent \
                      --export-name=disk --socket="$sock" "$disk" 2>>"$work/qemu-nbd.log" & ;;
    qemu-nbd-threads) qemu-nbd --format=raw --aio=threads --cache=writeback --persistent \
                      --export-name=disk --socket="$sock" "$disk" 2>>"$work/qemu-nbd.log" & ;;
    nbdkit) nbdkit --foreground --threads=32 --unix="$sock" --exportname=disk file "$disk" \
              2>>"$work/nbdkit.log" & ;;
    *) bench_fail "unknown server $s" ;;
  esac
  case $s in svmd|svmd-cold) ;; *) server_pid=$! ;; esac
  uri=$(uri_of "$s")
  for _ in $(seq 1 200); do
    nbdinfo --size "$uri" >/dev/null 2>&1 && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.05
  done
  tail -n 5 "$work"/*.log >&2 2>/dev/null || true
  bench_fail "$s did not start (its log above)"
}

server_read_bytes() { awk '/^read_bytes:/ { print $2 }' "/proc/$server_pid/io"; }

# Precondition: the master's content over the whole file, durable, page-cache resident.
precondition()
{
  local s=$1
  case $s in
    svmd|svmd-cold)
      # svmd is running: a change ID, then every block written through the export, so every
      # block is marked in the current epoch (warm CBT); svmd-cold takes another ID per cell.
      "$BIN/svmctl" cbt changeid bench 0 >/dev/null
      nbdcopy --flush "$master" "$(uri_of "$s")" ;;
    *)
      dd if="$master" of="$disk" bs=1M conv=notrunc,fdatasync status=none ;;
  esac
  sync -f "$disk"
  local res
  res=$(bench_resident "$disk")
  [ "$res" -ge 90 ] || bench_fail "$s: after preconditioning only $res% of $disk is in the page cache"
}

cells=("randwrite 4k 1" "randwrite 4k 32" "randread 4k 1" "randread 4k 32" "write 1M 8"
       "read 1M 8" "randread 4k 32 cold")
[ "$CBT_ONLY" = 1 ] && cells=("randwrite 4k 1" "randwrite 4k 32")
cell_name() { echo "$1-$2-qd$3${4:+-$4}"; }

# run_cell SERVER RW BS QD [cold]: one timed fio run (+ its verify), recorded.
run_cell()
{
  local s=$1 rw=$2 bs=$3 qd=$4 cold=${5:-} ramp=$RAMP id='' name uri out
  name=$(cell_name "$rw" "$bs" "$qd" "$cold")
  uri=$(uri_of "$s")
  out=$work/fio/out.json
  local job=(--name=bench --ioengine=nbd "--uri=$uri" "--rw=$rw" "--bs=$bs" "--iodepth=$qd"
             "--size=${SIZE_MB}M" --norandommap --randrepeat=1 --randseed=20261129
             --lat_percentiles=1)
  if [[ $rw == *write* ]]; then
    # crc32c-headed blocks and a log of every write, ramp included, for fio-check (the log is
    # appended to, never truncated, by fio: remove it first)
    rm -f "$work/fio/w.log"
    job+=(--verify=crc32c --do_verify=0 "--write_iolog=$work/fio/w.log")
  fi
  # no ramp where it would defeat the cell: it would mark the blocks of a cold CBT cell and
  # read the file back into the page cache in the cold-cache cell
  [ "$cold" = cold ] && ramp=0
  [ "$rw $bs" = "randwrite 4k" ] && ramp=0      # the CBT cells (see the top)
  if [ "$s" = svmd-cold ]; then
    id=$("$BIN/svmctl" cbt changeid bench 0)
  fi
  sync -f "$disk"                 # no writeback of the previous cell's data in this one
  if [ "$cold" = cold ]; then
    bench_evict "$disk"
    local r0
    r0=$(bench_resident "$disk")
    [ "$r0" -le 5 ] || bench_fail "$s $name: $r0% of $disk still cached after posix_fadvise DONTNEED"
  fi
  local rb0=0
  [ "$cold" = cold ] && rb0=$(server_read_bytes)
  (cd "$work/fio" && fio "${job[@]}" --time_based --runtime="$RUNTIME" \
     --ramp_time="$ramp" --output-format=json --output="$out" >/dev/null) ||
    bench_fail "$s $name (round $round): fio failed ($(tail -3 "$out" 2>/dev/null))"
  local fields
  fields=$(python3 - "$out" "$rw" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
d = j["write" if "write" in sys.argv[2] else "read"]
if j["error"] or d["total_ios"] == 0:
    sys.exit(f"fio error {j['error']}, {d['total_ios']} I/Os")
# total latency (submission to completion): the nbd engine may complete a request inside its
# queue call, so completion latency (clat) alone can miss the round trip
p99 = d["lat_ns"]["percentile"]["99.000000"] / 1000
print(f"{d['iops']:.0f} {p99:.1f} {d['total_ios']}")
PY
) || bench_fail "$s $name (round $round): bad fio result"
  local iops p99 ios first='' verified='' checked resident=''
  read -r iops p99 ios <<<"$fields"
  if [ "$cold" = cold ]; then
    # what the server read from the disk (its threads' and io_uring workers' read_bytes):
    # readahead shows here, and in how much of the file is cached at the end
    first=$(awk -v a="$rb0" -v b="$(server_read_bytes)" 'BEGIN { printf "%.1f", (b - a) / 1048576 }')
    resident=", $first MiB read from disk, $(bench_resident "$disk")% of the file cached at the end"
  fi
  if [[ $rw == *write* ]]; then
    # read back through the server; fio-check verifies and restores the master's content
    checked=$(nbdcopy "$uri" - | "$work/fio-check" "$master" "$work/fio/w.log" "$disk" \
                2>"$work/fio/check.err") ||
      bench_fail "$s $name (round $round): VERIFY FAILED: $(head -12 "$work/fio/check.err")"
    verified=", verified ($checked fio blocks)"
  fi
  if [ -n "$id" ]; then
    # first marks: the blocks marked since the change ID, per write of the run
    first=$("$BIN/svmctl" cbt query bench 0 --since "$id" --json | python3 -c '
import json, sys; j = json.load(sys.stdin); print(j["changed-bytes"] // j["granularity"])')
    first=$(awk -v f="$first" -v n="$ios" 'BEGIN { printf "%.3f", f / n }')
  fi
  bench_record "$name" "$s" "$iops" "$p99" ${first:+"$first"}
  if [ -n "$id" ]; then
    bench_log "round $round: $s $name: $iops IOPS, p99 $p99 us, $first first marks per write$verified"
  else
    bench_log "round $round: $s $name: $iops IOPS, p99 $p99 us$verified$resident"
  fi
}
bench_log "disk $disk: $SIZE_MB MiB; cells ${RAMP}s ramp + ${RUNTIME}s; servers: $SERVERS; $ROUNDS rounds"
# serve S: S started on the master's content (preconditioned, as the top says)
serve()
{
  local s=$1
  [ "$s" = svmd-cold ] || [ "$s" = svmd ] || precondition "$s"
  start_server "$s"
  case $s in svmd|svmd-cold) precondition "$s" ;; esac
}
for round in $(seq 1 "$ROUNDS"); do
  if [ "$CBT_ONLY" = 1 ]; then
    # The CBT table compares servers within a cell, so each cell runs on every server back to
    # back (tens of seconds apart, not minutes): a pair then shares the machine's state of the
    # moment, which at depth 32 moves IOPS by up to 18% between minutes (convention 5). Each
    # run starts from a fresh server on freshly preconditioned content.
    mapfile -t order < <(bench_shuffle "${cells[@]}")
    for cell in "${order[@]}"; do
      for s in $(bench_shuffle $SERVERS); do
        serve "$s"
        # shellcheck disable=SC2086
        run_cell "$s" $cell
        stop_server
      done
    done
    continue
  fi
  for s in $(bench_shuffle $SERVERS); do
    serve "$s"
    mapfile -t order < <(bench_shuffle "${cells[@]}")
    for cell in "${order[@]}"; do
      # shellcheck disable=SC2086
      set -- $cell
      [ "$s" = svmd-cold ] && { [ "$1 $2" = "randwrite 4k" ] || continue; }
      run_cell "$s" "$@"
    done
    stop_server
  done
done

echo
echo "NBD servers: fio $(fio --version | sed 's/fio-//') nbd engine, one connection, ${RAMP} s ramp + ${RUNTIME} s per cell"
echo "(no ramp in the 4 KiB random-write cells, for every server: the CBT cells, see the top);"
echo "same ${SIZE_MB} MiB raw file on $(df --output=fstype "$work" | tail -1), page-cache resident except the cold cell"
echo "(evicted before it, no ramp); svmd-cold: a change ID before each cell;"
echo "p99 = fio total latency (submission to completion, --lat_percentiles=1); x best peer = median / best median of $PEERS."
for cell in "${cells[@]}"; do
  # shellcheck disable=SC2086
  name=$(cell_name $cell)
  echo
  case $name in
    *-cold) echo "== $name: COLD cache (file evicted before the run, no ramp) ==" ;;
    *) echo "== $name: page-cache resident (${SIZE_MB} MiB file cached) ==" ;;
  esac
  if [ "$CBT_ONLY" = 1 ]; then
    echo "(CBT_ONLY: no peers run; the CBT table below compares svmd with svm-nbd-serve)"
    continue
  fi
  bench_summary --higher IOPS "$OURS" "$name"
  bench_summary --lower "p99 latency, us" "$OURS" "$name" 4
  [ "$name" = randread-4k-qd32-cold ] &&
    bench_summary --lower "MiB the server read from disk; readahead shows here" "$OURS" "$name" 5
done
echo
echo "CBT cost (4 KiB random writes; svmd = CBT on, svm-nbd-serve = the same export without it;"
echo "target (issue 9): at most 3% of IOPS and of p99, cold and warm). Two estimates: the ratio"
echo "of the medians, and the median of the per-round ratios (CBT_ONLY runs a cell on every"
echo "server back to back, so a round's pair shares the machine's state of the moment: the"
echo "paired figure is the one that drift between rounds cannot move). Beside it, the"
echo "distribution-free confidence interval of that median (the sign test's: the k-th smallest to"
echo "the k-th largest round; its coverage is printed below the table). 'within 3%' says yes when"
echo "the estimate is within 3%, and 'shown' when the interval's upper end is too:"
python3 - "$BENCH_RESULTS" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("\t")
    runs.setdefault((f[0], f[1]), []).append([float(x) for x in f[2:]])
def med(cell, s, i):
    v = runs.get((cell, s))
    return statistics.median(x[i] for x in v) if v and len(v[0]) > i else None
from math import comb
def median_ci(n, want=0.95):
    # Distribution-free confidence interval of a median from n samples: the k-th smallest
    # to the k-th largest, with k as large as keeps the coverage 1 - 2 P(Bin(n, 1/2) < k)
    # at or above want (the sign test's interval); min..max (k = 1) when even that falls
    # short. Returns (k, coverage); k = 0 below 2 samples.
    cov = lambda k: 1 - 2 * sum(comb(n, j) for j in range(k)) / 2 ** n
    if n < 2:
        return (0, 0.0)
    k = 1
    while k + 1 <= n // 2 and cov(k + 1) >= want:
        k += 1
    return (k, cov(k))
def paired(cell, s, i, sign):
    # the k-th run of a server in a cell is its run of round k (rounds run in order)
    a, b = runs.get((cell, s), []), runs.get((cell, "svm-nbd-serve"), [])
    r = sorted(sign * (x[i] / y[i] - 1) * 100 for x, y in zip(a, b))
    if not r:
        return None
    k, cov = median_ci(len(r))
    lo, hi = (r[k - 1], r[-k]) if k else (min(r), max(r))
    return (statistics.median(r), lo, hi, cov)
def pfmt(p):
    return f"{p[0]:+.1f}% ({p[1]:+.1f}..{p[2]:+.1f})" if p else ""
print(f"  {'cell':20} {'server':14} {'IOPS':>9} {'p99 us':>9} {'IOPS cost':>10} {'p99 cost':>9} "
      f"{'paired IOPS cost':>20} {'paired p99 cost':>20} {'first marks/write':>18}  within 3%")
for cell in ("randwrite-4k-qd1", "randwrite-4k-qd32"):
    base = med(cell, "svm-nbd-serve", 0)
    bp99 = med(cell, "svm-nbd-serve", 1)
    for s in ("svm-nbd-serve", "svmd", "svmd-cold"):
        i = med(cell, s, 0)
        if i is None:
            continue
        p99 = med(cell, s, 1)
        ours = s != "svm-nbd-serve" and base and bp99
        icost = (1 - i / base) * 100 if ours else None
        pcost = (p99 / bp99 - 1) * 100 if ours else None
        fm = med(cell, s, 2)
        pi = paired(cell, s, 0, -1) if ours else None
        pp = paired(cell, s, 1, 1) if ours else None
        ok = "" if not ours else ("yes" if icost <= 3 and pcost <= 3 else "NO") + \
            (", paired: " + ("yes" if pi[0] <= 3 and pp[0] <= 3 else "NO") +
             (", shown" if pi[2] <= 3 and pp[2] <= 3 else ", not shown") if pi and pp else "")
        print(f"  {cell:20} {s:14} {i:9.0f} {p99:9.1f} "
              f"{'' if icost is None else f'{icost:+.1f}%':>10} "
              f"{'' if pcost is None else f'{pcost:+.1f}%':>9} "
              f"{pfmt(pi):>20} {pfmt(pp):>20} "
              f"{'' if fm is None else f'{fm:.3f}':>18}  {ok}")
n = len(runs.get(("randwrite-4k-qd1", "svm-nbd-serve"), []))
k, c = median_ci(n)
print(f"  ({n} rounds: the interval is " +
      ("the rounds' min..max" if k == 1 else f"the {k}th smallest to the {k}th largest ratio") +
      f", {c * 100:.1f}% coverage)" if k else f"  ({n} rounds: no interval)")
PY
bench_footer
