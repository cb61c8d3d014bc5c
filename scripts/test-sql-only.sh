#!/usr/bin/env bash
# The pgTAP and integration layers on plain-SQL installs (`pgconductor schema install
# --sql-only`, as on managed Postgres without the extension's files) instead of CREATE
# EXTENSION: PGCONDUCTOR_TEST_SQL_ONLY=1 makes scripts/fresh-db.sh and
# tests/python/conftest.py install that way.
#   scripts/test-sql-only.sh [sql|python]   (default: both; PGCONDUCTOR_SQL_ONLY_FULL=1: every
#   integration file, not only those where the install matters)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
. scripts/env.sh
export PGCONDUCTOR_TEST_SQL_ONLY=1

case "${1:-all}" in
  all | sql | python) ;;
  *) echo "usage: $0 [sql|python]" >&2; exit 2 ;;
esac
# The whole integration layer runs on CREATE EXTENSION installs in test-python, and
# test_sql_only.py proves a plain-SQL install has the same catalog; here, by default, only the
# files where the install itself can matter (ownership, grants, roles, the installer, the
# client and the engine end to end). PGCONDUCTOR_SQL_ONLY_FULL=1 runs the whole layer.
integration=(tests/python/integration)
if [ "${PGCONDUCTOR_SQL_ONLY_FULL:-0}" != 1 ]; then
  integration=(tests/python/integration/test_sql_only.py tests/python/integration/test_roles.py
               tests/python/integration/test_db_client.py tests/python/integration/test_conductor.py
               tests/python/integration/test_flow_api.py)
fi
if [ "${1:-all}" != sql ]; then
  echo "== integration layer on plain-SQL installs (${#integration[@]} path(s))"
  .venv/bin/pytest -c python/pyproject.toml --rootdir=. "${integration[@]}" -q -p no:cacheprovider
fi
if [ "${1:-all}" != python ]; then
  echo "== pgTAP on a plain-SQL install"
  scripts/test-sql.sh
fi
