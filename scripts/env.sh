# shellcheck shell=bash
# Sourced (not run) by the other scripts: picks the database server for this run.
# DATABASE_URL set  -> use that server, never start the private cluster.
# DATABASE_URL unset -> scripts/cluster.sh start, and use its URL.
# Then exports DATABASE_URL, PGHOST, PGPORT, PGUSER (and PGPASSWORD if the URL has one).

_pgc_scripts=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [ -z "${DATABASE_URL:-}" ]; then
  "$_pgc_scripts/cluster.sh" start >/dev/null
  DATABASE_URL=$("$_pgc_scripts/cluster.sh" url)
fi
export DATABASE_URL

# pg_url_parts: split DATABASE_URL (postgres[ql]://[user[:pass]@][host][:port][/db][?params]).
pg_url_parts() {
  local rest=${DATABASE_URL#*://} auth hostport
  rest=${rest%%\?*}
  auth=${rest%%/*}
  if [[ $auth == *@* ]]; then
    local userinfo=${auth%@*}
    hostport=${auth##*@}
    PGUSER=${userinfo%%:*}
    [[ $userinfo == *:* ]] && export PGPASSWORD=${userinfo#*:}
  else
    hostport=$auth
  fi
  PGHOST=${hostport%%:*}
  [[ $hostport == *:* ]] && PGPORT=${hostport##*:} || PGPORT=5432
  PGHOST=${PGHOST:-localhost}
  PGUSER=${PGUSER:-${USER:-postgres}}
  export PGHOST PGPORT PGUSER
}

# pg_db_url NAME: DATABASE_URL with its database replaced by NAME (query params kept).
pg_db_url() {
  local query="" noq=${DATABASE_URL%%\?*} auth
  [[ $DATABASE_URL == *\?* ]] && query="?${DATABASE_URL#*\?}"
  auth=${noq#*://}
  auth=${auth%%/*}
  echo "${noq%%://*}://$auth/$1$query"
}

pg_url_parts
