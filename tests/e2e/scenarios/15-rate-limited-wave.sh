#!/usr/bin/env bash
# 15-rate-limited-wave: `hello` gets rate_limit 100 (per second: a token bucket of 100 that
# refills 100 a second), then a wave of 2,000 runs on three towers; one is SIGKILLed
# mid-wave and started again. Over every run in the ledger (the killed tower's included:
# each took a token when it was claimed): no calendar second saw more than rate + burst
# (200) starts, and the wave took at least as long as the rate allows ((runs - burst) /
# rate seconds, less half a second for the time between a claim and its handler's start).
# Every execution completed once, with its side effect.
set -uo pipefail
# shellcheck source=tests/e2e/lib/waves.sh
source "$(dirname "$0")/../lib/waves.sh"
# shellcheck source=tests/e2e/lib/towers.sh
source "$(dirname "$0")/../lib/towers.sh"
# shellcheck source=tests/e2e/lib/assertions.sh
source "$(dirname "$0")/../lib/assertions.sh"

RATE=100
WAVE=2000

setup_test_db
# Set in SQL before any tower runs: a tower declaring `hello` at start keeps it.
q "SELECT pgconductor.declare_task('hello', '{\"rate_limit\": $RATE}')" >/dev/null ||
  e2e_fail "could not set the rate limit"
setup_towers "alpha --concurrency=50" "bravo --concurrency=50" "charlie --concurrency=50"
assert_sql "the towers' declaration kept the rate limit" \
  "SELECT rate_limit || ' per ' || rate_period FROM pgconductor.tasks WHERE key = 'hello'" "$RATE per 00:00:01"

send_wave hello --count="$WAVE" --payload='{"sleep":0.02}'
wait_for "SELECT count(*) >= $((WAVE / 3)) FROM pgconductor.finished_executions" --timeout=30s \
  --what="a third of the wave done"
kill_tower bravo
start_tower bravo
wait_for_wave_completion --timeout=45s

assert_all_completed
assert_no_failures
assert_sql "every execution completed once, with its side effect" "
  SELECT (SELECT count(*) FROM pgconductor.finished_executions WHERE state = 'completed')
         || '|' || (SELECT count(DISTINCT execution_id) FROM e2e.ledger WHERE kind = 'effect')" "$WAVE|$WAVE"
busiest=$(q "SELECT date_trunc('second', at) || ' ' || count(*) FROM e2e.ledger WHERE kind = 'start'
              GROUP BY date_trunc('second', at) ORDER BY count(*) DESC LIMIT 1")
e2e_log "busiest second of starts: $busiest"
assert_sql "no second saw more than rate + burst ($((2 * RATE))) starts" "
  SELECT count(*) FROM (SELECT 1 FROM e2e.ledger WHERE kind = 'start'
                         GROUP BY date_trunc('second', at) HAVING count(*) > $((2 * RATE))) AS over" 0
read -r runs span < <(q "SELECT count(*), round(extract(epoch FROM max(at) - min(at))::numeric, 2)
                           FROM e2e.ledger WHERE kind = 'start'" | tr '|' ' ')
e2e_log "$runs runs started over ${span}s (rate $RATE/s, burst $RATE)"
assert_sql "the starts took at least (runs - burst) / rate seconds" \
  "SELECT $span >= ($runs - $RATE)::numeric / $RATE - 0.5" t

teardown_towers alpha bravo charlie
