#!/usr/bin/env bash
# NBD server benchmark: fio's nbd engine against svmotion's export and its peers, all serving
# the same raw file over unix sockets with buffered I/O (writeback cache, flush = fdatasync):
#
#   svm          svm-nbd-serve FILE                      (the export, no write hook)
#   svm-engine   the same with SVM_NBD_INLINE=0          (every request on io_uring)
#   svm+cbt      svm-nbd-serve --ctk FILE.ctk FILE       (real CBT, cbt_mark before each ack;
#                                                         every block already marked once in
#                                                         the epoch: the steady state)
#   svm+cbt-cold the same with a new .ctk for each cell  (every first write to a 64 KiB block
#                                                         waits for a durable mark: worst case)
#   svmd         svmd exporting the disk of a VM         (the agent, CBT on, warm like svm+cbt)
#   nbdkit       nbdkit file FILE
#   qemu-nbd     qemu-nbd -f raw --cache=writeback
#
# Cells: 4 KiB random write and read at iodepth 1 and 32, 1 MiB sequential write and read at
# iodepth 8. Each server is started afresh for each cell. Prints IOPS, p50/p99 completion
# latency, and the ratios svm/nbdkit, svm/qemu-nbd and the cost of CBT.
#
# Usage: bench/nbd.sh [--runtime SECONDS] [--size MIB] [--repeat N] [--servers "svm nbdkit ..."]
#        (SVM_BIN: the programs, default build/bin). Medians over the repeats.
set -euo pipefail
export PATH=/usr/bin:/bin:$PATH

runtime=10
size_mib=1024
repeat=1
servers="svm svm-engine svm+cbt svm+cbt-cold svmd nbdkit qemu-nbd"
while [ $# -gt 0 ]; do
  case $1 in
    --runtime) runtime=$2; shift 2 ;;
    --size) size_mib=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --servers) servers=$2; shift 2 ;;
    --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/nbd.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${SVM_BIN:-$here/build/bin}
for p in fio nbdkit qemu-nbd python3; do
  command -v "$p" >/dev/null || { echo "bench/nbd.sh: $p is not installed" >&2; exit 1; }
done
[ -x "$bin/svm-nbd-serve" ] || { echo "bench/nbd.sh: build first ($bin/svm-nbd-serve)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/var/tmp}/svm-nbd-bench.XXXXXX")
server_pid=
cleanup()
{
  [ -n "$server_pid" ] && { kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; }
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
sock=$work/nbd.sock

# The disk: a VM's disk made by svmd when svmd is built (so that all five serve the same
# file), else a plain file; fully allocated and written.
mkdir -p ds state
disk=$work/disk.raw
if [ -x "$bin/svmd" ] && [ -x "$bin/svmctl" ]; then
  "$bin/svmd" --name bench --state "$work/state" --datastore "ds=$work/ds" 2>"$work/svmd.log" &
  server_pid=$!
  for _ in $(seq 1 100); do [ -S "$work/state/control.sock" ] && break; sleep 0.05; done
  SVM_STATE=$work/state "$bin/svmctl" vm create bench --datastore ds \
    --disk "${size_mib}M:eager-zeroed-thick" >/dev/null
  disk=$(SVM_STATE=$work/state "$bin/svmctl" vm list --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
vms = d.get("vms", d) if isinstance(d, dict) else d
vm = [v for v in vms if v["name"] == "bench"][0]
print(vm["disks"][0]["file"])')
  kill "$server_pid"; wait "$server_pid" || true; server_pid=
else
  servers=${servers//svmd/}
fi
[ -f "$disk" ] || { echo "bench/nbd.sh: no disk at $disk" >&2; exit 1; }

start_server()
{
  local s=$1
  rm -f "$sock" "$work/cold.ctk"
  case $s in
    svm) "$bin/svm-nbd-serve" --socket "$sock" --name disk "$disk" >/dev/null 2>>"$work/svm.log" & ;;
    svm-engine) SVM_NBD_INLINE=0 "$bin/svm-nbd-serve" --socket "$sock" --name disk "$disk" \
                  >/dev/null 2>>"$work/svm.log" & ;;
    svm+cbt) "$bin/svm-nbd-serve" --socket "$sock" --name disk --ctk "$work/bench.ctk" "$disk" \
               >/dev/null 2>>"$work/svm.log" & ;;
    svm+cbt-cold) "$bin/svm-nbd-serve" --socket "$sock" --name disk --ctk "$work/cold.ctk" \
                    "$disk" >/dev/null 2>>"$work/svm.log" & ;;
    svmd) "$bin/svmd" --name bench --state "$work/state" --datastore "ds=$work/ds" \
            2>>"$work/svmd.log" & ;;
    nbdkit) nbdkit -f -U "$sock" -e disk file "$disk" & ;;
    qemu-nbd) qemu-nbd -f raw --cache=writeback --aio=threads -t -x disk -k "$sock" "$disk" & ;;
  esac
  server_pid=$!
  local want=$sock
  [ "$s" = svmd ] && want=$work/state/nbd/bench-disk0.sock
  for _ in $(seq 1 200); do
    if [ -S "$want" ] && nbdinfo --size "nbd+unix:///$(uri_name "$s")?socket=$want" >/dev/null 2>&1; then
      uri="nbd+unix:///$(uri_name "$s")?socket=$want"
      return 0
    fi
    sleep 0.05
  done
  echo "bench/nbd.sh: $s did not start" >&2
  exit 1
}
uri_name() { [ "$1" = svmd ] && echo bench/disk0 || echo disk; }

