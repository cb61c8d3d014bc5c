#!/usr/bin/env bash
# The main demo (`make demo`): a round trip in psql, then a real run: worker processes
# started with the CLI, a wave of executions invoked with a progress bar, throughput and
# a status table. Uses DATABASE_URL's server or the private cluster (scripts/env.sh).
#   scripts/demo.sh [JOBS] [WORKERS]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
. scripts/env.sh

jobs=${1:-${DEMO_JOBS:-20000}}
workers=${2:-${DEMO_WORKERS:-2}}
url=$(scripts/fresh-db.sh pgconductor_demo)
export DATABASE_URL=$url
cli=.venv/bin/pgconductor
logdir=$(mktemp -d "${TMPDIR:-/tmp}/pgconductor-demo.XXXXXX")
pids=()

# stop_workers: SIGTERM every worker and wait for it (graceful drain).
stop_workers() {
  [ ${#pids[@]} -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null && wait "${pids[@]}" 2>/dev/null
  pids=()
}
trap stop_workers EXIT

# q SQL: one value from the demo database.
q() { psql "$url" -X -A -t -q -c "$1"; }

echo "== Part 1: the SQL API by hand (invoke -> claim -> complete)"
psql "$url" -X -q -v ON_ERROR_STOP=1 -f scripts/demo-roundtrip.sql

echo
echo "== Part 2: $workers worker processes, $jobs executions"
for i in $(seq 1 "$workers"); do
  "$cli" worker start --app demo.app:conductor --queue demo --concurrency 100 \
    >"$logdir/worker-$i.log" 2>&1 &
  pids+=($!)
done
# Wait until every worker has registered (its orchestrator row exists).
for _ in $(seq 1 100); do
  [ "$(q "SELECT count(*) FROM pgconductor.orchestrators WHERE stopped_at IS NULL")" -ge "$workers" ] && break
  sleep 0.1
done
echo "workers up (logs in $logdir)"

start=$(date +%s.%N)
"$cli" invoke demo.resize --payload '{"image": 1}' --count "$jobs"
# Wait until nothing is live (all finished), printing progress once a second.
while :; do
  live=$(q "SELECT count(*) FROM pgconductor.executions")
  done_=$(q "SELECT count(*) FROM pgconductor.finished_executions WHERE task_key = 'demo.resize'")
  printf '\r  finished %6d / %d   live %6d' "$done_" "$jobs" "$live"
  [ "$live" -eq 0 ] && [ "$done_" -ge "$jobs" ] && break
  sleep 1
done
end=$(date +%s.%N)
echo
completed=$(q "SELECT count(*) FROM pgconductor.finished_executions WHERE task_key = 'demo.resize' AND state = 'completed'")
rate=$(q "SELECT round(count(*) / extract(epoch FROM max(finished_at) - min(created_at))) FROM pgconductor.finished_executions WHERE task_key = 'demo.resize'")
printf '\n%s of %s executions completed in %.1f s wall time (invoke included); %s executions/s from first enqueue to last completion\n\n' \
  "$completed" "$jobs" "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" "$rate"
"$cli" status
stop_workers
[ "$completed" -eq "$jobs" ] || { echo "demo: only $completed of $jobs completed" >&2; exit 1; }
