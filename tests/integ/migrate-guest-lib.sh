# shellcheck shell=bash
# Helpers for the live-move tests with real guests (migrate-guest.sh, migrate-fio.sh,
# migrate-qemu-io.sh, migrate-rate.sh, migrate-provisioning.sh). Sourced after agent-lib.sh,
# which gives each test svmd with two datastores ds1, ds2 under $T.
#
#   disk_file VM DISK            the disk's file as the agent names it (vm show --json)
#   move VM DS [ARGS...]         svmctl migrate VM --datastore DS ARGS --json into $T/move.json;
#                                fails unless it exits 0 and reports a finished move
#   check_moved VM DS OLDFILE    the VM's disk 0 is now a file of DS, OLDFILE is gone
#   wait_file_grows FILE BYTES [SECONDS]   wait until FILE is BYTES larger than now (a writer's
#                                log: proof that it went on writing)
#   mg_on_exit CMD               run CMD at exit before agent-lib's cleanup (guests, writers)
#   qemu_io_check, fio_fill, fio_writer_start/stop, fio_verify_range: below

_mg_exit_cmds=()
mg_on_exit() { _mg_exit_cmds+=("$1"); }
_mg_exit() {
  local rc=$? c
  set +e
  for c in "${_mg_exit_cmds[@]}"; do eval "$c" >/dev/null 2>&1; done
  (exit "$rc")
  cleanup
}
trap _mg_exit EXIT

disk_file() { svmctl vm show "$1" --json | json_get "d['disks'][$2]['file']"; }

move() {
  local vm=$1 ds=$2 rc=0 state
  shift 2
  MOVE_T0=$EPOCHREALTIME
  svmctl migrate "$vm" --datastore "$ds" "$@" --json >"$T/move.json" 2>"$T/move.err" || rc=$?
  MOVE_T1=$EPOCHREALTIME
  [ "$rc" -eq 0 ] || fail "svmctl migrate $vm --datastore $ds $*: exit $rc: $(cat "$T/move.err")"
  state=$(json_get 'd["state"]' <"$T/move.json") ||
    fail "svmctl migrate --json printed no JSON object with a state: $(cat "$T/move.json")"
  case "$state" in
  done | completed | succeeded | finished) ;;
  *) fail "svmctl migrate $vm: state '$state', want a finished move: $(cat "$T/move.json")" ;;
  esac
  for k in bytes_copied seconds downtime_ms; do
    json_get "d['$k']" <"$T/move.json" >/dev/null ||
      fail "svmctl migrate --json lacks $k: $(cat "$T/move.json")"
  done
  echo "move $vm -> $ds: $(cat "$T/move.json")"
}

check_moved() {
  local vm=$1 ds=$2 old=$3 now
  now=$(disk_file "$vm" 0)
  case "$now" in
  "$T/$ds/"*) ;;
  *) fail "after the move $vm's disk 0 is $now, not in datastore $ds ($T/$ds)" ;;
  esac
  [ -f "$now" ] || fail "the agent names $now, which does not exist"
  [ ! -e "$old" ] || fail "the source file $old is still there after the move"
  [ "$(svmctl vm show "$vm" --json | json_get 'd["datastore"]')" = "$ds" ] ||
    fail "vm show $vm does not name datastore $ds after the move"
}

wait_file_grows() {
  local f=$1 by=$2 secs=${3:-60} start i
  start=$(stat -c %s "$f")
  for ((i = 0; i < secs * 20; i++)); do
    [ "$(stat -c %s "$f")" -ge $((start + by)) ] && return 0
    if [ -n "${FIO_PID:-}" ] && ! kill -0 "$FIO_PID" 2>/dev/null; then
      fail "fio ended (its one pass over the range is over, or a verify failed): $(grep -h -m3 -E 'verify|err' "$T/fio-writer.err" "$T/fio-writer.json" 2>/dev/null)"
    fi
    sleep 0.05
  done
  fail "$f did not grow by $by bytes in ${secs}s: the writer stopped"
}

# qemu_io_check TARGET CMD...: qemu-io -c CMD ... on TARGET (an NBD URI, or a file: read-only
# and without QEMU's image locking, since svmd holds the file it serves locked); fails when
# qemu-io fails or any `read -P` finds other data.
qemu_io_check() {
  local target=$1 c args=()
  shift
  for c in "$@"; do args+=(-c "$c"); done
  if [ -f "$target" ]; then
    args+=(-r --image-opts "driver=raw,file.driver=file,file.filename=$target,file.locking=off")
  else
    args+=(-f raw "$target")
  fi
  qemu-io "${args[@]}" >"$T/qio-check.out" 2>&1 ||
    fail "qemu-io on $target: $(grep -m3 -iE 'fail|error' "$T/qio-check.out")"
  ! grep -qi 'verification failed' "$T/qio-check.out" ||
    fail "qemu-io on $target: $(grep -m3 -i 'verification failed' "$T/qio-check.out")"
}

