#!/usr/bin/env bash
# Lint everything that exists: shell scripts (bash -n, shellcheck), and the Python
# package (ruff check, ruff format --check, mypy --strict) once python/ is there.
set -euo pipefail
cd "$(dirname "$0")/.."

shell_files=(scripts/*.sh .ci/run bench/*.sh tests/e2e/*.sh tests/e2e/lib/*.sh tests/e2e/scenarios/*.sh)
for f in "${shell_files[@]}"; do bash -n "$f"; done
if command -v shellcheck >/dev/null; then
  shellcheck -x "${shell_files[@]}"  # tests/e2e/.shellcheckrc applies to its files
else
  echo "lint: shellcheck not installed (scripts/deps.sh installs it): skipped"
fi
echo "lint: shell ok (${#shell_files[@]} files)"

if [ ! -f python/pyproject.toml ]; then
  echo "lint: python/pyproject.toml not there yet: Python lint skipped"
  exit 0
fi
if [ ! -x .venv/bin/ruff ] || [ ! -x .venv/bin/mypy ]; then
  echo "lint: ruff/mypy missing in .venv: run make deps" >&2
  exit 1
fi
py_paths=(python tests/python tests/e2e/apps demo bench)
.venv/bin/ruff check --config python/pyproject.toml "${py_paths[@]}"
.venv/bin/ruff format --check --config python/pyproject.toml "${py_paths[@]}"
(cd python && ../.venv/bin/mypy --strict pgconductor)
MYPYPATH=python .venv/bin/mypy --strict tests/e2e/apps demo
echo "lint: python ok"
