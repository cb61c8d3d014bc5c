# shellcheck shell=bash
# tests/e2e/lib/chaos.sh: the chaos monkey of --chaos (E2E_CHAOS=1).
#
#   chaos_start   start the monkey (send_wave calls it; a no-op without --chaos or while held)
#   chaos_pause   stop it after its current action (wait_for_wave_completion calls it)
#   chaos_hold    keep it from starting until chaos_release (e.g. while a frozen fake clock
#                 makes stale recovery impossible); chaos_release undoes it
#   chaos_stop    chaos_pause, at exit
#
# While it runs, every E2E_CHAOS_MIN..E2E_CHAOS_MAX seconds (default 0.5..2.5) it does one of:
#  - kill (about 55 %): SIGKILL a random tower that the scenario wants up and start it again
#    at once (logged as "kill": its lost attempts may legitimately re-run);
#  - db-restart (about 20 %, private cluster only, at most every E2E_CHAOS_DB_GAP s, default
#    4): `scripts/cluster.sh restart-immediate`;
#  - cut (the rest): pg_terminate_backend() on every session of the scenario's database (the
#    towers' pools, LISTEN and ledger connections): connections lost mid-query.
# Its log: $E2E_WORK/chaos.log.

[ -n "${_E2E_CHAOS_SH:-}" ] && return 0
_E2E_CHAOS_SH=1
# shellcheck source=tests/e2e/lib/db.sh
. "$(dirname "${BASH_SOURCE[0]}")/db.sh"
# shellcheck source=tests/e2e/lib/towers.sh
. "$(dirname "${BASH_SOURCE[0]}")/towers.sh"

E2E_CHAOS_MIN=${E2E_CHAOS_MIN:-0.5}
E2E_CHAOS_MAX=${E2E_CHAOS_MAX:-2.5}
E2E_CHAOS_DB_GAP=${E2E_CHAOS_DB_GAP:-4}

# _chaos_sleep SECONDS: sleep in small steps; false as soon as a stop is requested.
_chaos_sleep() {
  local end
  end=$(awk -v n="$(e2e_now)" -v s="$1" 'BEGIN { printf "%.3f", n + s }')
  while e2e_lt "$(e2e_now)" "$end"; do
    [ -e "$E2E_WORK/chaos.stop" ] && return 1
    sleep 0.05
  done
  [ ! -e "$E2E_WORK/chaos.stop" ]
}

# _chaos_kill_and_restart NAME: with the tower's lock: if it is still wanted up, SIGKILL it
# and start a new process of it.
_chaos_kill_and_restart() {
  local name=$1 dir code
  dir=$(_tower_dir "$name")
  [ -e "$dir/wanted" ] || return 0
  pid_alive "$(tower_pid "$name")" || return 0
  code=$(_tower_stop "$name" KILL 10) || { echo "tower $name survived SIGKILL"; return 1; }
  echo "$(date +%T.%3N) killed tower $name (exit $code); starting it again"
  db_lock_shared_fn _tower_launch "$name" || {
    echo "$(date +%T.%3N) tower $name did not come back"
    e2e_check_fail "chaos: tower $name did not start again after its kill"
    return 1
  }
  echo "$(date +%T.%3N) tower $name back (pid $(tower_pid "$name"))"
}

# _chaos_loop: the monkey itself (a background process).
_chaos_loop() {
  local wanted=() dir r name last_db=0 out
  _chaos_sleep "$(awk -v s="$RANDOM" 'BEGIN { srand(s); printf "%.2f", 0.3 + rand() * 0.7 }')" || return 0
  while :; do
    wanted=()
    for dir in "$E2E_WORK"/towers/*/; do
      [ -e "$dir/wanted" ] && wanted+=("$(basename "$dir")")
    done
    r=$((RANDOM % 100))
    if [ "$r" -ge 75 ]; then
      if out=$(q "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                   WHERE datname = current_database() AND pid <> pg_backend_pid()" 2>&1); then
        e2e_event cut
        echo "$(date +%T.%3N) cut $out connection(s)"
      else
        echo "$(date +%T.%3N) could not cut connections: $out"
      fi
    elif [ "${E2E_PRIVATE:-0}" = 1 ] && { [ "$r" -lt 20 ] || [ ${#wanted[@]} = 0 ]; } &&
      [ $(($(date +%s) - last_db)) -ge "$E2E_CHAOS_DB_GAP" ]; then
      if out=$(flock -o -x "$E2E_WORK/dblock" env PGPORT="$E2E_PGPORT" \
        bash "$E2E_REPO/scripts/cluster.sh" restart-immediate 2>&1); then
        e2e_event db-restart
        echo "$(date +%T.%3N) database restarted"
      else
        echo "$(date +%T.%3N) database restart failed: $out"
        e2e_check_fail "chaos: database restart failed: $out"
      fi
      last_db=$(date +%s)
    elif [ ${#wanted[@]} -gt 0 ]; then
      name=${wanted[$((RANDOM % ${#wanted[@]}))]}
      _with_tower_lock "$name" _chaos_kill_and_restart "$name"
    fi
    _chaos_sleep "$(awk -v s="$RANDOM" -v a="$E2E_CHAOS_MIN" -v b="$E2E_CHAOS_MAX" \
      'BEGIN { srand(s); printf "%.2f", a + rand() * (b - a) }')" || return 0
  done
}

# chaos_start: start the monkey when --chaos is on, it is not held and not running.
chaos_start() {
  [ "$E2E_CHAOS" = 1 ] || return 0
  [ -e "$E2E_WORK/chaos.hold" ] && return 0
  pid_alive "$(cat "$E2E_WORK/chaos.pid" 2>/dev/null)" && return 0
  rm -f "$E2E_WORK/chaos.stop"
  (
    _close_extra_fds
    trap - EXIT
    _chaos_loop
  ) </dev/null >>"$E2E_WORK/chaos.log" 2>&1 &
  echo $! >"$E2E_WORK/chaos.pid"
  e2e_log "chaos monkey started (pid $!)"
}

# chaos_pause: ask the monkey to stop and wait until it finished its current action.
chaos_pause() {
  local pid
  pid=$(cat "$E2E_WORK/chaos.pid" 2>/dev/null) || return 0
  pid_alive "$pid" || return 0
  touch "$E2E_WORK/chaos.stop"
  while pid_alive "$pid"; do sleep 0.05; done
  wait "$pid" 2>/dev/null || true
  e2e_log "chaos monkey paused ($(e2e_count_events kill) kills, $(e2e_count_events db-restart) database restarts, $(e2e_count_events cut) connection cuts so far)"
}

chaos_hold() { touch "$E2E_WORK/chaos.hold"; chaos_pause; }
chaos_release() { rm -f "$E2E_WORK/chaos.hold"; }
chaos_stop() { chaos_pause; }
