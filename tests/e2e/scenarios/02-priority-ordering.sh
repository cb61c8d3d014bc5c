#!/usr/bin/env bash
# 02-priority-ordering: while no tower runs, a wave of low-priority jobs, then mid, then a
# few high-priority ones (lower number = higher priority). One tower with concurrency 1
# then starts: the ledger's start order is priority order (FIFO within a priority).
set -uo pipefail
# shellcheck source=tests/e2e/lib/waves.sh
source "$(dirname "$0")/../lib/waves.sh"
# shellcheck source=tests/e2e/lib/towers.sh
source "$(dirname "$0")/../lib/towers.sh"
# shellcheck source=tests/e2e/lib/assertions.sh
source "$(dirname "$0")/../lib/assertions.sh"

setup_test_db
send_wave hello --count=20 --priority=10 --payload='{"band":"low","sleep":0.01}'
send_wave hello --count=5 --priority=5 --payload='{"band":"mid","sleep":0.01}'
send_wave hello --count=5 --priority=1 --payload='{"band":"high","sleep":0.01}'
assert_sql "nothing ran before the tower started" "SELECT count(*) FROM e2e.ledger" 0

setup_tower solo --concurrency=1
wait_for_wave_completion --timeout=30s

assert_all_completed
assert_no_failures
# The first run of each execution, in ledger order (a re-run after a chaos kill keeps the
# place of its first run).
ORDER_SQL="WITH firsts AS (
  SELECT DISTINCT ON (l.execution_id) l.execution_id, l.seq FROM e2e.ledger l
   WHERE l.kind = 'start' ORDER BY l.execution_id, l.seq),
ordered AS (
  SELECT f.priority, f.payload->>'band' AS band, row_number() OVER (ORDER BY s.seq) AS n
    FROM firsts s JOIN pgconductor.finished_executions f ON f.id = s.execution_id)"
assert_sql "every execution started" "$ORDER_SQL SELECT count(*) FROM ordered" 30
assert_sql "no job started before a job of higher priority" \
  "$ORDER_SQL SELECT count(*) FROM ordered a JOIN ordered b ON b.n > a.n AND b.priority < a.priority" 0
assert_sql "start order by band" \
  "$ORDER_SQL SELECT string_agg(DISTINCT band || ':' || lo || '-' || hi, ' ') FROM (
     SELECT band, min(n) OVER (PARTITION BY band) AS lo, max(n) OVER (PARTITION BY band) AS hi FROM ordered) x" \
  "high:1-5 low:11-30 mid:6-10"
if [ "$E2E_CHAOS" != 1 ]; then
  # Concurrency 1: each run ended (effect) before the next one started.
  assert_sql "never two jobs at once on a tower of concurrency 1" "
    WITH runs AS (SELECT s.run_id, s.at AS started, e.at AS ended FROM e2e.ledger s
                    JOIN e2e.ledger e ON e.run_id = s.run_id AND e.kind = 'effect' WHERE s.kind = 'start')
    SELECT count(*) FROM runs a JOIN runs b ON a.run_id <> b.run_id
     WHERE b.started > a.started AND b.started < a.ended" 0
fi

teardown_tower solo
