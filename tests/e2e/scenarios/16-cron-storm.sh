#!/usr/bin/env bash
# 16-cron-storm: 300 schedules of `hello` every second (6-field cron `* * * * * *`, missed =
# skip) for about 24 s, ticked by two "orchestrators" (psql loops of `SELECT
# pgconductor.tick()` about 5 times a second, plus every tower's maintenance pass) while the
# tickers and the towers are SIGKILLed mid-tick and started again, and once all of them at
# the same time (a blackout). Then the schedules are paused and the wave drains. Checked:
# every occurrence made has exactly one execution and every execution of the storm came from
# exactly one occurrence (no duplicate across any number of tickers), each ran to completion
# (the invariants excuse only re-runs of killed towers' work); every occurrence a tick made is
# the latest one due at that tick (skip: missed ones are not made later); nothing was made
# while nothing ticked. How many of the window's seconds each schedule got is logged, not
# asserted: a tick that comes more than a second late on a busy machine skips one, by design.
set -uo pipefail
# shellcheck source=tests/e2e/lib/waves.sh
source "$(dirname "$0")/../lib/waves.sh"
# shellcheck source=tests/e2e/lib/towers.sh
source "$(dirname "$0")/../lib/towers.sh"
# shellcheck source=tests/e2e/lib/assertions.sh
source "$(dirname "$0")/../lib/assertions.sh"

SCHEDULES=300
TOWERS=(alpha bravo charlie)
TICKERS=(t1 t2)

# ticker NAME: one orchestrator of the scenario: psql running `SELECT pgconductor.tick()`
# every 0.2 s (\watch, one transaction each), started again whenever it dies (a kill, a cut
# connection, a database restart), until $E2E_WORK/tickers.stop exists. Its psql's pid is in
# $E2E_WORK/ticker.NAME.pid, each tick's count in ticker.NAME.log.
ticker() {
  local name=$1 pid
  while [ ! -e "$E2E_WORK/tickers.stop" ]; do
    if [ -e "$E2E_WORK/ticker.$name.held" ]; then
      sleep 0.05
      continue
    fi
    printf 'SELECT pgconductor.tick();\n\\watch 0.2\n' |
      psql "$DATABASE_URL" -X -A -t -q >>"$E2E_WORK/ticker.$name.log" 2>&1 &
    pid=$!
    echo "$pid" >"$E2E_WORK/ticker.$name.pid"
    wait "$pid"
    sleep 0.1  # a server that is away (a restart) is tried again 10 times a second
  done
}

# start_tickers: every ticker in the background (stopped by stop_tickers or the EXIT trap).
start_tickers() {
  local name
  rm -f "$E2E_WORK/tickers.stop"
  for name in "${TICKERS[@]}"; do
    (
      _close_extra_fds
      trap - EXIT
      ticker "$name"
    ) </dev/null >/dev/null 2>&1 &
    echo $! >"$E2E_WORK/ticker.$name.loop"
  done
  e2e_log "tickers ${TICKERS[*]} started"
}

# kill_ticker NAME [--hold]: SIGKILL its psql, mid-tick or between two; with --hold it stays
# down until release_ticker NAME, otherwise its loop starts it again at once.
kill_ticker() {
  local name=$1 pid
  if [ "${2:-}" = --hold ]; then
    touch "$E2E_WORK/ticker.$name.held"
    # Until none runs: the loop may have started one just before it saw the hold.
    for _ in $(seq 50); do
      pid=$(cat "$E2E_WORK/ticker.$name.pid" 2>/dev/null)
      pid_alive "$pid" || break
      kill -s KILL "$pid" 2>/dev/null
      sleep 0.1
    done
    pid_alive "$pid" && e2e_fail "ticker $name (psql pid $pid) survived SIGKILL"
    e2e_log "ticker $name killed and held (psql pid $pid)"
    return 0
  fi
  pid=$(cat "$E2E_WORK/ticker.$name.pid" 2>/dev/null)
  if pid_alive "$pid"; then
    kill -s KILL "$pid" 2>/dev/null
    e2e_log "ticker $name killed (psql pid $pid)"
  fi
}
release_ticker() { rm -f "$E2E_WORK/ticker.$1.held"; }

# stop_tickers: end every ticker loop and its psql.
stop_tickers() {
  local name pid
  touch "$E2E_WORK/tickers.stop"
  for name in "${TICKERS[@]}"; do
    pid=$(cat "$E2E_WORK/ticker.$name.pid" 2>/dev/null)
    pid_alive "$pid" && kill -s TERM "$pid" 2>/dev/null
    pid=$(cat "$E2E_WORK/ticker.$name.loop" 2>/dev/null)
    while pid_alive "$pid"; do sleep 0.05; done
  done
}

# on_exit: the tickers too, whatever happened.
on_exit() {
  local rc=$?
  [ -e "$E2E_WORK/tickers.stop" ] || stop_tickers
  e2e_on_exit
  exit "$rc"
}

# at SECONDS: wait until SECONDS after the storm began, failing at once when a tower died on
# its own. The timeline is the clock's: slow tower starts on a busy machine do not stretch it.
at() {
  local end
  end=$(awk -v n="$storm_t0" -v s="$1" 'BEGIN { printf "%.3f", n + s }')
  while e2e_lt "$(e2e_now)" "$end"; do
    check_towers_alive || e2e_fail "a tower died on its own during the storm"
    sleep 0.2
  done
}

