# shellcheck shell=bash
# tests/e2e/lib/towers.sh: towers are worker processes (`pgconductor worker start --config`).
#
#   setup_tower NAME --concurrency=N [--queue=Q]... [--stale-after=S] [--heartbeat=S]
#               [--grace=S] [--fetch-batch=N] [--flush-batch=N] [--env=K=V]...
#   setup_towers "NAME --opt..." ...   several setup_tower at once
#   start_tower NAME      start it again with the same config (after teardown or kill)
#   start_towers NAME...  several start_tower at once
#   teardown_tower NAME   SIGTERM; fails unless it exits with 0 within its grace period
#   teardown_towers NAME...  SIGTERM to all of them at once, then as teardown_tower
#   kill_tower NAME       SIGKILL (logged: the invariant checks excuse its re-runs)
#   tower_pid NAME        the pid of its current process
#
# Each tower lives in $E2E_WORK/towers/NAME: tower.json, log (every generation appended),
# pid (current process), exit ("CODE PID" once that process ended), wanted (present while
# the scenario wants it up: the chaos monkey restarts only those), env, lock (flock: the
# scenario and the chaos monkey never act on one tower at the same time).

[ -n "${_E2E_TOWERS_SH:-}" ] && return 0
_E2E_TOWERS_SH=1
# shellcheck source=tests/e2e/lib/db.sh
. "$(dirname "${BASH_SOURCE[0]}")/db.sh"

# Defaults: quick heartbeats so a killed tower's work comes back within seconds. In chaos
# mode stale_after stays well above a database restart (a tower must not lose its leases
# only because the server was away for a second: that would re-run work with no kill).
E2E_HEARTBEAT=${E2E_HEARTBEAT:-0.5}
if [ "$E2E_CHAOS" = 1 ]; then E2E_STALE_AFTER=${E2E_STALE_AFTER:-6}; else E2E_STALE_AFTER=${E2E_STALE_AFTER:-5}; fi
E2E_GRACE=${E2E_GRACE:-10}
E2E_TOWER_START_TIMEOUT=${E2E_TOWER_START_TIMEOUT:-45}

_tower_dir() { echo "$E2E_WORK/towers/$1"; }

# _close_extra_fds: in a background subshell: close every fd above 2, so that no lock held
# by the caller (flock on an inherited descriptor) lives on in the child.
_close_extra_fds() {
  local f n
  for f in "/proc/$BASHPID/fd"/*; do
    n=${f##*/}
    [ "$n" -gt 2 ] 2>/dev/null && eval "exec $n>&-" 2>/dev/null
  done
  return 0
}

# tower_pid NAME: pid of the tower's current process (empty when never started).
tower_pid() { cat "$(_tower_dir "$1")/pid" 2>/dev/null || true; }

# pid_alive PID: the process exists and is not a zombie.
pid_alive() {
  local state
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
  state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [ "$state" != Z ]
}

# _tower_exit_code NAME PID: the exit code of that process once its wrapper recorded it.
_tower_exit_code() {
  local f
  f=$(_tower_dir "$1")/exit
  [ -f "$f" ] && awk -v p="$2" '$2 == p { print $1 }' "$f"
}

# _with_tower_lock NAME CMD...: run CMD holding the tower's lock.
_with_tower_lock() {
  local dir fd rc=0
  dir=$(_tower_dir "$1")
  mkdir -p "$dir"
  exec {fd}>"$dir/lock"
  flock "$fd"
  "${@:2}" || rc=$?
  exec {fd}>&-
  return "$rc"
}

