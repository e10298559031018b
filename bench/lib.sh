# shellcheck shell=bash
# bench/lib.sh: the conventions every svmotion benchmark follows (see bench/README.md).
# Source it from a bench script that runs with `set -euo pipefail`:
#
#   . "$(dirname "$0")/lib.sh"
#   bench_init convert                  # BENCH_QUICK, ROUNDS, work dir, exit trap, notice
#   bench_need qemu-img qemu-utils      # a missing peer fails loudly, naming its package
#   for round in $(seq 1 "$ROUNDS"); do
#     for peer in $(bench_shuffle a b c); do ... bench_record "$cell" "$peer" "$value"; done
#   done
#   bench_summary --lower s "svm-convert" "$cell"   # min/median/max and ratio vs best peer
#
# Everything here is plain bash plus python3 (statistics, posix_fadvise).

BENCH_QUICK=${BENCH_QUICK:-0}
BENCH_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${SVM_BIN:-$BENCH_TOP/build/bin}
_bench_cleanups=()

# bench_help "$@": --help prints the script's header comment.
bench_help()
{
  if [ "${1:-}" = --help ] || [ "${1:-}" = -h ]; then
    sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
  fi
}

bench_log() { echo "bench/$BENCH_NAME: $*" >&2; }
bench_fail() { echo "bench/$BENCH_NAME: FAILED: $*" >&2; exit 1; }

# bench_stop PID [SECONDS]: SIGTERM, then SIGKILL if PID is still there after SECONDS (30),
# and reap it. For the exit handlers: a server whose stop hangs, or a client whose server
# died (fio's nbd engine then spins at 90% CPU), must not outlive the bench and disturb the
# next run.
bench_stop() {
  local pid=$1 t=${2:-30} i
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < t * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "bench/$BENCH_NAME: process $pid ($(ps -o comm= -p "$pid")) did not stop within $t s of SIGTERM: killed" >&4
    kill -9 "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null || true
}