# restart_in_background NAME...: start_towers NAME... without waiting (joined by join_starts).
starts=()
restart_in_background() {
  start_towers "$@" &
  starts+=($!)
}
join_starts() {
  local pid bad=0
  for pid in "${starts[@]}"; do wait "$pid" || bad=1; done
  starts=()
  [ "$bad" = 0 ] || e2e_fail "a tower did not come back"
}

setup_test_db
trap on_exit EXIT
created=$(q "SELECT now()")
q "SELECT count(pgconductor.schedule(format('storm-%s', lpad(g::text, 3, '0')), 'hello', '* * * * * *',
                                     jsonb_build_object('sleep', 0, 'schedule', format('storm-%s', lpad(g::text, 3, '0'))),
                                     p_missed => 'skip'))
     FROM generate_series(1, $SCHEDULES) AS g" >/dev/null || e2e_fail "could not create the schedules"
[ -f "$E2E_WORK/wave-started" ] || e2e_now >"$E2E_WORK/wave-started"

setup_towers "alpha --concurrency=40" "bravo --concurrency=40" "charlie --concurrency=40"
chaos_start
start_tickers
storm_t0=$(e2e_now)
storm_started=$(q "SELECT now()")

at 4
kill_ticker t1
kill_tower alpha
restart_in_background alpha

at 9
# Blackout: every ticker and every tower down (their maintenance passes tick too).
kill_ticker t1 --hold
kill_ticker t2 --hold
join_starts
for t in "${TOWERS[@]}"; do kill_tower "$t"; done
# A tick's record is dated by its transaction's start, before the kill of whoever ran it.
blackout_from=$(e2e_now)
sleep 3
blackout_to=$(e2e_now)
release_ticker t1
release_ticker t2
e2e_log "blackout over: nothing ticked from $blackout_from to $blackout_to (epoch)"
restart_in_background "${TOWERS[@]}"

at 16
kill_ticker t2
join_starts
kill_tower bravo
restart_in_background bravo

at 22
# Stop the storm: a paused schedule makes nothing (the pause waits for ticks holding rows).
q "SELECT count(*) FROM (SELECT pgconductor.pause_schedule(name) FROM pgconductor.schedules()) AS p" >/dev/null ||
  e2e_fail "could not pause the schedules"
storm_ended=$(q "SELECT now()")
stop_tickers
join_starts
made=$(q "SELECT count(*) FROM pgconductor.schedule_occurrences")
echo "hello $made -" >>"$E2E_WORK/waves"
e2e_log "storm over: $made occurrences from $storm_started to $storm_ended"
wait_for_wave_completion --timeout=45s

assert_all_completed
assert_no_failures
assert_sql "every occurrence has its own execution, and it finished" "
  SELECT count(*) FILTER (WHERE o.execution_id IS NULL) || '|'
         || count(DISTINCT o.execution_id) || '|'
         || count(f.id) FILTER (WHERE f.task_key = 'hello' AND f.payload->>'schedule' = o.schedule)
    FROM pgconductor.schedule_occurrences o LEFT JOIN pgconductor.finished_executions f ON f.id = o.execution_id" \
  "0|$made|$made"
assert_sql "every execution of the storm came from exactly one occurrence" "
  SELECT count(*) FROM pgconductor.finished_executions f
   WHERE (SELECT count(*) FROM pgconductor.schedule_occurrences o WHERE o.execution_id = f.id) <> 1" 0
assert_sql "every occurrence lies in the storm, on a whole second" "
  SELECT count(*) FROM pgconductor.schedule_occurrences
   WHERE occurs_at < '$created' OR occurs_at > '$storm_ended' OR occurs_at <> date_trunc('second', occurs_at)" 0
# missed = skip: a tick makes the latest occurrence due at its time (now(), which is the
# record's created_at), never an older one and never a future one.
assert_sql "every occurrence was the latest one due when it was made" "
  SELECT count(*) FROM pgconductor.schedule_occurrences
   WHERE created_at < occurs_at OR created_at - occurs_at >= interval '1 second'" 0
assert_sql "nothing was made while nothing ticked" "
  SELECT count(*) FROM pgconductor.schedule_occurrences
   WHERE created_at BETWEEN to_timestamp($blackout_from) AND to_timestamp($blackout_to)" 0
assert_sql "every schedule was served at least 5 times" "
  SELECT count(*) FROM (SELECT schedule FROM pgconductor.schedule_occurrences GROUP BY 1 HAVING count(*) >= 5) AS s" \
  "$SCHEDULES"
e2e_log "coverage: $(q "
  WITH per AS (
    SELECT schedule, count(*) AS n, max(gap) AS widest
      FROM (SELECT schedule, occurs_at - lag(occurs_at) OVER (PARTITION BY schedule ORDER BY occurs_at) AS gap
              FROM pgconductor.schedule_occurrences) AS g GROUP BY 1)
  SELECT format('%s of %s seconds per schedule on average (the blackout and late ticks skip), widest gap %s',
                round(avg(n), 1), extract(epoch FROM timestamptz '$storm_ended' - '$storm_started')::int, max(widest))
    FROM per")"

teardown_towers "${TOWERS[@]}"
