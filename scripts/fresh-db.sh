#!/usr/bin/env bash
# Recreate a test database and print its URL.
#   scripts/fresh-db.sh [--pgtap] NAME
# Drops NAME if it exists (even with open connections), creates it, runs
# CREATE EXTENSION pgconductor (and, with --pgtap, pgtap and "uuid-ossp"). With
# PGCONDUCTOR_TEST_SQL_ONLY=1, pgconductor comes from `pgconductor schema install --sql-only`
# instead (plain SQL, as on managed Postgres: scripts/test-sql-only.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
. scripts/env.sh

extensions=(pgconductor)
if [ "${1:-}" = --pgtap ]; then extensions+=(pgtap uuid-ossp); shift; fi
name=${1:?usage: $0 [--pgtap] NAME}

# admin SQL: run one statement on the server's own database, quietly.
admin() { PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 -c "$1" >/dev/null; }

admin "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)"
admin "CREATE DATABASE \"$name\""
url=$(pg_db_url "$name")
for ext in "${extensions[@]}"; do
  if [ "$ext" = pgconductor ] && [ "${PGCONDUCTOR_TEST_SQL_ONLY:-0}" = 1 ]; then
    .venv/bin/pgconductor schema install --sql-only --database-url "$url" >/dev/null
    continue
  fi
  psql "$url" -X -q -v ON_ERROR_STOP=1 -c "CREATE EXTENSION \"$ext\"" >/dev/null
done
echo "$url"
