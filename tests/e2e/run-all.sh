#!/usr/bin/env bash
# Run every scenario (scenarios/NN-*.sh, in order):
#   tests/e2e/run-all.sh [--sdk=py] [--chaos]
# Prints one "PASS|FAIL name (jobs, seconds, kills, restarts)" line per scenario and a last
# line "N passed, M failed"; exits non-zero when one failed (see run-scenario.sh).
set -uo pipefail
root=$(cd "$(dirname "$0")" && pwd)
for arg in "$@"; do
  case "$arg" in
    --sdk=* | --chaos) ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "usage: $0 [--sdk=py] [--chaos]" >&2; exit 2 ;;
  esac
done
exec "$root/run-scenario.sh" "$root"/scenarios/[0-9][0-9]-*.sh "$@"
