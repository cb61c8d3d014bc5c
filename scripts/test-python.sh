#!/usr/bin/env bash
# Run pytest on tests/python with DATABASE_URL exported (config: python/pyproject.toml).
# Exit status passes through, except pytest's 5 (no tests collected) when tests/python
# really holds no test files yet.
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
exec .venv/bin/pytest "${config[@]}" tests/python "$@"
