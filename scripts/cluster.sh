#!/usr/bin/env bash
# Private PostgreSQL 15 cluster, never the system one.
#   scripts/cluster.sh start|stop|status|url|psql [args]|restart-immediate
# Port ${PGPORT:-55432}; data, socket and log in ${TMPDIR:-/tmp}/pgconductor-$PORT
# (owned by the postgres OS user when run as root).
# CLUSTER_PROFILE=test (default): tuned for speed, not durability (fsync off...).
# CLUSTER_PROFILE=bench: PostgreSQL's default durability and memory, plus pg_stat_statements,
# so benchmarks measure what users get (bench/run.sh uses it on its own port).
set -euo pipefail

BIN=/usr/lib/postgresql/15/bin
PORT=${PGPORT:-55432}

# as_owner CMD...: run CMD as the cluster's owner (postgres when we are root).
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# pick_dir: choose a base dir the owner can use and whose socket path stays < 100 bytes.
pick_dir() {
  local base=${TMPDIR:-/tmp}
  if [ $(( ${#base} + ${#PORT} + 30 )) -ge 100 ] || ! as_owner test -w "$base" -a -x "$base"; then
    base=/tmp
  fi
  DIR=${base%/}/pgconductor-$PORT
  PGDATA_DIR=$DIR/data
  LOG=$DIR/postgres.log
}

# pg_ctl_ ARGS...: pg_ctl on our data dir, as the owner.
pg_ctl_() { as_owner "$BIN/pg_ctl" -D "$PGDATA_DIR" "$@"; }

# is_running: true when the postmaster of our data dir is up.
is_running() { [ -f "$PGDATA_DIR/PG_VERSION" ] && pg_ctl_ status >/dev/null 2>&1; }

# pick_locale: C.UTF-8 when the system has it, else C.
pick_locale() {
  if locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then echo C.UTF-8; else echo C; fi
}

# init_cluster: (re)create the data dir when it is missing, half-made or of another version.
init_cluster() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || { echo "no 'postgres' OS user: run scripts/deps.sh" >&2; exit 1; }
    mkdir -p "$DIR" && chown postgres: "$DIR" && chmod 700 "$DIR"
  else
    mkdir -p "$DIR" && chmod 700 "$DIR"
  fi
  if [ "$(cat "$PGDATA_DIR/PG_VERSION" 2>/dev/null)" = 15 ] && [ -f "$PGDATA_DIR/postgresql.conf" ]; then
    return
  fi
  rm -rf "$PGDATA_DIR"
  as_owner "$BIN/initdb" -D "$PGDATA_DIR" --auth=trust --username=postgres -E UTF8 \
    --locale="$(pick_locale)" >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; exit 1; }
  echo "include 'pgconductor.conf'" | as_owner tee -a "$PGDATA_DIR/postgresql.conf" >/dev/null
}

# write_conf: the profile's settings, rewritten on every start so edits here take effect.
write_conf() {
  local profile
  case "${CLUSTER_PROFILE:-test}" in
    test) profile="# a throwaway test cluster (speed over durability)
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
shared_buffers = 256MB" ;;
    bench) profile="# a benchmark cluster: default durability and memory (fsync, synchronous_commit on)
max_connections = 100
pg_stat_statements.track = top" ;;
    *) echo "unknown CLUSTER_PROFILE '${CLUSTER_PROFILE}' (test or bench)" >&2; exit 2 ;;
  esac
  as_owner tee "$PGDATA_DIR/pgconductor.conf" >/dev/null <<CONF
# written by scripts/cluster.sh
$profile
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
shared_preload_libraries = 'pg_stat_statements'
log_min_messages = warning
CONF
}

# start: idempotent; initdb when needed, then pg_ctl start -w (stale pid files are handled by postgres).
start() {
  local _
  for _ in $(seq 50); do  # a postmaster that is up, or still dying after kill -9
    is_running || break
    if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
      echo "private cluster already running on port $PORT ($DIR)"; return
    fi
    sleep 0.2
  done
  is_running && { echo "private cluster on port $PORT is up but not accepting connections" >&2; exit 1; }
  [ -x "$BIN/pg_ctl" ] || { echo "$BIN/pg_ctl missing: run scripts/deps.sh" >&2; exit 1; }
  init_cluster
  write_conf
  # The port lies in Linux's ephemeral range: an outgoing connection may hold it for a moment
  # ("Address already in use"); try again a few times before giving up.
  local attempt
  for attempt in 1 2 3 4 5; do
    pg_ctl_ start -w -t 60 -l "$LOG" >/dev/null && break
    if [ "$attempt" -lt 5 ] && tail -n 5 "$LOG" 2>/dev/null | grep -q "Address already in use"; then
      echo "port $PORT is busy for a moment; retrying" >&2
      sleep 2
      continue
    fi
    echo "could not start the private cluster; last lines of $LOG:" >&2
    tail -n 20 "$LOG" >&2 || true
    exit 1
  done
  echo "private cluster running on port $PORT ($DIR)"
}

# stop: idempotent fast shutdown.
stop() {
  if is_running; then pg_ctl_ stop -m fast -w >/dev/null && echo "private cluster stopped"
  else echo "private cluster not running"; fi
}

# url: the connection URL of the private cluster.
url() { echo "postgresql://postgres@127.0.0.1:$PORT/postgres"; }

pick_dir
cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) if is_running; then echo "running on port $PORT ($DIR)"; else echo "not running ($DIR)"; exit 3; fi ;;
  url) url ;;
  psql) start >/dev/null; exec psql "$(url)" "$@" ;;
  restart-immediate) is_running || { echo "private cluster not running" >&2; exit 1; }
    pg_ctl_ restart -m immediate -w -t 60 -l "$LOG" >/dev/null && echo "private cluster restarted (immediate)" ;;
  *) echo "usage: $0 start|stop|status|url|psql [psql args]|restart-immediate" >&2; exit 2 ;;
esac
