#!/usr/bin/env bash
# The pgTAP and integration layers on plain-SQL installs (`pgconductor schema install
# --sql-only`, as on managed Postgres without the extension's files) instead of CREATE
# EXTENSION: PGCONDUCTOR_TEST_SQL_ONLY=1 makes scripts/fresh-db.sh and
# tests/python/conftest.py install that way.
#   scripts/test-sql-only.sh [sql|python]   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
. scripts/env.sh
export PGCONDUCTOR_TEST_SQL_ONLY=1

case "${1:-all}" in
  all | sql | python) ;;
  *) echo "usage: $0 [sql|python]" >&2; exit 2 ;;
esac
if [ "${1:-all}" != sql ]; then
  echo "== integration layer on plain-SQL installs"
  .venv/bin/pytest -c python/pyproject.toml --rootdir=. tests/python/integration -q -p no:cacheprovider
fi
if [ "${1:-all}" != python ]; then
  echo "== pgTAP on a plain-SQL install"
  scripts/test-sql.sh
fi