stop_server()
{
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}

# Fill the disk with data through svmd and through svm+cbt: every block allocated and in the
# page cache, every block marked once in both trackers' current epoch.
filled=0
for s in $servers; do
  case $s in svmd|svm+cbt) ;; *) continue ;; esac
  filled=1
  start_server "$s"
  fio --name=fill --ioengine=nbd --uri="$uri" --rw=write --bs=1M --iodepth=8 \
    --size="${size_mib}M" --refill_buffers=1 --output=/dev/null
  stop_server
done
[ "$filled" = 1 ] ||
  dd if=/dev/urandom of="$disk" bs=1M count="$size_mib" conv=notrunc status=none
sync "$disk"

cells=("randwrite 4k 1" "randwrite 4k 32" "randread 4k 1" "randread 4k 32"
       "write 1M 8" "read 1M 8")
results=$work/results.txt
: >"$results"
for r in $(seq 1 "$repeat"); do
  for cell in "${cells[@]}"; do
    read -r rw bs qd <<<"$cell"
    for s in $servers; do
      sync "$disk"              # no writeback of the last cell's data in this one
      start_server "$s"
      fio --name=bench --ioengine=nbd --uri="$uri" --rw="$rw" --bs="$bs" --iodepth="$qd" \
        --size="${size_mib}M" --runtime="$runtime" --time_based=1 --norandommap=1 \
        --randrepeat=0 --output-format=json --output="$work/fio.json" >/dev/null
      # the server's CPU time (all threads; utime + stime in clock ticks)
      ticks=$(awk '{print $14 + $15}' /proc/"$server_pid"/stat)
      stop_server
      python3 - "$work/fio.json" "$s" "$rw" "$bs" "$qd" "$ticks" "$(getconf CLK_TCK)" \
        >>"$results" <<'PY'
import json, sys
path, s, rw, bs, qd, ticks, hz = sys.argv[1:]
j = json.load(open(path))["jobs"][0]
d = j["write" if "write" in rw else "read"]
p = d["clat_ns"].get("percentile", {})
cpu_us = int(ticks) / int(hz) * 1e6 / max(d["total_ios"], 1)
print(s, f"{rw}-{bs}-qd{qd}", round(d["iops"]), p.get("50.000000", 0) / 1000,
      p.get("99.000000", 0) / 1000, round(cpu_us, 2), j["error"])
PY
      echo "  $(tail -1 "$results")" >&2
    done
  done
done

python3 - "$results" "$servers" "$repeat" "$runtime" <<'PY'
import statistics, sys
path, servers, repeat, runtime = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4]
rows = {}
for line in open(path):
    s, cell, iops, p50, p99, cpu, err = line.split()
    if int(err):
        print(f"warning: {s} {cell}: fio error {err}")
    rows.setdefault((cell, s), []).append((int(iops), float(p50), float(p99), float(cpu)))
cells = []
for (cell, s) in rows:
    if cell not in cells:
        cells.append(cell)
med = {k: tuple(statistics.median(x[i] for x in v) for i in range(4)) for k, v in rows.items()}
print(f"\nfio nbd engine, {runtime} s per cell, median of {repeat}; latency = completion (clat);")
print("cpu = the server's CPU time (all its threads) per request\n")
print("| cell | " + " | ".join(servers) + " |")
print("|---|" + "---|" * len(servers))
for cell in cells:
    out = []
    for s in servers:
        if (cell, s) in med:
            i, p50, p99, cpu = med[(cell, s)]
            out.append(f"{i:,.0f} IOPS, p50 {p50:.0f} / p99 {p99:.0f} us, cpu {cpu:.1f} us")
        else:
            out.append("-")
    print(f"| {cell} | " + " | ".join(out) + " |")
print("\n| cell | svm/nbdkit IOPS | svm/qemu-nbd IOPS | p99 svm/nbdkit | p99 svm/qemu-nbd | cpu/req svm/nbdkit | cpu/req svm/qemu-nbd | CBT cost, warm | CBT cost, cold | svmd/svm IOPS | svm/svm-engine IOPS |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
def ratio(a, b, i):
    if a in med and b in med and med[b][i]:
        return f"{med[a][i] / med[b][i]:.2f}"
    return "-"
for cell in cells:
    a = (cell, "svm")
    def cost(s):
        if a in med and (cell, s) in med:
            return f"{(1 - med[(cell, s)][0] / med[a][0]) * 100:+.1f}%"
        return "-"
    print(f"| {cell} | {ratio(a, (cell, 'nbdkit'), 0)} | {ratio(a, (cell, 'qemu-nbd'), 0)} | "
          f"{ratio(a, (cell, 'nbdkit'), 2)} | {ratio(a, (cell, 'qemu-nbd'), 2)} | "
          f"{ratio(a, (cell, 'nbdkit'), 3)} | {ratio(a, (cell, 'qemu-nbd'), 3)} | "
          f"{cost('svm+cbt')} | {cost('svm+cbt-cold')} | {ratio((cell, 'svmd'), a, 0)} | "
          f"{ratio(a, (cell, 'svm-engine'), 0)} |")
PY