# _tower_launch NAME: start one process of the tower (lock held); wait until its orchestrator
# row appears in pgconductor.orchestrators. Returns 1 (with the reason on stderr) on failure.
_tower_launch() {
  local name=$1 dir pid deadline code env_args=()
  dir=$(_tower_dir "$name")
  pid=$(tower_pid "$name")
  if pid_alive "$pid"; then
    echo "tower $name is already running (pid $pid)" >&2
    return 1
  fi
  rm -f "$dir/pid"
  if [ -s "$dir/env" ]; then mapfile -t env_args < <(grep -v '^$' "$dir/env"); fi
  printf '=== %s: start of a new process\n' "$(date +%T.%3N)" >>"$dir/log"
  # The wrapper records the exit code of the tower process; output goes to the log only (no
  # inherited pipe may keep a caller's $(...) waiting) and it holds none of our locks.
  (
    set +e
    _close_extra_fds
    cd "$E2E_ROOT/apps" || exit 1
    env E2E_TOWER="$name" PYTHONUNBUFFERED=1 "${env_args[@]}" \
      "$E2E_PGCONDUCTOR" worker start --config "$dir/tower.json" >>"$dir/log" 2>&1 &
    child=$!
    echo "$child" >"$dir/pid.tmp" && mv "$dir/pid.tmp" "$dir/pid"
    wait "$child"
    echo "$? $child" >>"$dir/exit"
  ) </dev/null >>"$dir/log" 2>&1 &
  deadline=$(($(date +%s) + 10))
  until [ -s "$dir/pid" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "tower $name: no pid after 10s" >&2; return 1; }
    sleep 0.02
  done
  pid=$(cat "$dir/pid")
  deadline=$(($(date +%s) + E2E_TOWER_START_TIMEOUT))
  while :; do
    if [ "$(q "SELECT count(*) FROM pgconductor.orchestrators
               WHERE info->>'pid' = '$pid' AND stopped_at IS NULL AND expired_at IS NULL" 2>/dev/null)" = 1 ]; then
      break
    fi
    if ! pid_alive "$pid"; then
      sleep 0.2
      code=$(_tower_exit_code "$name" "$pid")
      echo "tower $name (pid $pid) exited with code ${code:-?} while starting; its log ends with:" >&2
      tail -n 15 "$dir/log" | sed 's/^/    /' >&2
      return 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "tower $name (pid $pid): no orchestrator row after ${E2E_TOWER_START_TIMEOUT}s; log:" >&2
      tail -n 15 "$dir/log" | sed 's/^/    /' >&2
      return 1
    fi
    sleep 0.05
  done
  touch "$dir/wanted"
  e2e_event start "$name" "$pid"
}

