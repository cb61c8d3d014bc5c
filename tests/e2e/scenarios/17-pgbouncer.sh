#!/usr/bin/env bash
# 17-pgbouncer: towers behind PgBouncer in transaction mode, with ONE server connection for
# every client (so every transaction of both towers and the CLI shares one session). Both towers reach the database only through the pooler (URL option
# ?pooler=transaction: no prepared statements); "listener" also LISTENs over a direct URL,
# "poller" has none and polls. Waves go through the pooler too (the CLI). One wave, a kill of
# the poller mid-wave (the listener recovers its work, through the pooler), a wave of sync
# jobs that jumps the queue: all complete once, no prepared-statement error in any log, and
# the pooler had more clients than server sessions (they really were shared). Under --chaos
# the monkey does the killing.
set -uo pipefail
# shellcheck source=tests/e2e/lib/waves.sh
source "$(dirname "$0")/../lib/waves.sh"
# shellcheck source=tests/e2e/lib/towers.sh
source "$(dirname "$0")/../lib/towers.sh"
# shellcheck source=tests/e2e/lib/assertions.sh
source "$(dirname "$0")/../lib/assertions.sh"
# shellcheck source=tests/e2e/lib/pgbouncer.sh
source "$(dirname "$0")/../lib/pgbouncer.sh"

setup_test_db
direct=$DATABASE_URL
pgbouncer_start --pool-size=1
pooled="$PGBOUNCER_URL?pooler=transaction"

setup_tower listener --concurrency=8 --stale-after=3s --env="DATABASE_URL=$pooled" \
  --env="PGCONDUCTOR_LISTEN_URL=$direct" --env="E2E_LEDGER_URL=$direct"
setup_tower poller --concurrency=8 --stale-after=3s --env="DATABASE_URL=$pooled" \
  --env="E2E_LEDGER_URL=$direct"

send_wave hello --count=400 --payload='{"wave":"a","sleep":0.2}' --database-url="$pooled"
wait_for "SELECT count(DISTINCT tower) = 2 FROM e2e.ledger WHERE kind = 'effect'" --timeout=20s \
  --what="both towers at work"
wait_for "SELECT count(*) = 1 FROM pg_stat_activity
           WHERE datname = current_database() AND application_name = 'pgconductor-notifier'" \
  --timeout=10s --what="the listener's LISTEN connection (direct), and only that one"
clients=$(pgbouncer_show clients)
servers=$(pgbouncer_show servers)
e2e_log "pgbouncer mid-wave: $clients client connection(s), $servers server connection(s)"
if [ "$servers" -gt 1 ]; then
  e2e_check_fail "expected one server connection at most: $servers"
fi
if [ "$E2E_CHAOS" != 1 ]; then
  [ "$clients" -ge 2 ] || e2e_check_fail "expected both towers' connections on the pooler: $clients clients"
  wait_for "SELECT count(*) > 0 FROM pgconductor.executions e JOIN pgconductor.orchestrators o ON o.id = e.locked_by
             WHERE o.info->>'pid' = '$(tower_pid poller)'" --timeout=10s --what="jobs running on the poller"
  kill_tower poller
fi
send_wave hello-sync --count=60 --priority=-1 --payload='{"wave":"b","sleep":0.01}' \
  --database-url="$pooled"
wait_for_wave_completion --timeout=60s
[ "$E2E_CHAOS" = 1 ] || start_tower poller
# 200 x 0.1 s on 8 slots is 2.5 s for one tower: the restarted poller's first polls find work.
send_wave hello --count=200 --payload='{"wave":"c","sleep":0.1}' --database-url="$pooled"
wait_for_wave_completion --timeout=30s

assert_all_completed
assert_no_failures
if [ "$E2E_CHAOS" != 1 ]; then
  assert_sql "wave c ran on both towers" "
    SELECT count(DISTINCT tower) FROM e2e.ledger WHERE kind = 'effect' AND payload->>'wave' = 'c'" 2
fi
assert_eq "prepared-statement errors in the tower logs" \
  "$(cat "$E2E_WORK"/towers/*/log | grep -c 'prepared statement')" 0
assert_eq "every poller process said it polls (no LISTEN over the pooler)" \
  "$(grep -c 'no LISTEN connection (no direct URL to LISTEN on)' "$E2E_WORK/towers/poller/log")" \
  "$(grep -c 'start of a new process' "$E2E_WORK/towers/poller/log")"

teardown_towers listener poller
