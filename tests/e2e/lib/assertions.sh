# shellcheck shell=bash
# tests/e2e/lib/assertions.sh: victory conditions. A failed assertion is recorded and the
# scenario goes on (it ends FAIL); see e2e_check_fail.
#
#   assert_all_completed            no live execution; every finished one in its intended state
#   assert_no_failures              no execution meant to complete failed, was cancelled or
#                                   had a run that failed on purpose
#   assert_execution_time_under 30s first invoke to last finish (database clock)
#   assert_eq WHAT ACTUAL EXPECTED  assert_sql WHAT SQL EXPECTED
#   check_invariants                the checks every scenario ends with (run-scenario.sh)

[ -n "${_E2E_ASSERTIONS_SH:-}" ] && return 0
_E2E_ASSERTIONS_SH=1
# shellcheck source=tests/e2e/lib/db.sh
. "$(dirname "${BASH_SOURCE[0]}")/db.sh"
# shellcheck source=tests/e2e/lib/chaos.sh
. "$(dirname "${BASH_SOURCE[0]}")/chaos.sh"

# assert_eq WHAT ACTUAL EXPECTED
assert_eq() {
  if [ "$2" = "$3" ]; then
    e2e_log "ok: $1 ($2)"
  else
    e2e_check_fail "$1: got '$2', expected '$3'"
  fi
}

# assert_sql WHAT SQL EXPECTED: SQL's output must equal EXPECTED.
assert_sql() {
  local out
  out=$(q "$2" 2>&1) || { e2e_check_fail "$1: query failed: $out"; return 0; }
  assert_eq "$1" "$out" "$3"
}

# _setup_sql: temp tables the checks join: expectations, invoked counts, killed pids.
# Chaos mode excuses one thing only: an execution meant to complete that ended failed
# because SIGKILLs ate its last attempts (recovery's "lost" error, naming a killed tower).
_setup_sql() {
  local kind key state t n when pid
  echo "SET client_min_messages = warning;"
  echo "CREATE TEMP TABLE x_expect (kind text, key text, state text);"
  while read -r kind key state; do
    [ -n "$kind" ] && echo "INSERT INTO x_expect VALUES ('$kind', '$key', '$state');"
  done <"$E2E_WORK/expect"
  echo "CREATE TEMP TABLE x_invoked (task_key text PRIMARY KEY, n bigint);"
  awk '{ n[$1] += $2 } END { for (t in n) print t, n[t] }' "$E2E_WORK/waves" |
    while read -r t n; do echo "INSERT INTO x_invoked VALUES ('$t', $n);"; done
  echo "CREATE TEMP TABLE x_killed (pid integer, killed_at timestamptz);"
  # Only kills by the scenario or the chaos monkey count, not a forced kill at teardown.
  while read -r when kind _ pid; do
    [ "$kind" = kill ] && echo "INSERT INTO x_killed VALUES ($pid, to_timestamp($when));"
  done <"$E2E_WORK/events"
  cat <<SQL
CREATE TEMP VIEW x_fin AS
SELECT f.*, coalesce(
         (SELECT x.state FROM x_expect x WHERE x.kind = 'execution' AND x.key = f.id::text LIMIT 1),
         (SELECT x.state FROM x_expect x WHERE x.kind = 'task' AND x.key = f.task_key LIMIT 1),
         'completed') AS expected,
       (SELECT (o.info->>'pid')::int FROM pgconductor.orchestrators o WHERE o.id = f.orchestrator_id) AS holder_pid
  FROM pgconductor.finished_executions f;
CREATE TEMP VIEW x_excused AS
SELECT f.id FROM x_fin f
 WHERE $E2E_CHAOS = 1 AND f.expected = 'completed' AND f.state = 'failed'
   AND f.last_error ~ '^attempt [0-9]+ of [0-9]+ lost: orchestrator '
   AND EXISTS (SELECT 1 FROM pgconductor.orchestrators o JOIN x_killed k ON k.pid = (o.info->>'pid')::int
                WHERE o.id::text = substring(f.last_error FROM 'orchestrator ([0-9a-f-]{36})'));
SQL
}

# _query_with_setup SQL: run SQL after _setup_sql, in one session.
_query_with_setup() {
  { _setup_sql; printf '%s\n' "$1"; } >"$E2E_WORK/check.sql"
  q_file "$E2E_WORK/check.sql"
}

