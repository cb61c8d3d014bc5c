#!/usr/bin/env bash
# 04-tower-crash: SIGKILL a tower mid-wave (stale_after 3 s). Its orchestrator row stops
# beating; a second tower's heartbeat expires it, recovers the executions it held and runs
# them. Nothing is lost; only the killed tower's runs may repeat.
set -uo pipefail
# shellcheck source=tests/e2e/lib/waves.sh
source "$(dirname "$0")/../lib/waves.sh"
# shellcheck source=tests/e2e/lib/towers.sh
source "$(dirname "$0")/../lib/towers.sh"
# shellcheck source=tests/e2e/lib/assertions.sh
source "$(dirname "$0")/../lib/assertions.sh"

setup_test_db
setup_tower alpha --concurrency=5 --stale-after=3s --heartbeat=0.5s
send_wave hello --count=60 --payload='{"sleep":0.2}'
wait_for "SELECT count(*) >= 10 FROM pgconductor.finished_executions" --timeout=20s --what="10 jobs done"
wait_for "SELECT count(*) > 0 FROM pgconductor.executions WHERE locked_by IS NOT NULL" --timeout=10s \
  --what="jobs running on alpha"
alpha_pid=$(tower_pid alpha)
kill_tower alpha
held=$(q "SELECT count(*) FROM pgconductor.executions e JOIN pgconductor.orchestrators o ON o.id = e.locked_by
           WHERE o.info->>'pid' = '$alpha_pid'")
e2e_log "alpha held $held execution(s) when it died"
[ "$E2E_CHAOS" = 1 ] || [ "$held" -gt 0 ] || e2e_check_fail "alpha held no execution when killed: nothing to recover"

setup_tower bravo --concurrency=5 --stale-after=3s --heartbeat=0.5s
wait_for_wave_completion --timeout=30s

assert_all_completed
assert_no_failures
assert_sql "alpha's orchestrator was expired by recovery" \
  "SELECT expired_at IS NOT NULL FROM pgconductor.orchestrators WHERE info->>'pid' = '$alpha_pid'" t
# The runs alpha had started and never finished: each execution was re-run and completed.
CUT="SELECT s.execution_id FROM e2e.ledger s WHERE s.kind = 'start' AND s.pid = $alpha_pid
       AND NOT EXISTS (SELECT 1 FROM e2e.ledger e WHERE e.run_id = s.run_id AND e.kind <> 'start')"
assert_sql "every execution cut short by the kill completed on a later attempt" "
  SELECT count(*) FROM pgconductor.finished_executions WHERE id IN ($CUT) AND (state <> 'completed' OR attempts < 2)" 0
assert_sql "those executions keep the lost attempt's error" "
  SELECT count(*) FROM pgconductor.finished_executions WHERE id IN ($CUT)
     AND last_error !~ '^attempt [0-9]+ of [0-9]+ lost: orchestrator '" 0
if [ "$E2E_CHAOS" != 1 ]; then
  assert_sql "bravo completed what alpha left" "
    SELECT count(*) FROM pgconductor.finished_executions f JOIN pgconductor.orchestrators o ON o.id = f.orchestrator_id
     WHERE f.id IN ($CUT) AND o.info->>'pid' <> '$(tower_pid bravo)'" 0
fi

teardown_tower bravo
