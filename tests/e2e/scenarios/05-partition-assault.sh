#!/usr/bin/env bash
# 05-partition-assault: 8 queues (8 partitions of pgconductor.executions) under fire at once;
# three towers serve overlapping subsets (north 1-4, south 5-8, middle 3-6). Every job runs
# on a tower that serves its queue; none is lost, none runs twice.
set -uo pipefail
# shellcheck source=tests/e2e/lib/waves.sh
source "$(dirname "$0")/../lib/waves.sh"
# shellcheck source=tests/e2e/lib/towers.sh
source "$(dirname "$0")/../lib/towers.sh"
# shellcheck source=tests/e2e/lib/assertions.sh
source "$(dirname "$0")/../lib/assertions.sh"

PER_QUEUE=25
setup_test_db
setup_towers "north --concurrency=3 --queue=assault-1 --queue=assault-2 --queue=assault-3 --queue=assault-4" \
  "south --concurrency=3 --queue=assault-5 --queue=assault-6 --queue=assault-7 --queue=assault-8" \
  "middle --concurrency=3 --queue=assault-3 --queue=assault-4 --queue=assault-5 --queue=assault-6"

# All eight waves at once.
chaos_start
pids=()
for i in 1 2 3 4 5 6 7 8; do
  send_wave "assault-$i" --count=$PER_QUEUE --payload="{\"queue\":$i,\"sleep\":0.05}" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || e2e_fail "a wave could not be sent"; done
wait_for_wave_completion --timeout=40s

assert_all_completed
assert_no_failures
assert_sql "8 queue partitions exist" "
  SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
   WHERE i.inhparent = 'pgconductor.executions'::regclass AND c.relname LIKE 'executions_assault-%$'" 8
assert_sql "every queue completed all its jobs, in its own queue" "
  SELECT string_agg(n::text, ',' ORDER BY queue) FROM (
    SELECT queue, count(*) AS n FROM pgconductor.finished_executions
     WHERE state = 'completed' AND queue = 'assault-' || substring(task_key FROM '[0-9]+$') GROUP BY queue) x" \
  "$PER_QUEUE,$PER_QUEUE,$PER_QUEUE,$PER_QUEUE,$PER_QUEUE,$PER_QUEUE,$PER_QUEUE,$PER_QUEUE"
assert_sql "every run happened on a tower that serves its queue" "
  SELECT count(*) FROM e2e.ledger l
   WHERE NOT (l.tower, l.queue) IN (VALUES
     ('north', 'assault-1'), ('north', 'assault-2'), ('north', 'assault-3'), ('north', 'assault-4'),
     ('south', 'assault-5'), ('south', 'assault-6'), ('south', 'assault-7'), ('south', 'assault-8'),
     ('middle', 'assault-3'), ('middle', 'assault-4'), ('middle', 'assault-5'), ('middle', 'assault-6'))" 0
# north alone serves assault-1/2, south alone assault-7/8; middle shares all its queues.
assert_sql "north and south did work" \
  "SELECT count(DISTINCT tower) FROM e2e.ledger WHERE kind = 'effect' AND tower IN ('north', 'south')" 2
e2e_log "shares: $(q "SELECT string_agg(tower || '=' || n, ' ' ORDER BY tower) FROM (
  SELECT tower, count(*) AS n FROM e2e.ledger WHERE kind = 'effect' GROUP BY 1) x")"

teardown_towers north south middle