# _check NAME SQL: SQL returns one line per violation (empty: the invariant holds).
_check() {
  local name=$1 sql=$2 out
  out=$(_query_with_setup "$sql" 2>&1) || {
    e2e_check_fail "invariant $name: query failed: $out"
    return 0
  }
  if [ -n "$out" ]; then
    e2e_check_fail "invariant $name violated:
$(printf '%s\n' "$out" | head -n 12 | sed 's/^/    /')"
  else
    _INVARIANTS_OK=$((${_INVARIANTS_OK:-0} + 1))
  fi
}

# assert_all_completed: nothing live, and every finished execution in its intended state.
assert_all_completed() {
  local out
  out=$(q "SELECT count(*) FROM pgconductor.executions")
  assert_eq "no live executions left" "$out" 0
  out=$(_query_with_setup "SELECT count(*) FROM x_fin f WHERE f.state <> f.expected
                              AND f.id NOT IN (SELECT id FROM x_excused);")
  assert_eq "every execution ended in its intended state" "$out" 0
  out=$(q "SELECT count(*) FROM pgconductor.finished_executions")
  assert_eq "every invoked execution finished" "$out" "$(invoked_count)"
}

# assert_no_failures: executions meant to complete never failed on purpose, and none of
# them ended failed or cancelled (chaos: except those excused above).
assert_no_failures() {
  local out
  out=$(_query_with_setup "
SELECT (SELECT count(*) FROM x_fin f WHERE f.expected = 'completed' AND f.state <> 'completed'
          AND f.id NOT IN (SELECT id FROM x_excused))
     + (SELECT count(*) FROM e2e.ledger l JOIN x_fin f ON f.id = l.execution_id
         WHERE l.kind = 'fail' AND f.expected = 'completed');")
  assert_eq "no failures among executions meant to complete" "$out" 0
}

# assert_execution_time_under 30s: from the first invoke to the last finish.
assert_execution_time_under() {
  local limit took
  limit=$(e2e_seconds "$1")
  took=$(q "SELECT round(extract(epoch FROM max(finished_at) - min(created_at))::numeric, 2)
              FROM pgconductor.finished_executions")
  if [ -n "$took" ] && e2e_lt "$took" "$limit"; then
    e2e_log "ok: executed in ${took}s (< ${limit}s)"
  else
    e2e_check_fail "execution took ${took:-?}s, limit ${limit}s"
  fi
}

# check_invariants: what must hold at the end of every scenario, whatever it did. Prints
# "invariants: N checks passed" (violations are recorded as failures).
check_invariants() {
  _INVARIANTS_OK=0
  _check "nothing-live" "
SELECT format('execution %s (%s) still live: attempts=%s locked_by=%s run_at=%s (%s live in all)',
              e.id, e.task_key, e.attempts, coalesce(e.locked_by::text, '-'), e.run_at, count(*) OVER ())
  FROM pgconductor.executions e ORDER BY e.run_at LIMIT 5;"
  _check "nothing-locked" "
SELECT format('execution %s (%s) still locked by %s', e.id, e.task_key, e.locked_by)
  FROM pgconductor.executions e WHERE e.locked_by IS NOT NULL LIMIT 5;"
  _check "none-lost" "
WITH fin AS (SELECT task_key, count(*) AS n FROM pgconductor.finished_executions GROUP BY 1),
     live AS (SELECT task_key, count(*) AS n FROM pgconductor.executions GROUP BY 1)
SELECT format('task %s: invoked %s, finished %s, still live %s', coalesce(i.task_key, f.task_key),
              coalesce(i.n, 0), coalesce(f.n, 0), coalesce(l.n, 0))
  FROM x_invoked i FULL JOIN fin f ON f.task_key = i.task_key LEFT JOIN live l ON l.task_key = coalesce(i.task_key, f.task_key)
 WHERE coalesce(i.n, 0) <> coalesce(f.n, 0);"
  _check "intended-states" "
SELECT format('execution %s (%s) ended %s, meant to end %s (attempts %s, last error: %s)',
              f.id, f.task_key, f.state, f.expected, f.attempts, left(coalesce(f.last_error, '-'), 200))
  FROM x_fin f WHERE f.state <> f.expected AND f.id NOT IN (SELECT id FROM x_excused) LIMIT 10;"
  # No stale completion: the result SQL applied is the one of the run that holds the final
  # lease (its attempt, its tower) and whose effect was recorded before the completion; no
  # run ever started with a later attempt.
  _check "no-stale-completion" "
SELECT format('execution %s (%s): completion names run %s (attempt %s), but %s', f.id, f.task_key,
              f.result->>'run_id', f.result->>'attempt', problem)
  FROM x_fin f
  CROSS JOIN LATERAL (
    SELECT CASE
      WHEN f.result->>'run_id' IS NULL THEN 'the result names no run'
      WHEN e.run_id IS NULL THEN 'that run recorded no effect'
      WHEN e.attempt <> f.attempts THEN format('the execution ended at attempt %s', f.attempts)
      WHEN e.pid IS DISTINCT FROM f.holder_pid THEN format('the effect came from pid %s, the lease holder was pid %s', e.pid, f.holder_pid)
      -- (a completion under a faked database clock, hours away, cannot be compared)
      WHEN e.at > f.finished_at AND e.at - f.finished_at < interval '1 hour'
        THEN 'its effect was recorded after the completion'
    END AS problem
      FROM (SELECT 1) AS one
      LEFT JOIN e2e.ledger e ON e.kind = 'effect' AND e.execution_id = f.id AND e.run_id::text = f.result->>'run_id'
  ) AS c
 WHERE f.state = 'completed' AND c.problem IS NOT NULL
UNION ALL
SELECT format('execution %s (%s) ended at attempt %s but a run of attempt %s started', f.id, f.task_key, f.attempts, max(l.attempt))
  FROM x_fin f JOIN e2e.ledger l ON l.execution_id = f.id AND l.kind = 'start'
 GROUP BY f.id, f.task_key, f.attempts HAVING max(l.attempt) > f.attempts
 LIMIT 10;"
  # A side effect more than once only where a run's tower was SIGKILLed after the effect (it
  # died before reporting). For a completed execution every effect but the completing run's
  # must be such a run, of an earlier attempt; for a failed or cancelled one, every effect.
  _check "no-duplicate-effects" "
SELECT format('execution %s (%s, %s): side effect of run %s (attempt %s, tower %s, pid %s) is a duplicate: %s',
              f.id, f.task_key, f.state, e.run_id, e.attempt, e.tower, e.pid,
              CASE WHEN k.pid IS NULL THEN 'that tower was not killed'
                   WHEN k.killed_at < e.at - interval '1 second' THEN 'it was recorded after the kill'
                   ELSE format('its attempt is not earlier than the completing one (%s)', f.attempts) END)
  FROM x_fin f
  JOIN e2e.ledger e ON e.execution_id = f.id AND e.kind = 'effect'
  LEFT JOIN LATERAL (SELECT * FROM x_killed k WHERE k.pid = e.pid ORDER BY k.killed_at DESC LIMIT 1) AS k ON true
 WHERE (f.state <> 'completed' OR e.run_id::text IS DISTINCT FROM f.result->>'run_id')
   AND (k.pid IS NULL OR k.killed_at < e.at - interval '1 second'
        OR (f.state = 'completed' AND e.attempt >= f.attempts))
 LIMIT 10;"
  # A run on a tower that was never killed always ends in the ledger: effect, fail or aborted.
  _check "no-vanished-runs" "
SELECT format('run %s of execution %s (%s, attempt %s) on tower %s (pid %s) started but never ended',
              s.run_id, s.execution_id, s.task_key, s.attempt, s.tower, s.pid)
  FROM e2e.ledger s
 WHERE s.kind = 'start'
   AND NOT EXISTS (SELECT 1 FROM e2e.ledger e WHERE e.run_id = s.run_id AND e.kind <> 'start')
   AND NOT EXISTS (SELECT 1 FROM x_killed k WHERE k.pid = s.pid)
 LIMIT 10;"
  # Every orchestrator that was not killed left cleanly (release_orchestrator ran).
  _check "clean-exits" "
SELECT format('orchestrator %s (pid %s) was not killed but never stopped cleanly (expired_at %s)',
              o.id, o.info->>'pid', coalesce(o.expired_at::text, '-'))
  FROM pgconductor.orchestrators o
 WHERE o.stopped_at IS NULL AND NOT EXISTS (SELECT 1 FROM x_killed k WHERE k.pid = (o.info->>'pid')::int)
 LIMIT 10;"
  echo "invariants: ${_INVARIANTS_OK} of 8 checks passed"
}