# fio_writer_start URI OFFSET SIZE [FIO ARGS...]: fio's nbd engine writing 4 KiB random
# crc32c-headed blocks over [OFFSET, OFFSET+SIZE) at depth 16 in the background, one pass in
# which every block is written once (fio's random map), each 256 writes read back and verified
# while it writes (verify_backlog), until fio_writer_stop (or the end of the pass). Its write log
# ($T/fio-w.log, in issue order) shows that it goes on writing, and tells fio_check_last which
# write each block must hold. Returns once fio has written 64 KiB of log. Make the pass outlast
# what the test waits for (a large range, or --rate_iops).
FIO_PID=
fio_writer_start() {
  local u=$1 off=$2 size=$3
  shift 3
  rm -f "$T/fio-stop" "$T/fio-w.log"
  fio --name=writer --ioengine=nbd --uri="$u" --rw=randwrite --bs=4k --offset="$off" \
    --size="$size" --iodepth=16 --verify=crc32c --verify_backlog=256 --do_verify=1 \
    --verify_fatal=1 --trigger-file="$T/fio-stop" --write_iolog="$T/fio-w.log" \
    --output-format=json --output="$T/fio-writer.json" "$@" 2>"$T/fio-writer.err" &
  FIO_PID=$!
  for _ in $(seq 1 200); do [ -f "$T/fio-w.log" ] && break; sleep 0.05; done
  [ -f "$T/fio-w.log" ] || fail "fio did not start writing to $u"
  wait_file_grows "$T/fio-w.log" 65536
}

# fio_writer_stop: stop the writer (trigger file) and check that it wrote and verified
# without an error; FIO_WRITES and FIO_READS get its counts.
fio_writer_stop() {
  local rc=0
  touch "$T/fio-stop"
  wait "$FIO_PID" || rc=$?
  FIO_PID=
  [ "$rc" -eq 0 ] || { cat "$T/fio-writer.err" >&2; fail "fio writer exited $rc (a verify failed?)"; }
  ! grep -qs 'verify:' "$T/fio-writer.err" "$T/fio-writer.json" ||
    fail "fio reported verify errors: $(grep -h verify: "$T/fio-writer.err" "$T/fio-writer.json" | head -3)"
  python3 - "$T/fio-writer.json" >"$T/fio-writer.counts" <<'PY' || fail "fio writer: errors or no I/O"
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
assert j["error"] == 0, j["error"]
w, r = j["write"]["total_ios"], j["read"]["total_ios"]
assert w > 0 and r > 0, (w, r)
print(w, r)
PY
  read -r FIO_WRITES FIO_READS <"$T/fio-writer.counts"
}
mg_on_exit '[ -z "$FIO_PID" ] || { kill "$FIO_PID"; wait "$FIO_PID"; }'

# fio_fill URI OFFSET SIZE [BS]: every 4 KiB (BS) block of the range a fio block (verified), written in
# order: block j is the fill's write j, where the writer's k-th write goes to a random block, so
# a block that the writer's write did not reach tells itself apart (fio's random offsets do
# not change with --randseed: a random fill would number its blocks as the writer does)
fio_fill() {
  fio --name=fill --ioengine=nbd --uri="$1" --rw=write --bs="${4:-4k}" --offset="$2" --size="$3" \
    --iodepth=16 --verify=crc32c --do_verify=1 --verify_fatal=1 --output="$T/fio-fill.txt" ||
    { cat "$T/fio-fill.txt" >&2; fail "fio fill of $1"; }
}

# fio_verify_range URI|FILE OFFSET SIZE [BS]: read the range back, every block a fio block for its
# offset with a good crc32c (through an NBD URI, or from a file directly)
fio_verify_range() {
  local target=(--ioengine=nbd "--uri=$1")
  [ -f "$1" ] && target=("--filename=$1")
  fio --name=check "${target[@]}" --rw=read --bs="${4:-4k}" --offset="$2" --size="$3" --iodepth=16 \
    --verify=crc32c --verify_fatal=1 --output="$T/fio-check.txt" ||
    { grep -m3 verify "$T/fio-check.txt" >&2; fail "read-verify of $1 [$2 +$3]"; }
}

# fio_check_last FILE: every block the writer wrote holds that write, not an older block:
# fio numbers a job's writes in issue order (the header's numberio, 16 bits), the order of its
# write log, and the writer's one pass writes each block once. fio's own verify cannot see a
# lost write whose block still holds an older valid fio block (it checks offset and crc32c).
# Checks the headers only; fio_verify_range checks the crc32c of every block.
fio_check_last() {
  python3 - "$1" "$T/fio-w.log" <<'PY' || fail "$1 does not hold the writer's last writes"
import struct, sys
path, log = sys.argv[1], sys.argv[2]
writes = [int(l.split()[3]) for l in open(log) if l.split()[2:3] == ["write"]]
if len(set(writes)) != len(writes):
    sys.exit("the writer wrote a block twice: the check needs one pass")
bad = []
with open(path, "rb") as f:
    for k, off in enumerate(writes):
        f.seek(off)
        magic, _, _, _, hoff, _, _, _, nio, _ = struct.unpack("<HHIQQIIHHI", f.read(40))
        if magic != 0xacca or hoff != off or nio != k & 0xffff:
            bad.append(f"offset {off}: write {k} of the writer missing (magic {magic:#x}, "
                       f"offset {hoff}, numberio {nio})")
if bad:
    sys.exit(f"{path}: {len(bad)} of {len(writes)} writes lost: " + "; ".join(bad[:3]))
print(f"fio_check_last: {path} holds all {len(writes)} writes")
PY
}
