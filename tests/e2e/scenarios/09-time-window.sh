#!/usr/bin/env bash
# 09-time-window: task "windowed" may only run in [now-2h, now+2h) UTC. With the database's
# clock faked to 6 hours ago (ALTER DATABASE ... SET pgconductor.fake_now) it waits pending,
# spending no attempt, while other work on the same queue runs. Then the clock moves into
# the window (the setting is reset and the towers' sessions are cut so they pick it up):
# the windowed jobs run, at their first attempt.
# Chaos is held while the clock is frozen: stale recovery cannot fire on a stopped clock.
set -uo pipefail
# shellcheck source=tests/e2e/lib/waves.sh
source "$(dirname "$0")/../lib/waves.sh"
# shellcheck source=tests/e2e/lib/towers.sh
source "$(dirname "$0")/../lib/towers.sh"
# shellcheck source=tests/e2e/lib/assertions.sh
source "$(dirname "$0")/../lib/assertions.sh"

chaos_hold
setup_test_db
db=$(e2e_dbname)
window="$(date -u -d '-2 hours' +%H:%M)-$(date -u -d '+2 hours' +%H:%M)"
outside=$(date -u -d '-6 hours' '+%Y-%m-%d %H:%M:%S+00')
q_admin "ALTER DATABASE \"$db\" SET pgconductor.test_clock = on" >/dev/null
q_admin "ALTER DATABASE \"$db\" SET pgconductor.fake_now = '$outside'" >/dev/null
assert_sql "the database clock is faked" "SELECT pgconductor._now() = '$outside'::timestamptz" t

setup_tower keeper --concurrency=4 --env="E2E_WINDOW=$window"
send_wave windowed --count=10 --payload='{"sleep":0.01}'
send_wave hello --count=10 --payload='{"control":true}'
wait_for_wave_completion --timeout=30s --task=hello
assert_sql "outside its window ($window UTC) no windowed job ran" \
  "SELECT count(*) FROM e2e.ledger WHERE task_key = 'windowed'" 0
assert_sql "the windowed jobs wait pending with no attempt spent" \
  "SELECT count(*) FROM pgconductor.executions WHERE task_key = 'windowed' AND locked_by IS NULL AND attempts = 0" 10

# Move the clock into the window.
q_admin "ALTER DATABASE \"$db\" RESET pgconductor.fake_now" >/dev/null
q "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()" >/dev/null
e2e_log "clock moved into the window; the towers' sessions were cut"
chaos_release
chaos_start
wait_for_wave_completion --timeout=30s

assert_all_completed
assert_no_failures
check_towers_alive
ws=${window%-*} we=${window#*-}
assert_sql "every windowed job ran inside its window" "
  SELECT count(*) FROM (SELECT (at AT TIME ZONE 'UTC')::time AS t FROM e2e.ledger
                         WHERE task_key = 'windowed' AND kind = 'effect') x
   WHERE CASE WHEN '$ws'::time < '$we'::time THEN t >= '$ws' AND t < '$we'
              ELSE t >= '$ws' OR t < '$we' END" 10
if [ "$E2E_CHAOS" != 1 ]; then
  assert_sql "the windowed jobs ran at their first attempt" \
    "SELECT count(*) FROM pgconductor.finished_executions WHERE task_key = 'windowed' AND attempts = 1" 10
fi

teardown_tower keeper
