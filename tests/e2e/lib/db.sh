# shellcheck shell=bash
# tests/e2e/lib/db.sh: the environment of a scenario, logging and failure recording, psql
# wrappers that survive a database restart, and `setup_test_db`.
#
# Sourced by the other lib files (and so by every scenario). Variables (the runner sets them;
# a scenario run on its own gets the same defaults):
#   E2E_ROOT        tests/e2e                      E2E_REPO      the repository root
#   E2E_WORK        this scenario's scratch dir    E2E_SCENARIO  its name (01-basic-wave)
#   E2E_SDK         py                             E2E_CHAOS     1 with --chaos, else 0
#   E2E_PGCONDUCTOR the CLI (default .venv/bin/pgconductor, else pgconductor on PATH)
#   E2E_ADMIN_URL   the server's URL (DATABASE_URL as the user gave it, or the private
#                   cluster's); DATABASE_URL is then the scenario's own database
#   E2E_PRIVATE     1 when the private cluster (scripts/cluster.sh, port E2E_PGPORT,
#                   default 55440) is used: only then may the database be restarted
#   E2E_STARTED_CLUSTER  1 when this run started that cluster (the runner stops it again)
#
# Files in E2E_WORK: events (one line per kill/start/stop/db-restart: "EPOCH KIND TOWER PID"),
# waves ("TASK COUNT QUEUE"), expect ("task|execution KEY STATE"), failures (one line each),
# towers/NAME/ (tower.json, log, pid, exit, wanted, lock), scenario.log.

[ -n "${_E2E_DB_SH:-}" ] && return 0
_E2E_DB_SH=1

E2E_ROOT=${E2E_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
E2E_REPO=${E2E_REPO:-$(cd "$E2E_ROOT/../.." && pwd)}
E2E_SDK=${E2E_SDK:-py}
E2E_CHAOS=${E2E_CHAOS:-0}
E2E_SCENARIO=${E2E_SCENARIO:-$(basename "$0" .sh)}
export E2E_ROOT E2E_REPO E2E_SDK E2E_CHAOS E2E_SCENARIO

# e2e_now: seconds since the epoch with milliseconds.
e2e_now() { date +%s.%3N; }

# e2e_log MSG...: a timestamped progress line on stderr (the scenario log).
e2e_log() { printf '%s [%s] %s\n' "$(date +%T.%3N)" "$E2E_SCENARIO" "$*" >&2; }

# e2e_check_fail MSG...: record a failed check and go on (the scenario will FAIL).
e2e_check_fail() {
  printf '%s\n' "$*" >>"$E2E_WORK/failures"
  e2e_log "FAILED: $*"
}

# e2e_fail MSG...: record a failure and stop the scenario (exit 1).
e2e_fail() {
  e2e_check_fail "$@"
  exit 1
}

# e2e_event KIND [TOWER] [PID]: append to the event log (kills, restarts, starts, stops).
e2e_event() { printf '%s %s %s %s\n' "$(e2e_now)" "$1" "${2:--}" "${3:--}" >>"$E2E_WORK/events"; }

# e2e_count_events KIND: how many events of KIND were logged.
e2e_count_events() { awk -v k="$1" '$2 == k { n++ } END { print n + 0 }' "$E2E_WORK/events" 2>/dev/null || echo 0; }

# e2e_seconds VALUE: "30s", "30" or "1.5s" -> 30 / 1.5; anything else is a usage error.
e2e_seconds() {
  local v=${1%s}
  [[ $v =~ ^[0-9]+([.][0-9]+)?$ ]] || e2e_fail "not a duration: '$1' (use e.g. 30s)"
  echo "$v"
}

# e2e_elapsed_since EPOCH: seconds since EPOCH (as printed by e2e_now), 1 decimal.
e2e_elapsed_since() { awk -v a="$1" -v b="$(e2e_now)" 'BEGIN { printf "%.1f", b - a }'; }

# e2e_lt A B: true when number A < number B.
e2e_lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }

# e2e_env_init: pick the server and the CLI once per run (the runner exports the result).
e2e_env_init() {
  if [ -z "${E2E_WORK:-}" ]; then
    E2E_WORK=$(mktemp -d "${TMPDIR:-/tmp}/pgc-e2e-$E2E_SCENARIO.XXXXXX")
  fi
  mkdir -p "$E2E_WORK/towers"
  touch "$E2E_WORK/events" "$E2E_WORK/waves" "$E2E_WORK/expect" "$E2E_WORK/failures"
  if [ -z "${E2E_PGCONDUCTOR:-}" ]; then
    if [ -x "$E2E_REPO/.venv/bin/pgconductor" ]; then
      E2E_PGCONDUCTOR=$E2E_REPO/.venv/bin/pgconductor
    else
      E2E_PGCONDUCTOR=$(command -v pgconductor || true)
    fi
  fi
  if [ -z "$E2E_PGCONDUCTOR" ] || [ ! -x "$E2E_PGCONDUCTOR" ]; then
    e2e_fail "the pgconductor CLI is missing (run make deps, or set E2E_PGCONDUCTOR)"
  fi
  if [ -z "${E2E_ADMIN_URL:-}" ]; then
    if [ -n "${DATABASE_URL:-}" ]; then
      E2E_ADMIN_URL=$DATABASE_URL
      E2E_PRIVATE=0
    else
      # A private cluster of our own port: the restarts of chaos mode and 08-database-restart
      # must not hit other test runs that share the default private cluster.
      E2E_PGPORT=${E2E_PGPORT:-55440}
      PGPORT=$E2E_PGPORT bash "$E2E_REPO/scripts/cluster.sh" status >/dev/null 2>&1 || E2E_STARTED_CLUSTER=1
      PGPORT=$E2E_PGPORT bash "$E2E_REPO/scripts/cluster.sh" start >/dev/null ||
        e2e_fail "could not start the private cluster on port $E2E_PGPORT"
      E2E_ADMIN_URL=$(PGPORT=$E2E_PGPORT bash "$E2E_REPO/scripts/cluster.sh" url)
      E2E_PRIVATE=1
    fi
  fi
  export E2E_WORK E2E_PGCONDUCTOR E2E_ADMIN_URL E2E_PRIVATE E2E_PGPORT E2E_STARTED_CLUSTER
}

