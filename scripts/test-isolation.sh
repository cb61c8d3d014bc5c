#!/usr/bin/env bash
# Run the isolation specs (tests/isolation/specs/*.spec) with PGXS `make installcheck`
# (pg_isolation_regress), which recreates database pgconductor_isolation and loads the
# extension into it. Prints regression.diffs on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
. scripts/env.sh

shopt -s nullglob
specs=(tests/isolation/specs/*.spec)
if [ ${#specs[@]} -eq 0 ]; then
  echo "test-isolation: no specs in tests/isolation/specs/ yet: nothing to run"
  exit 0
fi
outdir=$PWD/tests/isolation/output_iso
rm -rf "$outdir"
if ! make --no-print-directory installcheck ISOLATION_OUTDIR="$outdir" \
     EXTRA_REGRESS_OPTS="--host=$PGHOST --port=$PGPORT --user=$PGUSER"; then
  [ -f "$outdir/regression.diffs" ] && cat "$outdir/regression.diffs"
  echo "test-isolation: FAILED (diffs: $outdir/regression.diffs)" >&2
  exit 1
fi
