# Helpers for the agent's integration tests (sourced). Each test gets its own temp dir with a
# state dir and two datastores, and a trap that stops the svmd it started.
set -euo pipefail

: "${SVM_BIN:?SVM_BIN must point to the built programs (build/bin)}"

requires() {
  for p in "$@"; do
    command -v "$p" >/dev/null || { echo "SKIP: $p is not installed"; exit 77; }
  done
}
requires python3

T=$(mktemp -d "${TMPDIR:-/tmp}/svm-agent-test.XXXXXX")
SVMD_PID=
export SVM_STATE=$T/state
mkdir -p "$T/ds1" "$T/ds2"
LOG=$T/svmd.log
: >"$LOG"

cleanup() {
  local rc=$?
  if [ -n "$SVMD_PID" ] && kill -0 "$SVMD_PID" 2>/dev/null; then
    kill "$SVMD_PID" 2>/dev/null || true
    wait "$SVMD_PID" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
    echo "---- svmd log ----" >&2
    cat "$LOG" >&2 || true
  fi
  rm -rf "$T"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

svmctl() { "$SVM_BIN/svmctl" "$@"; }

# start_svmd [extra svmd args]: returns when the agent answers on its control socket
start_svmd() {
  local ready_before
  ready_before=$(grep -c ': ready$' "$LOG" || true)
  "$SVM_BIN/svmd" --name testhost --state "$SVM_STATE" --datastore "ds1=$T/ds1" \
    --datastore "ds2=$T/ds2" "$@" 2>>"$LOG" &
  SVMD_PID=$!
  for _ in $(seq 1 200); do
    if [ "$(grep -c ': ready$' "$LOG" || true)" -gt "$ready_before" ]; then
      return 0
    fi
    kill -0 "$SVMD_PID" 2>/dev/null || fail "svmd exited at start"
    sleep 0.05
  done
  fail "svmd did not become ready"
}

stop_svmd() {
  kill -TERM "$SVMD_PID"
  wait "$SVMD_PID" || fail "svmd exited with $? on SIGTERM"
  SVMD_PID=
}

crash_svmd() {
  kill -9 "$SVMD_PID"
  wait "$SVMD_PID" 2>/dev/null || true
  SVMD_PID=
}

# jq-like: json_get EXPR < json   (EXPR in python, the document is `d`)
json_get() {
  python3 -c 'import json, sys; d = json.load(sys.stdin); r = eval(sys.argv[1]); print(r if not isinstance(r, (dict, list)) else json.dumps(r))' "$1"
}

# expect_fail CODE TEXT CMD...: CMD must exit with CODE and say TEXT on stderr. TEXT is what the
# user must read (the VM, disk or file, the reason, the fix): an empty TEXT would match any
# message, so it is refused. expect_err TEXT checks more of the same stderr.
expect_fail() {
  local code=$1 text=$2 rc=0
  [ -n "$text" ] || fail "expect_fail $code '' $3...: name the text the user must see"
  shift 2
  "$@" >"$T/out" 2>"$T/err" || rc=$?
  [ "$rc" -eq "$code" ] || fail "'$*' exited $rc, expected $code; stderr: $(cat "$T/err")"
  grep -qF -- "$text" "$T/err" || fail "'$*': stderr lacks '$text': $(cat "$T/err")"
  [ ! -s "$T/out" ] || fail "'$*' printed on stdout on failure: $(cat "$T/out")"
}

expect_err() {
  [ -n "$1" ] || fail "expect_err '': name the text the user must see"
  grep -qF -- "$1" "$T/err" || fail "stderr lacks '$1': $(cat "$T/err")"
}

uri() { echo "nbd+unix:///$1/disk$2?socket=$SVM_STATE/nbd/$1-disk$2.sock"; }

# expected_extents GRAN OFF:LEN ...: the block-rounded, merged extents as JSON
expected_extents() {
  python3 - "$@" <<'EOF'
import json, sys
g = int(sys.argv[1]); ex = []
for w in sys.argv[2:]:
    o, l = map(int, w.split(':'))
    s = o // g * g; e = (o + l + g - 1) // g * g
    ex.append([s, e])
ex.sort(); out = []
for s, e in ex:
    if out and s <= out[-1][1]:
        out[-1][1] = max(out[-1][1], e)
    else:
        out.append([s, e])
print(json.dumps([{"offset": s, "length": e - s} for s, e in out]))
EOF
}

# check_query VM DISK SINCE OFF:LEN ...: cbt query reports exactly these writes (rounded)
check_query() {
  local vm=$1 disk=$2 since=$3 got want gran
  shift 3
  svmctl cbt query "$vm" "$disk" --since "$since" --json >"$T/q.json"
  gran=$(json_get 'd["granularity"]' <"$T/q.json")
  got=$(json_get 'd["extents"]' <"$T/q.json")
  want=$(expected_extents "$gran" "$@")
  [ "$got" = "$want" ] || fail "cbt query $vm $disk --since $since: got $got, want $want"
}
