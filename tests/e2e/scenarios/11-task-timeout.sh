#!/usr/bin/env bash
# 11-task-timeout: "slowpoke" (timeout 0.5 s, max_attempts 2) sleeps 5 s: each attempt is
# stopped at its timeout and the execution ends failed with a timeout error after 2 attempts;
# the tower's other jobs are not disturbed.
set -uo pipefail
# shellcheck source=tests/e2e/lib/waves.sh
source "$(dirname "$0")/../lib/waves.sh"
# shellcheck source=tests/e2e/lib/towers.sh
source "$(dirname "$0")/../lib/towers.sh"
# shellcheck source=tests/e2e/lib/assertions.sh
source "$(dirname "$0")/../lib/assertions.sh"

setup_test_db
expect_outcome slowpoke failed
setup_tower timer --concurrency=4
send_wave slowpoke --count=4
send_wave hello --count=40
wait_for_wave_completion --timeout=30s

assert_all_completed
assert_no_failures
assert_sql "slowpoke: failed after 2 attempts with a timeout error" "
  SELECT count(*) FROM pgconductor.finished_executions WHERE task_key = 'slowpoke' AND state = 'failed'
     AND attempts = 2 AND (last_error ILIKE '%timed out%' OR ($E2E_CHAOS = 1 AND last_error ~ ' lost: orchestrator '))" 4
assert_sql "slowpoke: no run got past its timeout to the side effect" \
  "SELECT count(*) FROM e2e.ledger WHERE task_key = 'slowpoke' AND kind = 'effect'" 0
if [ "$E2E_CHAOS" != 1 ]; then
  assert_sql "slowpoke: every run was stopped within 1.5 s of its start" "
    SELECT count(*) FROM e2e.ledger s JOIN e2e.ledger a ON a.run_id = s.run_id AND a.kind = 'aborted'
     WHERE s.kind = 'start' AND s.task_key = 'slowpoke' AND a.at - s.at < interval '1.5 seconds'" 8
fi

teardown_tower timer
