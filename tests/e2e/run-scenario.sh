#!/usr/bin/env bash
# Run tower-defense scenarios and print one line per scenario plus a total:
#
#   tests/e2e/run-scenario.sh SCENARIO... [--sdk=py] [--chaos]
#
#   PASS 01-basic-wave (100 jobs, 3.1s, 0 kills, 0 restarts)
#   FAIL 04-tower-crash (60 jobs, 12.0s, 1 kills, 0 restarts)
#     <why, indented; the logs stay in the directory named>
#   1 passed, 1 failed
#
# SCENARIO: a file (scenarios/01-basic-wave.sh), a name (01-basic-wave) or its number (01).
# Each scenario runs in its own process on its own fresh database; afterwards this runner
# stops any tower still running and checks the invariants (lib/assertions.sh
# check_invariants). kills = SIGKILLs of towers, restarts = database restarts (with --chaos
# a line before the total also counts connection cuts).
# Exit status: 0 when all passed, 1 when one failed, 2 on a usage error.
# Environment: DATABASE_URL (use that server; else a private cluster on port E2E_PGPORT,
# default 55440, that may be restarted), E2E_KEEP=1 (keep work dirs and databases),
# E2E_SCENARIO_TIMEOUT (seconds, default 150, with --chaos 420).
set -uo pipefail

E2E_ROOT=$(cd "$(dirname "$0")" && pwd)
SDKS=(py)

usage() { echo "usage: $0 SCENARIO... [--sdk=py] [--chaos]" >&2; exit 2; }

sdk=py chaos=0 scenarios=()
for arg in "$@"; do
  case "$arg" in
    --sdk=*) sdk=${arg#--sdk=} ;;
    --sdk) echo "--sdk needs a value: --sdk=py" >&2; exit 2 ;;
    --chaos) chaos=1 ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    -*) echo "unknown option: $arg" >&2; usage ;;
    *) scenarios+=("$arg") ;;
  esac
done
if [[ " ${SDKS[*]} " != *" $sdk "* ]]; then
  echo "no such SDK: $sdk (available: ${SDKS[*]})"
  exit 2
fi
[ ${#scenarios[@]} -gt 0 ] || usage

# resolve SCENARIO: print the scenario file, or nothing.
resolve() {
  local s=$1 f
  if [ -f "$s" ]; then echo "$s"; return; fi
  s=$(basename "$s" .sh)
  for f in "$E2E_ROOT/scenarios/$s.sh" "$E2E_ROOT"/scenarios/"$s"-*.sh; do
    [ -f "$f" ] && { echo "$f"; return; }
  done
}
files=()
for s in "${scenarios[@]}"; do
  f=$(resolve "$s")
  [ -n "$f" ] || { echo "no such scenario: $s (see $E2E_ROOT/scenarios)" >&2; exit 2; }
  files+=("$f")
done

RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/pgc-e2e.XXXXXX")
export E2E_ROOT E2E_SDK=$sdk E2E_CHAOS=$chaos E2E_SCENARIO=runner E2E_WORK=$RUN_DIR/runner
# shellcheck source=tests/e2e/lib/assertions.sh
. "$E2E_ROOT/lib/assertions.sh"
# shellcheck source=tests/e2e/lib/waves.sh
. "$E2E_ROOT/lib/waves.sh"
if [ "$chaos" = 1 ]; then
  timeout_s=${E2E_SCENARIO_TIMEOUT:-420}
  echo "chaos mode: towers SIGKILLed and restarted at random, connections cut$([ "$E2E_PRIVATE" = 1 ] && echo ', database restarted now and then' || echo ' (no database restarts: DATABASE_URL is not the private cluster)')"
else
  timeout_s=${E2E_SCENARIO_TIMEOUT:-150}
fi

passed=0 failed=0 total_kills=0 total_restarts=0 total_cuts=0
for f in "${files[@]}"; do
  name=$(basename "$f" .sh)
  export E2E_SCENARIO=$name E2E_WORK=$RUN_DIR/$name
  mkdir -p "$E2E_WORK/towers"
  touch "$E2E_WORK/events" "$E2E_WORK/waves" "$E2E_WORK/expect" "$E2E_WORK/failures"
  log=$E2E_WORK/scenario.log
  started=$(e2e_now)
  rc=0
  ( unset DATABASE_URL; exec timeout -k 10 "$timeout_s" bash "$f" ) >"$log" 2>&1 || rc=$?
  [ "$rc" = 124 ] && e2e_check_fail "scenario timed out after ${timeout_s}s" 2>>"$log"
  [ "$rc" != 0 ] && [ ! -s "$E2E_WORK/failures" ] && e2e_check_fail "scenario exited with status $rc" 2>>"$log"
  # Whatever the scenario left behind: the monkey, towers (a timeout skips its EXIT trap).
  { chaos_stop; stop_all_towers; } 2>>"$log"
  if [ -s "$E2E_WORK/dburl" ]; then
    DATABASE_URL=$(cat "$E2E_WORK/dburl")
    export DATABASE_URL
    check_invariants >>"$log" 2>&1
  else
    e2e_check_fail "the scenario made no database (setup_test_db), so nothing could be checked" 2>>"$log"
  fi
  secs=$(e2e_elapsed_since "$started")
  total_kills=$((total_kills + $(e2e_count_events kill)))
  total_restarts=$((total_restarts + $(e2e_count_events db-restart)))
  total_cuts=$((total_cuts + $(e2e_count_events cut)))
  stats="$(invoked_count "") jobs, ${secs}s, $(e2e_count_events kill) kills, $(e2e_count_events db-restart) restarts"
  if [ -s "$E2E_WORK/failures" ]; then
    failed=$((failed + 1))
    echo "FAIL $name ($stats)"
    sed 's/^/  /' "$E2E_WORK/failures" | head -n 60
    echo "  logs: $E2E_WORK (scenario.log, towers/*/log)"
  else
    passed=$((passed + 1))
    echo "PASS $name ($stats)"
    if [ "${E2E_KEEP:-0}" != 1 ]; then
      [ -s "$E2E_WORK/dbname" ] && q_admin "DROP DATABASE IF EXISTS \"$(cat "$E2E_WORK/dbname")\" WITH (FORCE)" >/dev/null 2>&1
      rm -rf "$E2E_WORK"
    fi
  fi
  unset DATABASE_URL
done
if [ "$failed" = 0 ] && [ "${E2E_KEEP:-0}" != 1 ]; then
  rm -rf "$RUN_DIR"
  # A cluster this run started goes away with it (a failed run keeps it for inspection).
  if [ "${E2E_STARTED_CLUSTER:-0}" = 1 ]; then
    PGPORT=$E2E_PGPORT bash "$E2E_REPO/scripts/cluster.sh" stop >/dev/null 2>&1
  fi
fi
if [ "$chaos" = 1 ]; then
  echo "chaos in all: $total_kills tower kills, $total_restarts database restarts, $total_cuts connection cuts"
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
