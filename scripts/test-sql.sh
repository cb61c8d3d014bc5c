#!/usr/bin/env bash
# Run the pgTAP suite: every tests/sql/**/*.sql but setup.sql, through pg_prove, on a
# fresh database pgconductor_pgtap. Runs from the repo root: the tests `\i tests/sql/setup.sql`.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
. scripts/env.sh

mapfile -t files < <(find tests/sql -name '*.sql' ! -path tests/sql/setup.sql 2>/dev/null | LC_ALL=C sort)
if [ ${#files[@]} -eq 0 ]; then
  echo "test-sql: no test files in tests/sql/ yet: nothing to run"
  exit 0
fi
scripts/fresh-db.sh --pgtap pgconductor_pgtap >/dev/null
# pg_prove runs psql with -h/-p/-U/-d (PGPASSWORD, if any, comes from the environment).
pg_prove --ext .sql -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d pgconductor_pgtap "${files[@]}"
