# shellcheck shell=bash
# tests/e2e/lib/waves.sh: waves are batches of executions sent through the CLI.
#
#   send_wave TASK --count=N [--payload=JSON] [--priority=P] [--delay=S] [--queue=Q]
#             [--database-url=URL]   (the CLI's, e.g. a pooler's; default DATABASE_URL)
#   last_execution_id            the id printed by the last send_wave --count=1
#   wait_for_wave_completion [--timeout=30s] [--task=T]
#                                until no live (pending or running) execution is left
#   wait_for SQL [--timeout=10s] [--what=TEXT]
#                                until SQL returns t (a scenario's own condition)
#   status_dump                  queue depths, live executions, orchestrators, tower logs
#   expect_outcome TASK STATE    executions of TASK are meant to end STATE (default completed)
#   expect_execution ID STATE    the same for one execution

[ -n "${_E2E_WAVES_SH:-}" ] && return 0
_E2E_WAVES_SH=1
# shellcheck source=tests/e2e/lib/db.sh
. "$(dirname "${BASH_SOURCE[0]}")/db.sh"
# shellcheck source=tests/e2e/lib/towers.sh
. "$(dirname "${BASH_SOURCE[0]}")/towers.sh"
# shellcheck source=tests/e2e/lib/chaos.sh
. "$(dirname "${BASH_SOURCE[0]}")/chaos.sh"

# send_wave TASK --count=N [...]: `pgconductor invoke` (under the shared database lock, so a
# chaos restart never cuts an invoke in half and the count of invoked executions is exact).
send_wave() {
  local task=${1:?send_wave TASK --count=N [--payload=JSON] ...}
  shift
  local count=1 queue="" args=() arg out rc=0
  for arg in "$@"; do
    case "$arg" in
      --count=*) count=${arg#*=} ;;
      --payload=*) args+=(--payload "${arg#*=}") ;;
      --priority=*) args+=(--priority "${arg#*=}") ;;
      --delay=*) args+=(--delay "$(e2e_seconds "${arg#*=}")") ;;
      --queue=*) queue=${arg#*=}; args+=(--queue "$queue") ;;
      --database-url=*) args+=(--database-url "${arg#*=}") ;;
      *) e2e_fail "send_wave: unknown option $arg" ;;
    esac
  done
  [[ $count =~ ^[1-9][0-9]*$ ]] || e2e_fail "send_wave: --count must be a positive integer"
  chaos_start
  out=$(db_lock_shared "$E2E_PGCONDUCTOR" invoke "$task" --count "$count" "${args[@]}" 2>&1) || rc=$?
  [ "$rc" = 0 ] || e2e_fail "pgconductor invoke $task --count $count ${args[*]} failed (exit $rc): $out"
  echo "$task $count ${queue:--}" >>"$E2E_WORK/waves"
  [ -f "$E2E_WORK/wave-started" ] || e2e_now >"$E2E_WORK/wave-started"
  if [ "$count" = 1 ]; then
    printf '%s\n' "$out" | tail -n 1 >"$E2E_WORK/last_id"
  fi
  e2e_log "wave: $count x $task ${args[*]}"
}

# last_execution_id: the id of the execution made by the last send_wave --count=1.
last_execution_id() { cat "$E2E_WORK/last_id"; }

# invoked_count [TASK]: how many executions the waves invoked (of TASK, or all).
invoked_count() { awk -v t="${1:-}" 't == "" || $1 == t { n += $2 } END { print n + 0 }' "$E2E_WORK/waves"; }

# expect_outcome TASK STATE / expect_execution ID STATE: the state the scenario intends.
expect_outcome() { echo "task $1 $2" >>"$E2E_WORK/expect"; }
expect_execution() { echo "execution $1 $2" >>"$E2E_WORK/expect"; }

# status_dump: everything useful when a wait times out.
status_dump() {
  echo "--- pgconductor status:"
  "$E2E_PGCONDUCTOR" status 2>&1 | sed 's/^/    /'
  echo "--- live executions (first 15):"
  q "SELECT id, task_key, queue, attempts, coalesce(locked_by::text, '-'), run_at, left(coalesce(last_error, ''), 120)
       FROM pgconductor.executions ORDER BY run_at LIMIT 15" 2>&1 | sed 's/^/    /'
  echo "--- orchestrators:"
  q "SELECT id, info->>'pid', last_heartbeat_at, expired_at, stopped_at FROM pgconductor.orchestrators
      ORDER BY started_at" 2>&1 | sed 's/^/    /'
  echo "--- events:"
  sed 's/^/    /' "$E2E_WORK/events"
  tower_log_tails 12
}

# wait_for_wave_completion [--timeout=30s] [--task=T]: poll until no live execution (of T)
# is left; fails with a status dump on timeout, and at once when a tower died on its own.
# In chaos mode the timeout is doubled plus 60 s (killed work waits for stale_after), and
# the chaos monkey is paused once the wave is done.
wait_for_wave_completion() {
  local timeout=30 task="" arg where="" started deadline live
  for arg in "$@"; do
    case "$arg" in
      --timeout=*) timeout=$(e2e_seconds "${arg#*=}") ;;
      --task=*) task=${arg#*=}; where="WHERE task_key = '$task'" ;;
      *) e2e_fail "wait_for_wave_completion: unknown option $arg" ;;
    esac
  done
  [ "$E2E_CHAOS" = 1 ] && timeout=$(awk -v t="$timeout" 'BEGIN { print t * 2 + 60 }')
  started=$(e2e_now)
  deadline=$(awk -v n="$started" -v t="$timeout" 'BEGIN { printf "%.3f", n + t }')
  while :; do
    live=$(q "SELECT count(*) FROM pgconductor.executions $where") || e2e_fail "cannot query the database"
    [ "$live" = 0 ] && break
    check_towers_alive || e2e_fail "a tower died on its own during the wave"
    if ! e2e_lt "$(e2e_now)" "$deadline"; then
      status_dump >&2
      e2e_fail "wave${task:+ of $task} not done after ${timeout}s: $live execution(s) still live"
    fi
    sleep 0.2
  done
  e2e_log "wave${task:+ of $task} complete after $(e2e_elapsed_since "$started")s"
  chaos_pause
}

# wait_for SQL [--timeout=10s] [--what=TEXT]: poll until SQL returns t.
wait_for() {
  local sql=$1 timeout=10 what="" arg deadline
  shift
  for arg in "$@"; do
    case "$arg" in
      --timeout=*) timeout=$(e2e_seconds "${arg#*=}") ;;
      --what=*) what=${arg#*=} ;;
      *) e2e_fail "wait_for: unknown option $arg" ;;
    esac
  done
  [ "$E2E_CHAOS" = 1 ] && timeout=$(awk -v t="$timeout" 'BEGIN { print t * 2 + 60 }')
  deadline=$(awk -v n="$(e2e_now)" -v t="$timeout" 'BEGIN { printf "%.3f", n + t }')
  until [ "$(q "$sql")" = t ]; do
    check_towers_alive || e2e_fail "a tower died on its own while waiting for ${what:-$sql}"
    if ! e2e_lt "$(e2e_now)" "$deadline"; then
      status_dump >&2
      e2e_fail "timed out after ${timeout}s waiting for ${what:-$sql}"
    fi
    sleep 0.1
  done
}
