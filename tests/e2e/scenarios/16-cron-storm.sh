#!/usr/bin/env bash
# 16-cron-storm: 300 schedules of `hello` every second (6-field cron `* * * * * *`, missed =
# skip) for about 22 s on three towers, which are also the tickers (each worker calls
# `pgconductor.tick()` just after every whole second, and `maintain()` ticks too). Towers are
# SIGKILLed mid-tick and started again, and once all at the same time (a blackout of 3 s).
# Then the schedules are paused and the wave drains. Checked: every occurrence made has
# exactly one execution and every execution of the storm came from exactly one occurrence (no
# duplicate however many towers tick at once), each ran to completion (the invariants excuse
# only re-runs of killed towers' work); every occurrence a tick made is the latest one due at
# that tick (skip: missed ones are not made later); nothing was made while no tower ran. How
# many of the window's seconds each schedule got is logged, not asserted: a tick that comes
# more than a second late on a busy machine skips one, by design.
set -uo pipefail
# shellcheck source=tests/e2e/lib/waves.sh
source "$(dirname "$0")/../lib/waves.sh"
# shellcheck source=tests/e2e/lib/towers.sh
source "$(dirname "$0")/../lib/towers.sh"
# shellcheck source=tests/e2e/lib/assertions.sh
source "$(dirname "$0")/../lib/assertions.sh"

SCHEDULES=300
TOWERS=(alpha bravo charlie)

# mid_tick: sleep until 0.15 s past the next whole second, when the towers' ticks run.
mid_tick() {
  sleep "$(awk -v n="$(e2e_now)" 'BEGIN { d = 1.15 - (n - int(n)); if (d > 1) d -= 1; printf "%.3f", d }')"
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
created=$(q "SELECT now()")
q "SELECT count(pgconductor.schedule(format('storm-%s', lpad(g::text, 3, '0')), 'hello', '* * * * * *',
                                     jsonb_build_object('sleep', 0, 'schedule', format('storm-%s', lpad(g::text, 3, '0'))),
                                     p_missed => 'skip'))
     FROM generate_series(1, $SCHEDULES) AS g" >/dev/null || e2e_fail "could not create the schedules"
[ -f "$E2E_WORK/wave-started" ] || e2e_now >"$E2E_WORK/wave-started"

setup_towers "alpha --concurrency=40" "bravo --concurrency=40" "charlie --concurrency=40"
chaos_start
storm_t0=$(e2e_now)
storm_started=$(q "SELECT now()")

at 4
mid_tick
kill_tower alpha
restart_in_background alpha

at 9
join_starts
# Blackout: every tower down, mid-tick.
mid_tick
kills=()
for t in "${TOWERS[@]}"; do
  kill_tower "$t" &
  kills+=($!)
done
wait "${kills[@]}"  # these only: the chaos monkey is a child too
# A tick's record is dated by its transaction's start, before the kill of whoever ran it.
blackout_from=$(e2e_now)
sleep 3
blackout_to=$(e2e_now)
e2e_log "blackout over: nothing ticked from $blackout_from to $blackout_to (epoch)"
restart_in_background "${TOWERS[@]}"

at 16
join_starts
mid_tick
kill_tower bravo
restart_in_background bravo

at 22
# Stop the storm: a paused schedule makes nothing (the pause waits for ticks holding rows).
q "SELECT count(*) FROM (SELECT pgconductor.pause_schedule(name) FROM pgconductor.schedules()) AS p" >/dev/null ||
  e2e_fail "could not pause the schedules"
storm_ended=$(q "SELECT now()")
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
