# shellcheck shell=bash
# tests/e2e/lib/pgbouncer.sh: a PgBouncer of the scenario's own, in transaction mode, in
# front of the scenario's database (Debian's pgbouncer: scripts/deps.sh installs it).
#
#   pgbouncer_start [--pool-size=N]   generate a config, start it on a loopback port, wait
#                                     until it answers; exports PGBOUNCER_URL (the scenario
#                                     database through it, no pgconductor option)
#   pgbouncer_show WHAT               a line count of the admin console's SHOW WHAT for the
#                                     scenario database (clients, servers)
#   pgbouncer_stop                    stop it (the EXIT trap of db.sh calls it); its log is
#                                     kept as $E2E_WORK/pgbouncer.log
#
# Port: E2E_PGBOUNCER_PORT, else one the kernel says is free. PgBouncer will not run as
# root: as root it runs as the postgres OS user, from a directory of its own in /tmp (the
# scenario's work directory is private to root).

[ -n "${_E2E_PGBOUNCER_SH:-}" ] && return 0
_E2E_PGBOUNCER_SH=1
# shellcheck source=tests/e2e/lib/db.sh
. "$(dirname "${BASH_SOURCE[0]}")/db.sh"

_pgbouncer_as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# _pgbouncer_url_parts URL: "host port dbname user password" of a postgresql:// URL.
_pgbouncer_url_parts() {
  python3 - "$1" <<'PY'
import sys
from urllib.parse import unquote, urlsplit
u = urlsplit(sys.argv[1])
print(u.hostname or "127.0.0.1", u.port or 5432, unquote(u.path.lstrip("/")) or "postgres",
      unquote(u.username or "postgres"), unquote(u.password or ""))
PY
}

# _pgbouncer_free_port: a loopback TCP port nobody listens on right now.
_pgbouncer_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pgbouncer_start() {
  local pool=4 arg dir port host dbport dbname user password
  for arg in "$@"; do
    case "$arg" in
      --pool-size=*) pool=${arg#*=} ;;
      *) e2e_fail "pgbouncer_start: unknown option $arg" ;;
    esac
  done
  command -v pgbouncer >/dev/null || PATH=$PATH:/usr/sbin
  command -v pgbouncer >/dev/null || e2e_fail "pgbouncer is not installed (run make deps)"
  read -r host dbport dbname user password < <(_pgbouncer_url_parts "$DATABASE_URL")
  port=${E2E_PGBOUNCER_PORT:-$(_pgbouncer_free_port)}
  dir=$(mktemp -d /tmp/pgc-pgbouncer.XXXXXX)
  echo "$dir" >"$E2E_WORK/pgbouncer.dir"
  printf '"%s" "%s"\n' "$user" "$password" >"$dir/userlist.txt"
  cat >"$dir/pgbouncer.ini" <<EOF
[databases]
$dbname = host=$host port=$dbport dbname=$dbname${password:+ password=$password}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
admin_users = $user
pool_mode = transaction
default_pool_size = $pool
max_client_conn = 500
server_reset_query =
; after a failed login to the server (a restart), refuse clients for 1 s, not the default 15
server_login_retry = 1
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
  [ "$(id -u)" = 0 ] && chown -R postgres: "$dir"
  _pgbouncer_as_owner pgbouncer -d "$dir/pgbouncer.ini" >"$E2E_WORK/pgbouncer.start" 2>&1 ||
    e2e_fail "pgbouncer did not start: $(cat "$E2E_WORK/pgbouncer.start" "$dir/pgbouncer.log" 2>/dev/null)"
  export PGBOUNCER_URL="postgresql://$user${password:+:$password}@127.0.0.1:$port/$dbname"
  E2E_DB_RETRY=10 _psql_retry "$PGBOUNCER_URL" -c "SELECT 1" >/dev/null ||
    e2e_fail "pgbouncer on port $port does not answer; its log: $(tail -n 5 "$dir/pgbouncer.log")"
  e2e_log "pgbouncer up on port $port (transaction mode, $pool server connections)"
}

# pgbouncer_show WHAT: how many rows SHOW WHAT lists for the scenario database.
pgbouncer_show() {
  local admin=${PGBOUNCER_URL%/*}/pgbouncer dbname
  dbname=$(e2e_dbname)
  psql "$admin" -X -A -t -F '|' -c "SHOW $1" | awk -F '|' -v d="$dbname" '$3 == d { n++ } END { print n + 0 }'
}

pgbouncer_stop() {
  local dir pid
  [ -f "$E2E_WORK/pgbouncer.dir" ] || return 0
  dir=$(cat "$E2E_WORK/pgbouncer.dir")
  pid=$(cat "$dir/pgbouncer.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -s TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  fi
  cp "$dir/pgbouncer.log" "$E2E_WORK/pgbouncer.log" 2>/dev/null || true
  rm -rf "$dir" "$E2E_WORK/pgbouncer.dir"
}
