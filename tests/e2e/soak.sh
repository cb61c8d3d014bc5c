#!/usr/bin/env bash
# soak: the long version (not in CI): E2E_SOAK_JOBS jobs (default 100000) sent in waves spread
# over E2E_SOAK_MINUTES minutes (default 5) to E2E_SOAK_TOWERS towers (default 4, concurrency
# 25 each); then everything must complete and every invariant hold. Run it through the runner,
# usually with --chaos and a long timeout:
#   E2E_SCENARIO_TIMEOUT=1800 tests/e2e/run-scenario.sh tests/e2e/soak.sh --sdk=py --chaos
set -uo pipefail
# shellcheck source=tests/e2e/lib/waves.sh
source "$(dirname "$0")/lib/waves.sh"
# shellcheck source=tests/e2e/lib/towers.sh
source "$(dirname "$0")/lib/towers.sh"
# shellcheck source=tests/e2e/lib/assertions.sh
source "$(dirname "$0")/lib/assertions.sh"

jobs=${E2E_SOAK_JOBS:-100000}
minutes=${E2E_SOAK_MINUTES:-5}
towers=${E2E_SOAK_TOWERS:-4}
every=5  # seconds between waves
waves=$(awk -v m="$minutes" -v e="$every" 'BEGIN { w = int(m * 60 / e); print (w < 1 ? 1 : w) }')
per_wave=$(((jobs + waves - 1) / waves))

setup_test_db pgc_e2e_soak
specs=()
for i in $(seq "$towers"); do specs+=("soak-$i --concurrency=25 --fetch-batch=25"); done
setup_towers "${specs[@]}"

started=$(e2e_now)
sent=0
while [ "$sent" -lt "$jobs" ]; do
  n=$((jobs - sent < per_wave ? jobs - sent : per_wave))
  wave_at=$(e2e_now)
  send_wave hello --count="$n" --payload='{"sleep":0}'
  sent=$((sent + n))
  e2e_log "soak: $sent of $jobs sent, $(q "SELECT count(*) FROM pgconductor.finished_executions") finished"
  rest=$(awk -v a="$wave_at" -v b="$(e2e_now)" -v e="$every" 'BEGIN { r = e - (b - a); printf "%.2f", (r > 0 ? r : 0) }')
  [ "$sent" -lt "$jobs" ] && sleep "$rest"
done
wait_for_wave_completion --timeout=900s
took=$(e2e_elapsed_since "$started")
e2e_log "soak: $jobs jobs in ${took}s ($(awk -v j="$jobs" -v t="$took" 'BEGIN { printf "%.0f", j / t }') jobs/s overall)"

assert_all_completed
assert_no_failures
teardown_all_towers
