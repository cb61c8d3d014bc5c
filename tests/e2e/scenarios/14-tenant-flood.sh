#!/usr/bin/env bash
# 14-tenant-flood: one tenant floods 20,000 executions of `hello`, five others invoke 50
# each after it (each tenant is a concurrency key); the task has max_running_per_key 100 and
# its queue fair share. Three towers drain the wave; two are SIGKILLed mid-wave and started
# again. Every execution completes exactly once; no tenant ever ran more than 100 at once
# (from the ledger's start/effect times); the small tenants are served at once instead of
# behind the flood: each of them is done before a fifth of the flood is.
set -uo pipefail
# shellcheck source=tests/e2e/lib/waves.sh
source "$(dirname "$0")/../lib/waves.sh"
# shellcheck source=tests/e2e/lib/towers.sh
source "$(dirname "$0")/../lib/towers.sh"
# shellcheck source=tests/e2e/lib/assertions.sh
source "$(dirname "$0")/../lib/assertions.sh"

FLOOD=20000
SMALL=50
PER_KEY=100

# invoke_tenant TENANT COUNT: COUNT executions of hello with concurrency key TENANT (and
# the tenant in the payload, so the ledger names it), in one invoke_batch under the shared
# database lock (no database restart cuts it in half), counted as a wave.
invoke_tenant() {
  local tenant=$1 count=$2 out rc=0
  out=$(db_lock_shared psql "$DATABASE_URL" -X -A -t -q -v ON_ERROR_STOP=1 -c "
    SELECT count(*) FROM pgconductor.invoke_batch(
             array_fill('hello'::text, ARRAY[$count]),
             array_fill(jsonb_build_object('sleep', 0, 'tenant', '$tenant'), ARRAY[$count]),
             p_concurrency_keys => array_fill('$tenant'::text, ARRAY[$count]))" 2>&1) || rc=$?
  if [ "$rc" != 0 ] || [ "$out" != "$count" ]; then
    e2e_fail "invoke of $count x hello for $tenant failed (exit $rc): $out"
  fi
  echo "hello $count -" >>"$E2E_WORK/waves"
  [ -f "$E2E_WORK/wave-started" ] || e2e_now >"$E2E_WORK/wave-started"
  e2e_log "wave: $count x hello for tenant $tenant"
}

# flood_done_at_least N: SQL true once N of the flood have completed.
flood_done_at_least() {
  echo "SELECT count(*) >= $1 FROM pgconductor.finished_executions WHERE payload->>'tenant' = 'flood'"
}

setup_test_db
# Set in SQL before any tower runs: a tower declaring `hello` at start keeps it.
q "SELECT pgconductor.declare_task('hello', '{\"max_running_per_key\": $PER_KEY}')" >/dev/null ||
  e2e_fail "could not set the per-key limit"
q "SELECT pgconductor.set_fair_share('default', true)" >/dev/null || e2e_fail "could not turn fair share on"

invoke_tenant flood "$FLOOD"
for t in 1 2 3 4 5; do invoke_tenant "small-$t" "$SMALL"; done

chaos_start  # after the invokes: psql does not retry one cut short
setup_towers "alpha --concurrency=50" "bravo --concurrency=50" "charlie --concurrency=50"
assert_sql "the towers' declaration kept the per-key limit" \
  "SELECT max_running_per_key FROM pgconductor.tasks WHERE key = 'hello'" "$PER_KEY"

wait_for "$(flood_done_at_least 4000)" --timeout=30s --what="4000 flood executions done"
kill_tower alpha
start_tower alpha
wait_for "$(flood_done_at_least 10000)" --timeout=30s --what="10000 flood executions done"
kill_tower bravo
start_tower bravo
wait_for_wave_completion --timeout=45s

assert_all_completed
assert_no_failures
assert_sql "every execution completed exactly once, with its side effect" "
  SELECT (SELECT count(*) FROM pgconductor.finished_executions WHERE state = 'completed')
         || '|' || (SELECT count(DISTINCT execution_id) FROM e2e.ledger WHERE kind = 'effect')" \
  "$((FLOOD + 5 * SMALL))|$((FLOOD + 5 * SMALL))"
# Runs that reached their effect ran inside their claim, so at most PER_KEY of one tenant
# overlap at any moment (the start of a run counts against the runs already going).
assert_sql "no tenant ever ran more than $PER_KEY at once" "
  WITH runs AS (
    SELECT s.payload->>'tenant' AS tenant, s.at AS started, e.at AS ended
      FROM e2e.ledger s JOIN e2e.ledger e ON e.run_id = s.run_id AND e.kind = 'effect'
     WHERE s.kind = 'start'),
  edges AS (
    SELECT tenant, started AS at, 1 AS d FROM runs UNION ALL SELECT tenant, ended, -1 FROM runs),
  level AS (
    SELECT tenant, sum(d) OVER (PARTITION BY tenant ORDER BY at, d ROWS UNBOUNDED PRECEDING) AS n FROM edges)
  SELECT max(n) <= $PER_KEY FROM level" t
peak=$(q "WITH runs AS (
    SELECT s.at AS started, e.at AS ended
      FROM e2e.ledger s JOIN e2e.ledger e ON e.run_id = s.run_id AND e.kind = 'effect'
     WHERE s.kind = 'start' AND s.payload->>'tenant' = 'flood'),
  edges AS (SELECT started AS at, 1 AS d FROM runs UNION ALL SELECT ended, -1 FROM runs)
  SELECT max(n) FROM (SELECT sum(d) OVER (ORDER BY at, d ROWS UNBOUNDED PRECEDING) AS n FROM edges) AS x")
e2e_log "the flood ran at most $peak at once (limit $PER_KEY, 150 slots)"
if [ "$E2E_CHAOS" != 1 ]; then
  assert_sql "each small tenant was done before a fifth of the flood was" "
    SELECT string_agg(s.tenant || '=' || ((
             SELECT count(*) FROM pgconductor.finished_executions f
              WHERE f.payload->>'tenant' = 'flood' AND f.finished_at <= s.done) * 5 < $FLOOD)::text, ','
             ORDER BY s.tenant)
      FROM (SELECT payload->>'tenant' AS tenant, max(finished_at) AS done FROM pgconductor.finished_executions
             WHERE payload->>'tenant' <> 'flood' GROUP BY 1) AS s" \
    "small-1=true,small-2=true,small-3=true,small-4=true,small-5=true"
fi
e2e_log "flood completions before the last small tenant was done: $(q "
  SELECT count(*) FROM pgconductor.finished_executions
   WHERE payload->>'tenant' = 'flood' AND finished_at <= (
         SELECT max(finished_at) FROM pgconductor.finished_executions WHERE payload->>'tenant' <> 'flood')") of $FLOOD"

teardown_towers alpha bravo charlie
