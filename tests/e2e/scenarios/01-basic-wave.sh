#!/usr/bin/env bash
# 01-basic-wave: one tower, one wave of 100 simple jobs; all complete, none fail, fast.
set -uo pipefail
# shellcheck source=tests/e2e/lib/waves.sh
source "$(dirname "$0")/../lib/waves.sh"
# shellcheck source=tests/e2e/lib/towers.sh
source "$(dirname "$0")/../lib/towers.sh"
# shellcheck source=tests/e2e/lib/assertions.sh
source "$(dirname "$0")/../lib/assertions.sh"

# Setup
setup_test_db
setup_tower "worker-1" --concurrency=5

# Wave 1: 100 simple jobs
send_wave "hello" --count=100 --payload='{"msg":"hello"}'

# Wait for completion
wait_for_wave_completion --timeout=30s

# Assertions
assert_all_completed
assert_no_failures
assert_execution_time_under 30s
assert_sql "every job ran on worker-1" \
  "SELECT count(DISTINCT execution_id) FROM e2e.ledger WHERE kind = 'effect' AND tower = 'worker-1'" 100

# Teardown
teardown_tower "worker-1"
