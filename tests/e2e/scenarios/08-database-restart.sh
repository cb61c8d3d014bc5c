#!/usr/bin/env bash
# 08-database-restart: `scripts/cluster.sh restart-immediate` (pg_ctl restart -m immediate)
# mid-wave. The towers survive it (same processes), reconnect, and finish every job; the
# restart costs no attempt and no duplicate side effect. Needs the private cluster: with a
# DATABASE_URL of your own the scenario fails and says so.
set -uo pipefail
# shellcheck source=tests/e2e/lib/waves.sh
source "$(dirname "$0")/../lib/waves.sh"
# shellcheck source=tests/e2e/lib/towers.sh
source "$(dirname "$0")/../lib/towers.sh"
# shellcheck source=tests/e2e/lib/assertions.sh
source "$(dirname "$0")/../lib/assertions.sh"

setup_test_db
[ "$E2E_PRIVATE" = 1 ] ||
  e2e_fail "08-database-restart needs the private cluster: DATABASE_URL is set, and the suite never restarts a server it did not start (unset DATABASE_URL)"
setup_towers "port --concurrency=5" "starboard --concurrency=5"
pids_before="$(tower_pid port) $(tower_pid starboard)"
send_wave hello --count=200 --payload='{"sleep":0.1}'
wait_for "SELECT count(*) >= 40 FROM pgconductor.finished_executions" --timeout=20s --what="40 jobs done"
db_restart
send_wave hello --count=50 --payload='{"after_restart":true,"sleep":0.02}'
wait_for_wave_completion --timeout=60s

assert_all_completed
assert_no_failures
check_towers_alive
if [ "$E2E_CHAOS" != 1 ]; then  # (the chaos monkey replaces processes and restarts at will)
  assert_eq "both towers survived the restart (same processes)" "$(tower_pid port) $(tower_pid starboard)" "$pids_before"
  assert_sql "jobs completed after the restart" "
    SELECT count(*) > 0 FROM pgconductor.finished_executions WHERE finished_at > pg_postmaster_start_time()" t
  assert_sql "no side effect ran twice" "
    SELECT count(*) FROM (SELECT execution_id FROM e2e.ledger WHERE kind = 'effect' GROUP BY 1 HAVING count(*) > 1) d" 0
  assert_sql "the restart spent no attempt" \
    "SELECT count(*) FROM pgconductor.finished_executions WHERE attempts <> 1" 0
fi

teardown_towers port starboard
