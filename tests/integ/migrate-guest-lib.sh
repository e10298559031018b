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
    sleep 0.05
  done
  fail "$f did not grow by $by bytes in ${secs}s: the writer stopped"
}

# qemu_io_check TARGET CMD...: qemu-io -f raw -c CMD ... on TARGET (a file or an NBD URI);
# fails when qemu-io fails or any `read -P` finds other data.
qemu_io_check() {
  local target=$1 c args=()
  shift
  for c in "$@"; do args+=(-c "$c"); done
  qemu-io -f raw "${args[@]}" "$target" >"$T/qio-check.out" 2>&1 ||
    fail "qemu-io on $target: $(grep -m3 -iE 'fail|error' "$T/qio-check.out")"
  ! grep -qi 'verification failed' "$T/qio-check.out" ||
    fail "qemu-io on $target: $(grep -m3 -i 'verification failed' "$T/qio-check.out")"
}
