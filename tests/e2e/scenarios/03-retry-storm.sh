#!/usr/bin/env bash
# 03-retry-storm: 20 "flaky" jobs fail their first 2 attempts on purpose (max_attempts 3,
# backoff 0.1 s..0.5 s) and complete at exactly attempt 3; 5 "doomed" jobs always fail and
# end failed after 3 attempts with the last attempt's error.
set -uo pipefail
# shellcheck source=tests/e2e/lib/waves.sh
source "$(dirname "$0")/../lib/waves.sh"
# shellcheck source=tests/e2e/lib/towers.sh
source "$(dirname "$0")/../lib/towers.sh"
# shellcheck source=tests/e2e/lib/assertions.sh
source "$(dirname "$0")/../lib/assertions.sh"

setup_test_db
expect_outcome doomed failed
setup_tower storm --concurrency=5
send_wave flaky --count=20 --payload='{"fail_times":2}'
send_wave doomed --count=5
wait_for_wave_completion --timeout=30s

assert_all_completed
assert_sql "flaky: every completed execution took exactly 3 attempts" \
  "SELECT count(*) FROM pgconductor.finished_executions WHERE task_key = 'flaky' AND state = 'completed' AND attempts <> 3" 0
assert_sql "flaky: runs failed on purpose only at attempts 1 and 2" \
  "SELECT count(*) FROM e2e.ledger WHERE task_key = 'flaky' AND kind = 'fail' AND attempt > 2" 0
assert_sql "doomed: every execution failed after 3 attempts" \
  "SELECT count(*) FROM pgconductor.finished_executions WHERE task_key = 'doomed' AND state = 'failed' AND attempts = 3" 5
assert_sql "doomed: the error kept is the last attempt's" \
  "SELECT count(*) FROM pgconductor.finished_executions WHERE task_key = 'doomed'
      AND (last_error LIKE '%doomed: attempt 3 of 3 fails on purpose%'
           OR ($E2E_CHAOS = 1 AND last_error ~ '^attempt 3 of 3 lost: orchestrator '))" 5
assert_sql "a retry waited for its backoff (>= 0.05 s after the failure)" "
  SELECT count(*) FROM e2e.ledger f JOIN e2e.ledger s
    ON s.execution_id = f.execution_id AND s.kind = 'start' AND s.attempt = f.attempt + 1
   WHERE f.kind = 'fail' AND s.at < f.at + interval '0.045 seconds'" 0
if [ "$E2E_CHAOS" != 1 ]; then
  assert_sql "flaky: each execution = fail@1, fail@2, effect@3" "
    SELECT count(*) FROM (SELECT execution_id, string_agg(kind || '@' || attempt, ',' ORDER BY attempt, seq) AS runs
                            FROM e2e.ledger WHERE task_key = 'flaky' AND kind <> 'start' GROUP BY 1) x
     WHERE runs = 'fail@1,fail@2,effect@3'" 20
  assert_sql "doomed: each execution = fail@1, fail@2, fail@3" "
    SELECT count(*) FROM (SELECT execution_id, string_agg(kind || '@' || attempt, ',' ORDER BY attempt, seq) AS runs
                            FROM e2e.ledger WHERE task_key = 'doomed' AND kind <> 'start' GROUP BY 1) x
     WHERE runs = 'fail@1,fail@2,fail@3'" 5
fi

teardown_tower storm
