# Helpers for the peer link and host move tests (sourced after lib.sh): agents with their own
# state directory, datastore and log under $TMP, each started for real and stopped at exit.
#   make_ca DIR HOST [CADIR]          svmctl tls init
#   start_agent NAME [svmd args...]   svmd --name NAME --state $TMP/NAME/state
#                                     --datastore ds1=$TMP/NAME/ds1; waits for "ready"; sets
#                                     PID_<NAME>, and PORT_<NAME> when it listens on --mgmt
#   stop_agent NAME / kill_agent NAME
#   on NAME svmctl ARGS...            svmctl against that agent
#   wait_move NAME ID STATE [S]       until `status` says the move is in STATE
#   wait_log NAME REGEX [S]           until the agent's log matches
#   wait_received FILE BYTES [S]      until a destination file holds that much data
#   vm_json NAME VM                   svmctl vm show --json

export SVM_PROGRESS=0

make_ca() {
  if [ $# -ge 3 ]; then
    "$SVM_BIN/svmctl" tls init --dir "$1" --host "$2" --ca "$3" >/dev/null
  else
    "$SVM_BIN/svmctl" tls init --dir "$1" --host "$2" >/dev/null
  fi
}

start_agent() {
  local name=$1 i port
  shift
  mkdir -p "$TMP/$name/ds1"
  : >>"$TMP/$name.log"
  local before
  before=$(grep -c ': ready$' "$TMP/$name.log" || true)
  ${AGENT_PREFIX:-} "$SVM_BIN/svmd" --name "$name" --state "$TMP/$name/state" \
    --datastore "ds1=$TMP/$name/ds1" "$@" 2>>"$TMP/$name.log" &
  local pid=$!
  printf -v "PID_$name" %s "$pid"
  on_exit "kill $pid; wait $pid"
  for i in $(seq 1 200); do
    if [ "$(grep -c ': ready$' "$TMP/$name.log" || true)" -gt "$before" ]; then
      port=$( (grep -o 'peer link on [^ ]*' "$TMP/$name.log" || true) | tail -1 | sed 's/.*://')
      printf -v "PORT_$name" %s "$port"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { cat "$TMP/$name.log" >&2; fail "svmd $name exited at start"; }
    sleep 0.05
  done
  fail "svmd $name did not become ready"
}

stop_agent() {
  local v="PID_$1"
  kill -TERM "${!v}" 2>/dev/null || true
  wait "${!v}" 2>/dev/null || true
}

kill_agent() {
  local v="PID_$1"
  kill -9 "${!v}" 2>/dev/null || true
  wait "${!v}" 2>/dev/null || true
}

on() {
  local name=$1
  shift
  SVM_STATE="$TMP/$name/state" "$SVM_BIN/svmctl" "$@"
}

json_get() {
  python3 -c 'import json, sys; d = json.load(sys.stdin); r = eval(sys.argv[1]); print(r if not isinstance(r, (dict, list)) else json.dumps(r))' "$1"
}

move_field() {   # NAME ID FIELD
  on "$1" status --json | json_get "[m for m in d['host_moves'] if m['id'] == $2][0]['$3']"
}

wait_move() {    # NAME ID STATE [SECONDS]
  local i s
  for i in $(seq 1 $((${4:-60} * 10))); do
    s=$(move_field "$1" "$2" state)
    [ "$s" = "$3" ] && return 0
    case "$s" in done|failed|cancelled) fail "move $2 on $1 is $s, not $3: $(move_field "$1" "$2" error)";; esac
    sleep 0.1
  done
  fail "move $2 on $1 did not reach $3"
}

wait_copied() {  # NAME ID BYTES [SECONDS]: until the move has copied at least BYTES
  local i
  for i in $(seq 1 $((${4:-60} * 10))); do
    [ "$(move_field "$1" "$2" bytes_copied)" -ge "$3" ] && return 0
    sleep 0.1
  done
  fail "move $2 on $1 did not copy $3 bytes"
}

# Until FILE holds at least BYTES of data (allocated): what a destination has received. (The
# move's bytes_copied is the copy engine's progress, which may lag far behind the wire.)
wait_received() {  # FILE BYTES [SECONDS]
  local i
  for i in $(seq 1 $((${3:-60} * 20))); do
    [ -f "$1" ] && [ $(($(stat -c %b "$1") * 512)) -ge "$2" ] && return 0
    sleep 0.05
  done
  fail "$1 did not receive $2 bytes"
}

wait_log() {     # NAME REGEX [SECONDS]
  local i
  for i in $(seq 1 $((${3:-30} * 10))); do
    grep -Eq "$2" "$TMP/$1.log" && return 0
    sleep 0.1
  done
  cat "$TMP/$1.log" >&2
  fail "agent $1 never logged /$2/"
}

vm_json() {
  on "$1" vm show "$2" --json
}

# The datastore of NAME holds nothing at all (no VM folder, no staging folder).
ds_empty() {
  [ -z "$(ls -A "$TMP/$1/ds1")" ] || { ls -laR "$TMP/$1/ds1" >&2; fail "datastore of $1 is not empty"; }
}