# setup_tower NAME --concurrency=N [--queue=Q]... [options]: write tower.json, start it, wait
# for its orchestrator row.
setup_tower() {
  local name=${1:?setup_tower NAME --concurrency=N [--queue=Q]...}
  shift
  local concurrency=5 queues=() stale=$E2E_STALE_AFTER beat=$E2E_HEARTBEAT grace=$E2E_GRACE
  local fetch="" flush="" envs=() arg dir
  for arg in "$@"; do
    case "$arg" in
      --concurrency=*) concurrency=${arg#*=} ;;
      --queue=*) queues+=("${arg#*=}") ;;
      --stale-after=*) stale=$(e2e_seconds "${arg#*=}") ;;
      --heartbeat=*) beat=$(e2e_seconds "${arg#*=}") ;;
      --grace=*) grace=$(e2e_seconds "${arg#*=}") ;;
      --fetch-batch=*) fetch=${arg#*=} ;;
      --flush-batch=*) flush=${arg#*=} ;;
      --env=*) envs+=("${arg#*=}") ;;
      *) e2e_fail "setup_tower: unknown option $arg" ;;
    esac
  done
  [ ${#queues[@]} -gt 0 ] || queues=(default)
  dir=$(_tower_dir "$name")
  [ -e "$dir/wanted" ] && e2e_fail "setup_tower: tower $name is already up"
  mkdir -p "$dir"
  {
    printf '{\n  "app": "tower_app:conductor",\n  "queues": ['
    local i
    for i in "${!queues[@]}"; do
      [ "$i" -gt 0 ] && printf ', '
      printf '"%s"' "${queues[$i]}"
    done
    printf '],\n  "concurrency": %s,\n' "$concurrency"
    [ -n "$fetch" ] && printf '  "fetch_batch": %s,\n' "$fetch"
    [ -n "$flush" ] && printf '  "flush_batch": %s,\n' "$flush"
    printf '  "heartbeat_interval": %s,\n  "stale_after": %s,\n  "grace_period": %s\n}\n' \
      "$beat" "$stale" "$grace"
  } >"$dir/tower.json"
  : >"$dir/env"
  [ ${#envs[@]} -eq 0 ] || printf '%s\n' "${envs[@]}" >"$dir/env"
  echo "$grace" >"$dir/grace"
  start_tower "$name"
}

# start_tower NAME: start the tower (configured by setup_tower) again.
start_tower() {
  local name=$1 err
  [ -f "$(_tower_dir "$name")/tower.json" ] || e2e_fail "start_tower: no tower $name (setup_tower first)"
  err=$(_with_tower_lock "$name" db_lock_shared_fn _tower_launch "$name" 2>&1) || e2e_fail "$err"
  e2e_log "tower $name up (pid $(tower_pid "$name"))"
}

# setup_towers "NAME --concurrency=N ..." ...: setup_tower for each argument (split into
# words), all at once; fails the scenario when one does not come up.
setup_towers() {
  local spec pids=() pid bad=0
  for spec in "$@"; do
    # shellcheck disable=SC2086 # each spec is "NAME --option=value ..."
    (setup_tower $spec) &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || bad=1; done
  [ "$bad" = 0 ] || e2e_fail "a tower did not come up"
}

# start_towers NAME...: start_tower for each, all at once.
start_towers() {
  local name pids=() pid bad=0
  for name in "$@"; do
    (start_tower "$name") &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || bad=1; done
  [ "$bad" = 0 ] || e2e_fail "a tower did not come up"
}

# db_lock_shared_fn FN ARGS...: like db_lock_shared, for a shell function.
db_lock_shared_fn() {
  local fd rc=0
  exec {fd}>>"$E2E_WORK/dblock"
  flock -s "$fd"
  "$@" || rc=$?
  exec {fd}>&-
  return "$rc"
}

# _tower_stop NAME SIGNAL TIMEOUT [EVENT]: log EVENT (default: kill for KILL, else stop),
# send SIGNAL, wait until the process is gone (lock held). Prints the exit code ("none" when
# it was not running); returns 1 when it did not exit within TIMEOUT seconds.
_tower_stop() {
  local name=$1 sig=$2 timeout=$3 event=${4:-} dir pid deadline code
  dir=$(_tower_dir "$name")
  rm -f "$dir/wanted"
  pid=$(tower_pid "$name")
  pid_alive "$pid" || { echo none; return 0; }
  if [ -z "$event" ]; then
    if [ "$sig" = KILL ]; then event="kill"; else event="stop"; fi
  fi
  e2e_event "$event" "$name" "$pid"
  kill -s "$sig" "$pid" 2>/dev/null || true
  deadline=$(awk -v n="$(date +%s.%N)" -v t="$timeout" 'BEGIN { printf "%.3f", n + t }')
  while pid_alive "$pid"; do
    e2e_lt "$(date +%s.%N)" "$deadline" || { echo timeout; return 1; }
    sleep 0.05
  done
  # The wrapper writes the code right after the process ends.
  for _ in $(seq 100); do
    code=$(_tower_exit_code "$name" "$pid")
    [ -n "$code" ] && break
    sleep 0.02
  done
  echo "${code:-unknown}"
}

# _tower_term NAME TIMEOUT (lock held): SIGTERM the tower's current process and wait; prints
# "PID CODE", CODE = its exit code, "timeout", or "none" (it was not running: a death on its
# own is recorded as a failure).
_tower_term() {
  local name=$1 timeout=$2 pid code
  pid=$(tower_pid "$name")
  if ! pid_alive "$pid"; then
    _tower_check_alive "$name"
    rm -f "$(_tower_dir "$name")/wanted"
    echo "${pid:--} none"
    return 0
  fi
  code=$(_tower_stop "$name" TERM "$timeout") || code=timeout
  echo "$pid $code"
}

# teardown_tower NAME [--grace=S]: SIGTERM; the tower must exit 0 within its grace period
# (plus 10 s for releasing and closing); otherwise the scenario fails (and it is killed).
teardown_tower() {
  local name=$1 grace out pid code
  grace=$(cat "$(_tower_dir "$name")/grace" 2>/dev/null || echo "$E2E_GRACE")
  [ "${2:-}" ] && grace=$(e2e_seconds "${2#--grace=}")
  out=$(_with_tower_lock "$name" _tower_term "$name" "$(awk -v g="$grace" 'BEGIN { print g + 10 }')")
  pid=${out%% *} code=${out#* }
  case "$code" in
    none) ;;
    0) e2e_log "tower $name stopped (SIGTERM, exit 0)" ;;
    timeout)
      e2e_check_fail "tower $name (pid $pid) did not exit within ${grace}s + 10s of SIGTERM: killed"
      _with_tower_lock "$name" _tower_force_kill "$name" ;;
    *)
      e2e_check_fail "tower $name (pid $pid) exited with code $code after SIGTERM (expected 0); log tail:
$(tail -n 12 "$(_tower_dir "$name")/log" | sed 's/^/    /')" ;;
  esac
}

# _tower_force_kill NAME: SIGKILL a tower that would not stop (logged as cleanup-kill: such
# a kill does not excuse re-runs in the invariant checks).
_tower_force_kill() {
  local pid
  pid=$(tower_pid "$1")
  pid_alive "$pid" || return 0
  e2e_event cleanup-kill "$1" "$pid"
  kill -s KILL "$pid" 2>/dev/null || true
  while pid_alive "$pid"; do sleep 0.05; done
}

