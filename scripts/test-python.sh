#!/usr/bin/env bash
# Run pytest with DATABASE_URL exported (config: python/pyproject.toml): first the unit layer
# with its coverage of the package (must stay above 90 %), then every layer that needs the
# database. Exit status passes through, except pytest's 5 (no tests collected) when
# tests/python really holds no test files yet.
#   scripts/test-python.sh [PYTEST ARGS]   (with args: one plain run of tests/python)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
. scripts/env.sh

count=$(find tests/python \( -name 'test_*.py' -o -name '*_test.py' \) 2>/dev/null | wc -l)
if [ "$count" -eq 0 ]; then
  echo "test-python: no test files in tests/python/ yet: nothing to run"
  exit 0
fi
[ -x .venv/bin/pytest ] || { echo "test-python: .venv/bin/pytest missing: run make deps" >&2; exit 1; }
config=()
[ -f python/pyproject.toml ] && config=(-c python/pyproject.toml --rootdir=.)
if [ $# -gt 0 ]; then exec .venv/bin/pytest "${config[@]}" tests/python "$@"; fi
echo "== unit layer, with coverage of python/pgconductor"
.venv/bin/pytest "${config[@]}" tests/python/unit -q -p no:cacheprovider \
  --cov=pgconductor --cov-config=python/pyproject.toml --cov-report=term:skip-covered --cov-fail-under=90
echo "== integration, upgrade and chaos layers (real PostgreSQL)"
exec .venv/bin/pytest "${config[@]}" tests/python --ignore=tests/python/unit -q -p no:cacheprovider
