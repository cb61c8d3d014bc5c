#!/usr/bin/env bash
# The benchmark's own PostgreSQL 15 cluster, never the test one (scripts/cluster.sh turns
# fsync and synchronous_commit off; the benchmark must run with default durability).
#   bench/cluster.sh start|stop|status|url|psql [args]
# Port ${BENCH_PGPORT:-55499}; data, socket and log in ${TMPDIR:-/tmp}/pgconductor-bench-$PORT
# (owned by the postgres OS user when run as root).
set -euo pipefail

BIN=/usr/lib/postgresql/15/bin
PORT=${BENCH_PGPORT:-55499}

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

base=${TMPDIR:-/tmp}
if [ $(( ${#base} + ${#PORT} + 40 )) -ge 100 ] || ! as_owner test -w "$base" -a -x "$base"; then
  base=/tmp
fi
DIR=${base%/}/pgconductor-bench-$PORT
PGDATA_DIR=$DIR/data
LOG=$DIR/postgres.log

pg_ctl_() { as_owner "$BIN/pg_ctl" -D "$PGDATA_DIR" "$@"; }
is_running() { [ -f "$PGDATA_DIR/PG_VERSION" ] && pg_ctl_ status >/dev/null 2>&1; }

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
  local loc=C
  locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$' && loc=C.UTF-8
  as_owner "$BIN/initdb" -D "$PGDATA_DIR" --auth=trust --username=postgres -E UTF8 \
    --locale="$loc" >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; exit 1; }
  echo "include 'bench.conf'" | as_owner tee -a "$PGDATA_DIR/postgresql.conf" >/dev/null
}

# Durability and memory stay at the PostgreSQL defaults (fsync, synchronous_commit and
# full_page_writes on, shared_buffers 128MB), as in shared/bench/peers. Only connection
# settings and pg_stat_statements (for the profile section) are added.
write_conf() {
  as_owner tee "$PGDATA_DIR/bench.conf" >/dev/null <<CONF
# written by bench/cluster.sh: benchmark cluster, default durability
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
max_connections = 100
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = top
log_min_messages = warning
CONF
}

start() {
  if is_running && "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
    echo "bench cluster already running on port $PORT ($DIR)"; return
  fi
  init_cluster
  write_conf
  if ! pg_ctl_ start -w -t 60 -l "$LOG" >/dev/null; then
    echo "could not start the bench cluster; last lines of $LOG:" >&2
    tail -n 20 "$LOG" >&2 || true
    exit 1
  fi
  echo "bench cluster running on port $PORT ($DIR)"
}

stop() {
  if is_running; then pg_ctl_ stop -m fast -w >/dev/null && echo "bench cluster stopped"
  else echo "bench cluster not running"; fi
}

url() { echo "postgresql://postgres@127.0.0.1:$PORT/postgres"; }

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) if is_running; then echo "running on port $PORT ($DIR)"; else echo "not running ($DIR)"; exit 3; fi ;;
  url) url ;;
  dir) echo "$DIR" ;;
  psql) start >/dev/null; exec psql "$(url)" "$@" ;;
  *) echo "usage: $0 start|stop|status|url|dir|psql [psql args]" >&2; exit 2 ;;
esac
