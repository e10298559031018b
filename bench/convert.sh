#!/usr/bin/env bash
# Benchmark: svm-convert against the tools people use to copy a raw disk, on the same source,
# each tuned the way its own documentation tunes it for a local raw-to-raw copy. Conventions
# (rounds, shuffle, verification, eviction, min/median/max, ratio vs best peer): bench/README.md.
#
# Source disk (made once, kept in $BENCH_DIR, default /var/tmp/svm-bench): SIZE_MB (4096) of
# 1 MiB slots; even slots allocated, odd slots holes (50% allocated). Of the allocated slots,
# every 5th (allocated index % 5 == 2) is written with zeros (allocated zeros: 10% of the disk,
# which a thin copy must not allocate); the others hold random bytes from os.urandom (40%:
# nothing compresses, no zero block inside). Expected thin result: the random slots only.
#
# Peers (each writes a new DST beside the source; `bench/README.md` says why these flags):
#   svm-convert thin          svm-convert --force SRC DST          (default provisioning: thin)
#   svm-convert thick         svm-convert --force --provisioning thick SRC DST   (reference row)
#   qemu-img -m16 -W          qemu-img convert -f raw -O raw -m 16 -W SRC DST
#   qemu-img default          qemu-img convert -f raw -O raw SRC DST
#   qemu-img -T none -t none  qemu-img convert -f raw -O raw -T none -t none SRC DST
#   nbdcopy                   nbdcopy --target-is-zero --request-size=2097152 SRC DST
#   cp --sparse=always        cp --sparse=always SRC DST
#
# Each run: DST removed and the removal synced, SRC evicted from the page cache
# (posix_fadvise DONTNEED of SRC only), then timed from the start of the tool to the end of a
# `sync -f` on the bench file system, so every tool pays for its data reaching the disk.
# Every timed run is verified: `qemu-img compare` against SRC, same size, and the allocation
# (thin rows: no more than the random data + 1% + 1 MiB; thick: the whole size). A failed
# verification fails the benchmark.
#
# Usage: bench/convert.sh   env: ROUNDS=5 SIZE_MB=4096 BENCH_DIR=/var/tmp/svm-bench SVM_BIN=build/bin
#        BENCH_QUICK=1      smoke test: SIZE_MB=256 (not a result)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench_help "$@"
if [ "$BENCH_QUICK" = 1 ]; then
  SIZE_MB=${SIZE_MB:-256}
fi
SIZE_MB=${SIZE_MB:-4096}
bench_init convert
bench_need qemu-img qemu-utils
bench_need nbdcopy libnbd-bin
bench_need cp coreutils
bench_need python3 python3
bench_need_bin svm-convert
[ "$SIZE_MB" -ge 10 ] || bench_fail "SIZE_MB=$SIZE_MB: at least 10"

# ---- the source disk (layout version 2) ----
bench_convert_src
src_alloc=$(($(stat -c %b "$src") * 512))
[ "$src_alloc" -ge $((alloc_slots * 1048576)) ] || bench_fail "$src is not 50% allocated: remove it"

dst=$BENCH_WORK/dst.raw
peers=("svm-convert thin" "svm-convert thick" "qemu-img -m16 -W" "qemu-img default"
       "qemu-img -T none -t none" "nbdcopy" "cp --sparse=always")
run_peer()
{
  case $1 in
    "svm-convert thin") "$BIN/svm-convert" --force "$src" "$dst" >/dev/null ;;
    "svm-convert thick") "$BIN/svm-convert" --force --provisioning thick "$src" "$dst" >/dev/null ;;
    "qemu-img -m16 -W") qemu-img convert -f raw -O raw -m 16 -W "$src" "$dst" ;;
    "qemu-img default") qemu-img convert -f raw -O raw "$src" "$dst" ;;
    "qemu-img -T none -t none") qemu-img convert -f raw -O raw -T none -t none "$src" "$dst" ;;
    "nbdcopy") nbdcopy --target-is-zero --request-size=2097152 "$src" "$dst" ;;
    "cp --sparse=always") cp --sparse=always "$src" "$dst" ;;
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
  if [ "$peer" = "svm-convert thick" ]; then
    [ "$alloc" -ge "$size" ] ||
      bench_fail "$peer (round $round): $alloc bytes allocated, a thick disk needs $size"
  else
    [ "$alloc" -le "$thin_max" ] ||
      bench_fail "$peer (round $round): $alloc bytes allocated, more than the $data_bytes bytes of data (+1% +1 MiB): not thin"
    [ "$alloc" -ge "$data_bytes" ] ||
      bench_fail "$peer (round $round): $alloc bytes allocated, less than the $data_bytes bytes of data"
  fi
  echo "$alloc"
}

bench_log "source $src: $SIZE_MB MiB, $((src_alloc / 1048576)) MiB allocated, $((data_bytes / 1048576)) MiB random data; $ROUNDS rounds"
for round in $(seq 1 "$ROUNDS"); do
  mapfile -t order < <(bench_shuffle "${peers[@]}")
  for peer in "${order[@]}"; do
    rm -f "$dst"
    sync -f "$BENCH_WORK"
    bench_evict "$src"
    t0=$(bench_now)
    run_peer "$peer" || bench_fail "$peer (round $round) failed: exit status $?"
    sync -f "$BENCH_WORK"
    t1=$(bench_now)
    secs=$(bench_elapsed "$t0" "$t1")
    alloc=$(verify_run "$peer" "$round")
    bench_record convert "$peer" "$secs" "$(awk -v a="$alloc" 'BEGIN { printf "%.1f", a / 1048576 }')"
    bench_log "round $round: $peer: $secs s, $((alloc / 1048576)) MiB allocated, verified"
  done
done
rm -f "$dst"

echo
echo "svm-convert vs peers: $SIZE_MB MiB raw disk, 1 MiB slots: 50% holes, 40% random data, 10% allocated zeros"
echo "on $(df --output=fstype "$BENCH_DIR" | tail -1) ($(df --output=source "$BENCH_DIR" | tail -1)); SRC evicted (posix_fadvise) before each run;"
echo "time = tool start to the end of sync -f on the bench file system."
echo
bench_summary --lower "seconds" "svm-convert thin,svm-convert thick" convert
echo
bench_summary --lower "MiB allocated in the result" "svm-convert thin,svm-convert thick" convert 4
echo
python3 - "$BENCH_RESULTS" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    cell, peer, secs, _ = line.rstrip("\n").split("\t")
    runs.setdefault(peer, []).append(float(secs))
med = {p: statistics.median(v) for p, v in runs.items()}
peers = {p: m for p, m in med.items() if not p.startswith("svm-convert")}
best = min(peers, key=peers.get)
print(f"svm-convert thin median / best peer median ({best}): "
      f"{med['svm-convert thin']:.3f} / {peers[best]:.3f} s = {med['svm-convert thin'] / peers[best]:.2f}")
PY
bench_footer
