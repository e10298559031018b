# Shared helpers for integration tests (bash). Source it first thing:
#     . "$(dirname "$0")/lib.sh"
# It sets -euo pipefail, makes a private temp dir $TMP (removed on exit), and offers:
#   require PROG...              exit 77 (skipped) unless every program is installed
#   require_root                 exit 77 unless running as root
#   on_exit 'COMMAND'            run COMMAND at exit (last registered runs first)
#   fail MESSAGE                 print "FAIL: MESSAGE" and exit 1
#   ok MESSAGE                   print "ok: MESSAGE"
#   expect_exit CODE PATTERN CMD...   run CMD, want exit CODE and PATTERN (grep -E) in its stderr;
#                                its stderr is left in $TMP/stderr
#   start_qemu_nbd VAR ARGS...   start qemu-nbd ARGS on a new unix socket, wait until it serves;
#                                VAR gets the nbd+unix URI; stopped at exit
#   stop_pid PID                 kill a process this test started and wait for it
#   wait_for_socket PATH [SECONDS]
#   checksum FILE                sha256 of a file's contents
#   allocated FILE               bytes allocated on disk (stat %b * 512)
#   unwritten_extents FILE       number of unwritten extents (filefrag -v)
# Programs under test are in $SVM_BIN, the source tree is $SVM_SRC (both set by ctest).
set -euo pipefail

SVM_SRC=${SVM_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
SVM_BIN=${SVM_BIN:-$SVM_SRC/build/bin}
export SVM_SRC SVM_BIN

_svm_exit_cmds=()
on_exit() { _svm_exit_cmds=("$1" "${_svm_exit_cmds[@]}"); }
_svm_run_exit() {
  local rc=$? c
  for c in "${_svm_exit_cmds[@]}"; do eval "$c" >/dev/null 2>&1 || true; done
  exit $rc
}
trap _svm_run_exit EXIT
trap 'exit 130' INT TERM

TMP=$(mktemp -d "${TMPDIR:-/tmp}/svm-$(basename "$0" .sh)-XXXXXX")
on_exit "rm -rf '$TMP'"

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

require() {
  local p
  for p in "$@"; do
    command -v "$p" >/dev/null 2>&1 || { echo "SKIP: $p is not installed" >&2; exit 77; }
  done
}
require_root() { [ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root" >&2; exit 77; }; }

expect_exit() {
  local want=$1 pattern=$2 rc=0
  shift 2
  "$@" >"$TMP/stdout" 2>"$TMP/stderr" || rc=$?
  [ "$rc" -eq "$want" ] || { cat "$TMP/stderr" >&2; fail "$*: exit $rc, wanted $want"; }
  grep -Eq -- "$pattern" "$TMP/stderr" ||
    { cat "$TMP/stderr" >&2; fail "$*: stderr does not match /$pattern/"; }
}

wait_for_socket() {
  local path=$1 secs=${2:-20} i
  for ((i = 0; i < secs * 20; i++)); do
    [ -S "$path" ] && return 0
    sleep 0.05
  done
  fail "socket $path did not appear within ${secs}s"
}

stop_pid() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

_svm_nbd_n=0
start_qemu_nbd() {
  local var=$1 sock pid
  shift
  require qemu-nbd
  _svm_nbd_n=$((_svm_nbd_n + 1))
  sock=$TMP/qemu-nbd-$_svm_nbd_n.sock
  qemu-nbd --socket="$sock" --persistent "$@" &
  pid=$!
  on_exit "stop_pid $pid"
  wait_for_socket "$sock"
  printf -v "$var" 'nbd+unix:///?socket=%s' "$sock"
}

checksum() { sha256sum "$1" | cut -d' ' -f1; }
allocated() { echo $(($(stat -c %b "$1") * 512)); }
unwritten_extents() { filefrag -v "$1" | grep -c unwritten || true; }
