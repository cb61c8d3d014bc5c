#!/usr/bin/env bash
# 07-graceful-drain: SIGTERM reaches every tower mid-wave at once.
#  A: handlers shorter than the grace period finish; each tower releases what it still held
#     and exits 0; restarted, the fleet finishes the wave: nothing lost, nothing duplicated,
#     no attempt spent by the drain.
#  B: handlers longer than the grace period (0.3 s) are aborted and released (the attempt
#     given back); restarted, they run to completion, each side effect once.
set -uo pipefail
# shellcheck source=tests/e2e/lib/waves.sh
source "$(dirname "$0")/../lib/waves.sh"
# shellcheck source=tests/e2e/lib/towers.sh
source "$(dirname "$0")/../lib/towers.sh"
# shellcheck source=tests/e2e/lib/assertions.sh
source "$(dirname "$0")/../lib/assertions.sh"

setup_test_db
setup_towers "east --concurrency=5" "west --concurrency=5"
send_wave hello --count=150 --payload='{"phase":"a","sleep":0.2}'
wait_for "SELECT count(*) >= 30 FROM pgconductor.finished_executions" --timeout=20s --what="30 jobs done"
teardown_towers east west
assert_sql "work was left for the restart" "SELECT count(*) > 0 FROM pgconductor.executions" t
if [ "$E2E_CHAOS" != 1 ]; then
  # (with --chaos a killed tower's leases stay until stale recovery takes them)
  assert_sql "after the drain no execution is locked" \
    "SELECT count(*) FROM pgconductor.executions WHERE locked_by IS NOT NULL" 0
  assert_sql "both orchestrators stopped cleanly" \
    "SELECT count(*) FROM pgconductor.orchestrators WHERE stopped_at IS NOT NULL" 2
  assert_sql "no handler was cut short (all fit in the grace period)" \
    "SELECT count(*) FROM e2e.ledger WHERE kind = 'aborted'" 0
fi
start_towers east west
wait_for_wave_completion --timeout=30s
teardown_towers east west

# B: a tower with a short grace period, jobs that outlast it.
setup_tower north --concurrency=10 --grace=0.3s
send_wave hello --count=10 --payload='{"phase":"b","sleep":1.5}'
wait_for "SELECT count(DISTINCT execution_id) = 10 FROM e2e.ledger WHERE kind = 'start' AND payload->>'phase' = 'b'" \
  --timeout=15s --what="all 10 long jobs running"
teardown_tower north
if [ "$E2E_CHAOS" != 1 ]; then
  assert_sql "the aborted jobs are pending again with their attempt given back" \
    "SELECT count(*) FROM pgconductor.executions WHERE payload->>'phase' = 'b' AND locked_by IS NULL AND attempts = 0" 10
  assert_sql "each long job recorded its abort" \
    "SELECT count(DISTINCT execution_id) FROM e2e.ledger WHERE kind = 'aborted' AND payload->>'phase' = 'b'" 10
fi
start_tower north
wait_for_wave_completion --timeout=30s

assert_all_completed
assert_no_failures
if [ "$E2E_CHAOS" != 1 ]; then
  assert_sql "no side effect ran twice" "
    SELECT count(*) FROM (SELECT execution_id FROM e2e.ledger WHERE kind = 'effect' GROUP BY 1 HAVING count(*) > 1) d" 0
  assert_sql "no attempt was spent by a drain" \
    "SELECT count(*) FROM pgconductor.finished_executions WHERE attempts <> 1" 0
fi

teardown_tower north
