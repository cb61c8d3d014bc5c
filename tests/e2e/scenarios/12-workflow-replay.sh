#!/usr/bin/env bash
# 12-workflow-replay: a wave of 100 five-step durable workflows (a durable sleep after step 3)
# on two towers; one tower is SIGKILLed mid-wave and started again. Every workflow completes,
# and every step's side effect (a row in e2e.steps written by the step body) happened exactly
# once, except a step in flight on the killed tower: it ran again, once, elsewhere or later.
set -uo pipefail
# shellcheck source=tests/e2e/lib/waves.sh
source "$(dirname "$0")/../lib/waves.sh"
# shellcheck source=tests/e2e/lib/towers.sh
source "$(dirname "$0")/../lib/towers.sh"
# shellcheck source=tests/e2e/lib/assertions.sh
source "$(dirname "$0")/../lib/assertions.sh"

setup_test_db
q "CREATE TABLE e2e.steps (execution_id uuid NOT NULL, key text NOT NULL, tower text NOT NULL,
                           pid integer NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())" >/dev/null ||
  e2e_fail "could not create e2e.steps"
setup_towers "alpha --concurrency=10 --stale-after=3s --heartbeat=0.5s" \
             "bravo --concurrency=10 --stale-after=3s --heartbeat=0.5s"

send_wave workflow --count=100 --payload='{"sleep":0.05}'
wait_for "SELECT count(*) >= 150 FROM e2e.steps" --timeout=30s --what="150 steps done"
alpha_pid=$(tower_pid alpha)
kill_tower alpha
e2e_log "alpha died after $(q "SELECT count(*) FROM e2e.steps WHERE pid = $alpha_pid") step(s)"
start_tower alpha
wait_for_wave_completion --timeout=60s

assert_all_completed
assert_no_failures
assert_sql "every workflow ran its five steps" "
  SELECT count(*) FROM (SELECT f.id FROM pgconductor.finished_executions f
                          LEFT JOIN e2e.steps s ON s.execution_id = f.id
                         WHERE f.task_key = 'workflow' GROUP BY f.id
                        HAVING count(DISTINCT s.key) <> 5) AS short" 0
assert_sql "every workflow returned its five stored step results" "
  SELECT count(*) FROM pgconductor.finished_executions
   WHERE task_key = 'workflow' AND jsonb_array_length(result->'steps') <> 5" 0
# A step body that ran twice: only when an earlier run of it was on a killed tower (its
# result was not stored yet), and never more than once outside the killed towers.
out=$(_query_with_setup "
  SELECT count(*) FROM (
    SELECT s.execution_id, s.key, count(*) AS n,
           count(*) FILTER (WHERE s.pid IN (SELECT pid FROM x_killed)) AS on_killed
      FROM e2e.steps s GROUP BY 1, 2) AS per_step
   WHERE n - on_killed > 1 OR (n > 1 AND on_killed = 0);")
assert_eq "no stored step ran again" "$out" 0
if [ "$E2E_CHAOS" != 1 ]; then
  assert_sql "at most one step per workflow repeats (the one in flight at the kill)" "
    SELECT count(*) FROM (SELECT execution_id FROM (
        SELECT execution_id, key FROM e2e.steps GROUP BY 1, 2 HAVING count(*) > 1) AS d
      GROUP BY 1 HAVING count(*) > 1) AS many" 0
  assert_sql "the durable sleep spent no attempt" "
    SELECT count(*) FROM pgconductor.finished_executions WHERE task_key = 'workflow' AND attempts > 2" 0
fi

teardown_towers alpha bravo
