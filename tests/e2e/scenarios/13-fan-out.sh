#!/usr/bin/env bash
# 13-fan-out: one parent workflow fans out 500 children, 250 in queue fan-a and 250 in fan-b,
# in one suspension (ctx.gather of two ctx.invoke_many) and joins them. Tower alpha serves the
# parent's queue and fan-a, bravo serves fan-b: the children run in both, the parent holds no
# slot while it waits, wakes when the last child ends, and completes with all 500 results.
set -uo pipefail
# shellcheck source=tests/e2e/lib/waves.sh
source "$(dirname "$0")/../lib/waves.sh"
# shellcheck source=tests/e2e/lib/towers.sh
source "$(dirname "$0")/../lib/towers.sh"
# shellcheck source=tests/e2e/lib/assertions.sh
source "$(dirname "$0")/../lib/assertions.sh"

setup_test_db
setup_towers "alpha --concurrency=20 --queue=default --queue=fan-a" "bravo --concurrency=20 --queue=fan-b"

send_wave fan-parent --count=1 --payload='{"children":500}'
parent=$(last_execution_id)
# The children are invoked by the parent, not by a wave: count them as invoked all the same.
echo "fan-child-a 250 fan-a" >>"$E2E_WORK/waves"
echo "fan-child-b 250 fan-b" >>"$E2E_WORK/waves"
wait_for "SELECT (SELECT count(*) FROM pgconductor.executions WHERE parent_id = '$parent')
                + (SELECT count(*) FROM pgconductor.finished_executions WHERE parent_id = '$parent') = 500" \
  --timeout=30s --what="500 children created"
wait_for_wave_completion --timeout=90s

assert_all_completed
assert_no_failures
assert_sql "the parent joined 500 children" "
  SELECT result->>'children' FROM pgconductor.finished_executions WHERE id = '$parent'" 500
assert_sql "the children ran in both towers" "
  SELECT result->>'child_towers' FROM pgconductor.finished_executions WHERE id = '$parent'" '["alpha", "bravo"]'
assert_sql "every child names the parent and its step" "
  SELECT count(*) FROM pgconductor.finished_executions
   WHERE parent_id = '$parent' AND parent_step ~ '^[ab]/[0-9]+$' AND state = 'completed'" 500
assert_sql "each queue ran its 250 children" "
  SELECT string_agg(queue || '=' || n, ',' ORDER BY queue) FROM (
    SELECT queue, count(*) AS n FROM pgconductor.finished_executions WHERE parent_id = '$parent' GROUP BY 1) AS q" \
  "fan-a=250,fan-b=250"
assert_sql "the parent's child steps are all done" "
  SELECT count(*) FROM pgconductor.steps WHERE execution_id = '$parent' AND kind = 'child' AND state = 'done'" 500
if [ "$E2E_CHAOS" != 1 ]; then
  assert_sql "the fan-out and the join cost the parent no attempt" "
    SELECT attempts FROM pgconductor.finished_executions WHERE id = '$parent'" 1
fi

teardown_towers alpha bravo
