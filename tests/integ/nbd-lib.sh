# Helpers for the NBD integration tests (sourced). Each test gets its own temporary
# directory, starts its own svm-nbd-serve on a unix socket there, and kills only what it
# started.
set -euo pipefail

: "${SVM_BIN:?SVM_BIN must point at build/bin}"
# Debian's nbdsh runs "python3 -m nbd": make sure that is the system python with the nbd module.
export PATH=/usr/bin:/bin:$PATH

NBD_TMP=$(mktemp -d "${TMPDIR:-/tmp}/svm-nbd-test.XXXXXX")
NBD_PIDS=()
cd "$NBD_TMP"        # fio leaves its verify state files in the current directory

nbd_cleanup()
{
  local p
  for p in "${NBD_PIDS[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${NBD_PIDS[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  [ -n "${NBD_KEEP:-}" ] && echo "kept $NBD_TMP" >&2 || rm -rf "$NBD_TMP"
}
trap nbd_cleanup EXIT

# requires PROG...: skip (77) when a peer program is absent
requires()
{
  local p
  for p in "$@"; do
    if ! command -v "$p" >/dev/null 2>&1; then
      echo "SKIP: $p not installed" >&2
      exit 77
    fi
  done
}

fail()
{
  echo "FAIL: $*" >&2
  if [ -f "$NBD_TMP/serve.log" ]; then
    echo "--- server log:" >&2
    tail -n 30 "$NBD_TMP/serve.log" >&2
  fi
  exit 1
}

# start_serve FILE [svm-nbd-serve options...]: serve FILE on $NBD_TMP/nbd.sock as "disk";
# sets NBD_URI, NBD_SOCK and SERVE_PID; the log goes to $NBD_TMP/serve.log.
start_serve()
{
  local file=$1
  shift
  NBD_SOCK=$NBD_TMP/nbd.sock
  NBD_URI="nbd+unix:///disk?socket=$NBD_SOCK"
  rm -f "$NBD_TMP/serve.uri"      # a previous server's: it must not count as "listening"
  "$SVM_BIN/svm-nbd-serve" --socket "$NBD_SOCK" --name disk "$@" "$file" \
    >"$NBD_TMP/serve.uri" 2>"$NBD_TMP/serve.log" &
  SERVE_PID=$!
  NBD_PIDS+=("$SERVE_PID")
  local i
  for i in $(seq 1 200); do
    [ -s "$NBD_TMP/serve.uri" ] && return 0
    kill -0 "$SERVE_PID" 2>/dev/null || fail "svm-nbd-serve exited at start"
    sleep 0.05
  done
  fail "svm-nbd-serve did not start listening"
}

# stop_serve: SIGTERM and wait; fails if the server did not exit with 0
stop_serve()
{
  kill -TERM "$SERVE_PID"
  local rc=0
  wait "$SERVE_PID" || rc=$?
  [ "$rc" -eq 0 ] || fail "svm-nbd-serve exited with $rc"
}

# make_random_file PATH MIB [SEED]: reproducible random contents
make_random_file()
{
  python3 -c 'import random, sys
random.seed(int(sys.argv[3]))
open(sys.argv[1], "wb").write(random.randbytes(int(sys.argv[2]) << 20))' "$1" "$2" "${3:-1}"
}
