#!/usr/bin/env bash
# 06-concurrent-waves: three towers (concurrency 2, 4, 8) under overlapping waves: 300 async
# jobs; while they run, 60 sync jobs that jump the queue (priority -1) and 100 delayed ones
# (1 s). All complete, every tower takes a share, the sync wave overtakes, the delayed wave
# never starts early, and no job runs twice.
set -uo pipefail
# shellcheck source=tests/e2e/lib/waves.sh
source "$(dirname "$0")/../lib/waves.sh"
# shellcheck source=tests/e2e/lib/towers.sh
source "$(dirname "$0")/../lib/towers.sh"
# shellcheck source=tests/e2e/lib/assertions.sh
source "$(dirname "$0")/../lib/assertions.sh"

setup_test_db
setup_towers "small --concurrency=2" "medium --concurrency=4" "large --concurrency=8"

send_wave hello --count=300 --payload='{"wave":"a","sleep":0.2}'
wait_for "SELECT count(*) >= 30 FROM pgconductor.finished_executions" --timeout=20s --what="wave a under way"
send_wave hello-sync --count=60 --priority=-1 --payload='{"wave":"b","sleep":0.05}'
send_wave hello --count=100 --delay=1s --payload='{"wave":"c","sleep":0.02}'
wait_for_wave_completion --timeout=60s

assert_all_completed
assert_no_failures
assert_sql "the waves overlapped (wave b ran while wave a still had work)" "
  SELECT (SELECT min(at) FROM e2e.ledger WHERE payload->>'wave' = 'b')
       < (SELECT max(at) FROM e2e.ledger WHERE payload->>'wave' = 'a' AND kind = 'start')" t
assert_sql "every tower took a share" "SELECT count(DISTINCT tower) FROM e2e.ledger WHERE kind = 'effect'" 3
# (run_at moves when a killed tower's work is recovered: compare with the invoke time; the
# CLI computes run_at = its clock + 1 s just before the insert, 0.3 s allows for that)
assert_sql "no delayed job started before its run_at" "
  SELECT count(*) FROM e2e.ledger l JOIN pgconductor.finished_executions f ON f.id = l.execution_id
   WHERE l.payload->>'wave' = 'c' AND l.kind = 'start' AND l.at < f.created_at + interval '0.7 seconds'" 0
if [ "$E2E_CHAOS" != 1 ]; then
  # Once wave b (priority -1) was in (plus 0.5 s for claims already on their way), no job
  # of wave a started until every job of wave b had started.
  assert_sql "the priority -1 wave jumped the queue" "
    WITH b AS (SELECT min(f.created_at) AS arrived, max(l.at) AS last_start
                 FROM pgconductor.finished_executions f JOIN e2e.ledger l ON l.execution_id = f.id AND l.kind = 'start'
                WHERE f.payload->>'wave' = 'b')
    SELECT count(*) FROM e2e.ledger l, b
     WHERE l.payload->>'wave' = 'a' AND l.kind = 'start'
       AND l.at > b.arrived + interval '0.5 seconds' AND l.at < b.last_start" 0
fi

teardown_towers small medium large