# _psql_retry URL ARGS...: psql -XAtq with ON_ERROR_STOP; while the server is unreachable
# (psql exit 2: refused, restarting, connection lost) retry for up to E2E_DB_RETRY seconds
# (default 90). Only for reads and idempotent statements.
_psql_retry() {
  local url=$1 deadline out rc
  shift
  deadline=$(($(date +%s) + ${E2E_DB_RETRY:-90}))
  while :; do
    rc=0
    out=$(PGCONNECT_TIMEOUT=5 psql "$url" -X -A -t -q -v ON_ERROR_STOP=1 "$@" 2>&1) || rc=$?
    if [ "$rc" = 0 ]; then
      [ -n "$out" ] && printf '%s\n' "$out"
      return 0
    fi
    if [ "$rc" != 2 ] || [ "$(date +%s)" -ge "$deadline" ]; then
      printf '%s\n' "$out" >&2
      return "$rc"
    fi
    sleep 0.2
  done
}

# q SQL: run SQL on the scenario's database; print the rows (unaligned, '|' separated).
q() { _psql_retry "$DATABASE_URL" -c "$1"; }

# q_file FILE: run a SQL file on the scenario's database.
q_file() { _psql_retry "$DATABASE_URL" -f "$1"; }

# q_admin SQL: run SQL on the server's own database (CREATE/ALTER DATABASE ...).
q_admin() { _psql_retry "$E2E_ADMIN_URL" -c "$1"; }

# e2e_dbname: the scenario database's name.
e2e_dbname() { cat "$E2E_WORK/dbname"; }

# db_lock_shared CMD...: run CMD while no database restart may start (invoke, tower start).
db_lock_shared() { flock -o -s "$E2E_WORK/dblock" "$@"; }

# setup_test_db [NAME]: a fresh database (scripts/fresh-db.sh) with the extension and the
# ledger; exports DATABASE_URL for the towers and the CLI. synchronous_commit is turned on
# for it: the private cluster runs with it off, and a restart -m immediate would otherwise
# forget commits that were already acknowledged (a lost ledger row or completion).
setup_test_db() {
  local name=${1:-pgc_e2e_${E2E_SCENARIO%%-*}} url
  name=${name//[^a-zA-Z0-9_]/_}
  url=$(DATABASE_URL=$E2E_ADMIN_URL bash "$E2E_REPO/scripts/fresh-db.sh" "$name" 2>"$E2E_WORK/fresh-db.err") ||
    e2e_fail "scripts/fresh-db.sh $name failed: $(cat "$E2E_WORK/fresh-db.err")"
  export DATABASE_URL=$url
  echo "$name" >"$E2E_WORK/dbname"
  echo "$url" >"$E2E_WORK/dburl"
  q_admin "ALTER DATABASE \"$name\" SET synchronous_commit = on" ||
    e2e_fail "could not configure database $name"
  q "$(cat <<'SQL'
CREATE SCHEMA e2e;
-- One row per event of one handler run; see apps/tower_app.py.
CREATE TABLE e2e.ledger (
    seq          bigserial PRIMARY KEY,
    run_id       uuid NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('start', 'effect', 'fail', 'aborted')),
    execution_id uuid NOT NULL,
    task_key     text NOT NULL,
    queue        text NOT NULL,
    attempt      integer NOT NULL,
    max_attempts integer NOT NULL,
    tower        text NOT NULL,
    pid          integer NOT NULL,
    payload      jsonb,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (run_id, kind)
);
CREATE INDEX ON e2e.ledger (execution_id);
SQL
)" >/dev/null || e2e_fail "could not create the ledger in $name"
  trap e2e_on_exit EXIT
  e2e_log "database $name ready (chaos=$E2E_CHAOS, private cluster=$E2E_PRIVATE)"
}

# db_restart: restart the private cluster at once (pg_ctl restart -m immediate); fails the
# scenario when DATABASE_URL came from the user (the server is not ours to restart).
db_restart() {
  [ "${E2E_PRIVATE:-0}" = 1 ] ||
    e2e_fail "needs the private cluster: unset DATABASE_URL so the suite starts its own (scripts/cluster.sh) and may restart it"
  local out
  out=$(flock -o -x "$E2E_WORK/dblock" env PGPORT="$E2E_PGPORT" bash "$E2E_REPO/scripts/cluster.sh" restart-immediate 2>&1) ||
    e2e_fail "database restart failed: $out"
  e2e_event db-restart
  e2e_log "database restarted (immediate)"
}

# e2e_on_exit: the EXIT trap of a scenario: stop the chaos monkey, leftover towers, pgbouncer.
e2e_on_exit() {
  local rc=$?
  if declare -F chaos_stop >/dev/null; then chaos_stop; fi
  if declare -F stop_all_towers >/dev/null; then stop_all_towers; fi
  if declare -F pgbouncer_stop >/dev/null; then pgbouncer_stop; fi
  exit "$rc"
}

e2e_env_init
