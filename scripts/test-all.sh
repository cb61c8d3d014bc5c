#!/usr/bin/env bash
# make test: every step CI runs, in order, each a sub-make (each re-reads PGXS once deps
# installed it), with its time. Lint (mypy and ruff: CPU in the venv) runs beside the pgTAP
# steps (test-sql, test-isolation, the pgTAP half of test-sql-only: CPU in PostgreSQL), so
# on two cores it costs little wall time of its own; its output is printed when it ends.
# Stops at the first failed step.
#   scripts/test-all.sh [MAKE]
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
make_cmd=${1:-make}
t0=$(date +%s)

step() {
  local s
  s=$(date +%s)
  echo "==> make $1"
  $make_cmd --no-print-directory "$1" DB_PREREQS= || { echo "make test: FAILED at '$1'" >&2; exit 1; }
  echo "<== make $1: $(($(date +%s) - s))s"
}

# make test-sql-only in its two halves (scripts/test-sql-only.sh sql|python).
sql_only() {
  local s
  s=$(date +%s)
  echo "==> make test-sql-only ($1)"
  scripts/test-sql-only.sh "$1" || { echo "make test: FAILED at 'test-sql-only ($1)'" >&2; exit 1; }
  echo "<== make test-sql-only ($1): $(($(date +%s) - s))s"
}

for s in deps install db-up; do step "$s"; done

lint_log=$(mktemp)
lint_start=$(date +%s)
$make_cmd --no-print-directory lint >"$lint_log" 2>&1 &
lint_pid=$!
trap 'kill "$lint_pid" 2>/dev/null; rm -f "$lint_log"' EXIT
for s in check-frozen test-sql test-isolation; do step "$s"; done
sql_only sql
wait "$lint_pid"
lint_rc=$?
echo "==> make lint (ran beside the steps above)"
cat "$lint_log"
[ "$lint_rc" -eq 0 ] || { echo "make test: FAILED at 'lint'" >&2; exit 1; }
echo "<== make lint: $(($(date +%s) - lint_start))s"

step test-python
sql_only python
step test-e2e
echo "make test: OK in $(($(date +%s) - t0))s"