# Run at exit, last registered first (servers before the directories they use).
bench_on_exit() { _bench_cleanups+=("$1"); }
_bench_exit()
{
  local rc=$? i
  set +e
  for ((i = ${#_bench_cleanups[@]} - 1; i >= 0; i--)); do
    eval "${_bench_cleanups[i]}" >/dev/null 2>&1
  done
  [ "$rc" -eq 0 ] || echo "bench/$BENCH_NAME: exit status $rc" >&2
  exit "$rc"
}

# bench_init NAME: ROUNDS (default 5; fewer only with BENCH_QUICK=1), BENCH_WORK (a temporary
# directory removed at exit, under BENCH_DIR or /var/tmp: a real disk, not tmpfs), the trap,
# and the machine-noise notice on stderr.
bench_init()
{
  BENCH_NAME=$1
  ROUNDS=${ROUNDS:-5}
  if [ "$ROUNDS" -lt 5 ] && [ "$BENCH_QUICK" != 1 ]; then
    bench_fail "ROUNDS=$ROUNDS: a result needs at least 5 rounds (BENCH_QUICK=1 for a smoke test)"
  fi
  exec 4>&2     # the handlers' own messages (bench_stop): their stderr is /dev/null
  trap _bench_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  BENCH_DIR=${BENCH_DIR:-/var/tmp/svm-bench}
  mkdir -p "$BENCH_DIR"
  BENCH_WORK=$(mktemp -d "$BENCH_DIR/$BENCH_NAME.XXXXXX")
  bench_on_exit "rm -rf '$BENCH_WORK'"
  BENCH_RESULTS=$BENCH_WORK/results.tsv
  : >"$BENCH_RESULTS"
  bench_noise_notice
}

# bench_need COMMAND PACKAGE: fail now, naming the Debian package, when a peer is missing.
bench_need()
{
  command -v "$1" >/dev/null 2>&1 ||
    bench_fail "$1 is not installed: apt-get install $2 (a benchmark never skips a peer)"
}
bench_need_bin()
{
  [ -x "$BIN/$1" ] ||
    bench_fail "$BIN/$1 is not built: cmake -S . -B build && cmake --build build (or set SVM_BIN)"
}

# The machine: CPUs, load, and the busiest other processes. Numbers taken while the load
# average is above a quarter of the CPUs are marked NOISY in the summary.
bench_noise_notice()
{
  local load cpus
  load=$(cut -d' ' -f1 /proc/loadavg)
  cpus=$(nproc)
  BENCH_NOISY=$(awk -v l="$load" -v c="$cpus" 'BEGIN { print (l > c / 4) ? 1 : 0 }')
  {
    echo "bench/$BENCH_NAME: $(uname -n): $cpus CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), kernel $(uname -r)"
    echo "bench/$BENCH_NAME: load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
    if [ "$BENCH_NOISY" = 1 ]; then
      echo "bench/$BENCH_NAME: NOTICE: the machine is busy; these numbers are NOISY, not results. Busiest processes:"
      ps -eo pcpu,comm --sort=-pcpu | sed -n '2,6p' | sed 's/^/    /'
    fi
    [ "$BENCH_QUICK" = 1 ] && echo "bench/$BENCH_NAME: BENCH_QUICK=1: small sizes, a smoke test of the script, not a result"
  } >&2
  return 0
}

# bench_shuffle ITEM...: the items, one per line, in a new random order (a new order per round,
# so that drift in the machine's state does not always fall on the same peer).
bench_shuffle() { printf '%s\n' "$@" | shuf; }

bench_now() { date +%s.%N; }
bench_elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }

# bench_evict FILE...: drop the named files (only them) from the page cache: fdatasync (dirty
# pages cannot be dropped), then posix_fadvise(POSIX_FADV_DONTNEED) over the whole file. Unlike
# drop_caches it leaves the tools' binaries and libraries cached, and needs no root.
bench_evict()
{
  python3 - "$@" <<'PY'
import os, sys
for path in sys.argv[1:]:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
PY
}

# bench_resident FILE: percentage of FILE's pages in the page cache (mincore), for checks.
bench_resident()
{
  python3 - "$1" <<'PY'
import ctypes, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
page = os.sysconf("SC_PAGE_SIZE")
n = (size + page - 1) // page
addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
vec = ctypes.create_string_buffer(n)
if libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
    sys.exit("mincore failed")
print(round(100 * sum(b & 1 for b in vec.raw) / n))
libc.munmap(ctypes.c_void_p(addr), size)
PY
}

# bench_record CELL PEER VALUE [EXTRA...]: one timed, verified run. Record a run only after
# its verification passed; a failed verification is bench_fail, never a missing row.
bench_record() { local IFS=$'\t'; echo "$*" >>"$BENCH_RESULTS"; }

# bench_summary --lower|--higher UNIT OURS CELL [COLUMN]: a table of one cell, one row per peer:
# runs, min, median, max of COLUMN (3 = VALUE of bench_record, 4 = the first EXTRA, ...) and
# each row's median against the best PEER's median (OURS: a comma-separated list of rows that
# are svmotion's and so not peers). The ratio is "x best peer": with --lower (times) above 1
# means slower than the best peer; with --higher (IOPS) below 1 means fewer.
bench_summary()
{
  python3 - "$BENCH_RESULTS" "$@" <<'PY'
import statistics, sys
path, better, unit, ours, cell = sys.argv[1:6]
col = int(sys.argv[6]) if len(sys.argv) > 6 else 3
ours = set(x for x in ours.split(",") if x)
runs = {}
for line in open(path):
    f = line.rstrip("\n").split("\t")
    if f[0] == cell and len(f) >= col:
        runs.setdefault(f[1], []).append(float(f[col - 1]))
if not runs:
    sys.exit(f"no results for {cell}")
med = {p: statistics.median(v) for p, v in runs.items()}
peers = [p for p in runs if p not in ours]
pick = min if better == "--lower" else max
best = pick(peers, key=lambda p: med[p]) if peers else None
w = max(len(p) for p in runs) + 2
def f(x):
    return f"{x:11.0f}" if abs(x) >= 1000 else f"{x:11.4g}"
print(f"{cell} ({unit}; {'lower' if better == '--lower' else 'higher'} is better)")
print(f"  {'':{w}} {'runs':>4} {'min':>11} {'median':>11} {'max':>11}   x best peer")
for p in sorted(runs, key=lambda p: (p not in ours, med[p] if better == "--lower" else -med[p])):
    v = runs[p]
    r = f"{med[p] / med[best]:.2f}" if best and med[best] else "-"
    tag = " (best peer)" if p == best else ""
    print(f"  {p:{w}} {len(v):4d} {f(min(v))} {f(med[p])} {f(max(v))}   {r}{tag}")
PY
}

# bench_footer [HOW]: how the numbers were taken, and the load at the end.
bench_footer()
{
  local load
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  echo "rounds: $ROUNDS; ${1:-peer order shuffled per round; every timed run verified.}"
  echo "machine: $(nproc) CPUs, load average $load at the end."
  if [ "$BENCH_NOISY" = 1 ] || awk -v l="${load%% *}" -v c="$(nproc)" 'BEGIN { exit !(l > c / 4) }'; then
    echo "NOTICE: the machine was busy during this run: NOISY numbers, not a result."
  fi
  [ "$BENCH_QUICK" = 1 ] && echo "NOTICE: BENCH_QUICK=1: a smoke test of the script, not a result."
  return 0
}

# bench_slots_disk PATH SIZE_MB ZEROS: the benchmarks' disk, made once and kept (PATH under
# $BENCH_DIR): SIZE_MB of 1 MiB slots, even slots allocated, odd ones holes; with ZEROS=N, 1 in
# N allocated slots zeros (the 3rd, 8th, ...), the others random (ZEROS=0: all random). Fails
# when an existing PATH has the wrong size.
bench_slots_disk() {
  local path=$1 mb=$2 zeros=$3
  if [ ! -f "$path" ]; then
    bench_log "making $path (${mb} MiB: 1 MiB slots, even ones allocated$(
      [ "$zeros" -gt 0 ] && echo ", 1 in $zeros of them zeros"))"
    python3 - "$path" "$mb" "$zeros" <<'PY'
import os, sys
path, n, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
MiB = 1 << 20
fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.ftruncate(fd, n * MiB)
zero = bytes(MiB)
for k, slot in enumerate(range(0, n, 2)):
    os.pwrite(fd, zero if every and k % every == 2 else os.urandom(MiB), slot * MiB)
os.fsync(fd)
os.close(fd)
os.rename(path + ".tmp", path)
PY
  fi
  [ "$(stat -c %s "$path")" -eq $((mb * 1048576)) ] || bench_fail "$path has the wrong size: remove it"
}

# bench_convert_src: the source disk of bench/convert.sh and bench/nfc.sh (layout version 2):
# bench_slots_disk with 1 in 5 allocated slots zeros. Sets src, size, alloc_slots,
# data_bytes (the random data) and thin_max (what a thin copy may allocate).
bench_convert_src() {
  src=$BENCH_DIR/convert-src-v2-${SIZE_MB}M.raw
  bench_slots_disk "$src" "$SIZE_MB" 5
  size=$((SIZE_MB * 1048576))
  alloc_slots=$(((SIZE_MB + 1) / 2))
  data_bytes=$(((alloc_slots - (alloc_slots + 2) / 5) * 1048576))
  thin_max=$((data_bytes + data_bytes / 100 + 1048576))
}
