#!/usr/bin/env bash
# 10-cancel: `pgconductor cancel` of a running 60 s job: its handler stops within 3 s and the
# execution ends cancelled (no side effect), while the tower keeps serving other jobs. A
# pending (delayed) job is cancelled at once; `pgconductor retry` brings it back and it
# completes. Cancel of a finished or unknown id answers accordingly.
set -uo pipefail
# shellcheck source=tests/e2e/lib/waves.sh
source "$(dirname "$0")/../lib/waves.sh"
# shellcheck source=tests/e2e/lib/towers.sh
source "$(dirname "$0")/../lib/towers.sh"
# shellcheck source=tests/e2e/lib/assertions.sh
source "$(dirname "$0")/../lib/assertions.sh"

cli() { "$E2E_PGCONDUCTOR" "$@" 2>&1; }

setup_test_db
expect_outcome sleeper cancelled
setup_tower steady --concurrency=3
send_wave sleeper --count=1 --payload='{"sleep":60}'
long=$(last_execution_id)
wait_for "SELECT EXISTS (SELECT 1 FROM e2e.ledger WHERE execution_id = '$long' AND kind = 'start')" \
  --timeout=15s --what="the long job to start"
send_wave hello --count=30 --payload='{"sleep":0.05}'

started=$(e2e_now)
assert_eq "cancel of the running job" "$(cli cancel "$long")" cancelling
wait_for "SELECT EXISTS (SELECT 1 FROM pgconductor.finished_executions WHERE id = '$long')" \
  --timeout=10s --what="the cancelled job to finish"
took=$(e2e_elapsed_since "$started")
limit=3
[ "$E2E_CHAOS" = 1 ] && limit=$((E2E_STALE_AFTER + 10))
if e2e_lt "$took" "$limit"; then e2e_log "ok: cancelled ${took}s after the request"
else e2e_check_fail "the cancel took ${took}s (limit ${limit}s)"; fi
assert_sql "the long job ended cancelled" \
  "SELECT state FROM pgconductor.finished_executions WHERE id = '$long'" cancelled
assert_sql "its handler stopped without its side effect" \
  "SELECT count(*) FROM e2e.ledger WHERE execution_id = '$long' AND kind = 'effect'" 0
if [ "$E2E_CHAOS" != 1 ]; then
  assert_sql "its handler recorded the abort" \
    "SELECT count(*) FROM e2e.ledger WHERE execution_id = '$long' AND kind = 'aborted'" 1
fi

send_wave hello --count=1 --delay=600s --payload='{"later":true}'
later=$(last_execution_id)
assert_eq "cancel of a pending job" "$(cli cancel "$later")" cancelled
assert_sql "it is cancelled at once" "SELECT state FROM pgconductor.finished_executions WHERE id = '$later'" cancelled
assert_eq "cancel of a finished job" "$(cli cancel "$later")" already_finished
assert_eq "retry brings it back under the same id" "$(cli retry "$later")" "$later"
wait_for_wave_completion --timeout=30s
assert_sql "the retried job completed" "SELECT state FROM pgconductor.finished_executions WHERE id = '$later'" completed

unknown=00000000-0000-4000-8000-000000000000
out=$(cli cancel "$unknown")
rc=$?
assert_eq "cancel of an unknown id fails (exit 1)" "$rc" 1
case "$out" in *"not found"*) e2e_log "ok: unknown id reported ($out)" ;;
  *) e2e_check_fail "cancel of an unknown id said: $out" ;; esac

assert_all_completed
teardown_tower steady