# kill_tower NAME: SIGKILL the tower (no cleanup of any kind happens in it).
kill_tower() {
  local name=$1 code
  code=$(_with_tower_lock "$name" _tower_stop "$name" KILL 10) ||
    e2e_fail "tower $name (pid $(tower_pid "$name")) survived SIGKILL for 10s"
  e2e_log "tower $name killed (SIGKILL, pid $(tower_pid "$name"), exit $code)"
}

# _tower_check_alive NAME: record a failure when the tower's process ended although nobody
# stopped or killed it (a crash of the worker itself).
_tower_check_alive() {
  local name=$1 pid code dir
  dir=$(_tower_dir "$name")
  [ -e "$dir/wanted" ] || return 0
  pid=$(tower_pid "$name")
  [ -n "$pid" ] && ! pid_alive "$pid" || return 0
  # A kill or stop by the chaos monkey or the scenario is logged before the signal.
  awk -v p="$pid" '$4 == p && ($2 == "kill" || $2 == "stop" || $2 == "cleanup-kill") { f = 1 } END { exit !f }' \
    "$E2E_WORK/events" && return 0
  [ -e "$dir/crashed.$pid" ] && return 1
  touch "$dir/crashed.$pid"
  sleep 0.2
  code=$(_tower_exit_code "$name" "$pid")
  e2e_check_fail "tower $name (pid $pid) died on its own (exit code ${code:-?}); log tail:
$(tail -n 15 "$dir/log" | sed 's/^/    /')"
  return 1
}

# check_towers_alive: _tower_check_alive for every tower; false when one died on its own.
check_towers_alive() {
  local dir ok=0
  for dir in "$E2E_WORK"/towers/*/; do
    [ -d "$dir" ] || continue
    _tower_check_alive "$(basename "$dir")" || ok=1
  done
  return "$ok"
}

# teardown_towers NAME...: teardown_tower for all of them at the same time (SIGTERM reaches
# every tower at once, e.g. a mid-wave drain of the whole fleet).
teardown_towers() {
  local name pids=()
  for name in "$@"; do
    teardown_tower "$name" &
    pids+=($!)
  done
  [ ${#pids[@]} -eq 0 ] || wait "${pids[@]}"
  return 0
}

# teardown_all_towers: teardown_towers for every tower that is wanted up.
teardown_all_towers() {
  local dir names=()
  for dir in "$E2E_WORK"/towers/*/; do
    [ -e "$dir/wanted" ] && names+=("$(basename "$dir")")
  done
  teardown_towers "${names[@]}"
}

# stop_all_towers: at exit: stop whatever still runs (SIGTERM, then SIGKILL after 15 s).
stop_all_towers() {
  local dir name pid
  for dir in "$E2E_WORK"/towers/*/; do
    [ -d "$dir" ] || continue
    name=$(basename "$dir")
    pid=$(tower_pid "$name")
    rm -f "$dir/wanted"
    pid_alive "$pid" || continue
    e2e_log "tower $name still running at exit: stopping it"
    if [ "$(_with_tower_lock "$name" _tower_stop "$name" TERM 15)" = timeout ]; then
      _with_tower_lock "$name" _tower_force_kill "$name"
    fi
  done
  _stop_orphans
}

# _stop_orphans: a tower process of this scenario (its command line names a tower.json in
# $E2E_WORK) that no tower's pid file knows any more is a bug of the harness: record it and
# stop it (by its pid).
_stop_orphans() {
  local f pid
  for f in /proc/[0-9]*/cmdline; do
    pid=${f#/proc/}
    pid=${pid%/cmdline}
    [ "$pid" = "$$" ] && continue
    tr '\0' ' ' <"$f" 2>/dev/null | grep -qF -- "--config $E2E_WORK/towers/" || continue
    e2e_check_fail "orphan tower process $pid ($(tr '\0' ' ' <"$f" 2>/dev/null)): stopped"
    kill -s TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do pid_alive "$pid" || break; sleep 0.1; done
    pid_alive "$pid" && kill -s KILL "$pid" 2>/dev/null
  done
  return 0
}

# tower_log_tails [N]: the last N lines of every tower's log (for failure reports).
tower_log_tails() {
  local dir
  for dir in "$E2E_WORK"/towers/*/; do
    [ -f "$dir/log" ] || continue
    echo "--- tower $(basename "$dir") (log $dir/log):"
    tail -n "${1:-10}" "$dir/log" | sed 's/^/    /'
  done
}
