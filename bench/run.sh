#!/usr/bin/env bash
# make bench / make bench-quick: own durable cluster, extension, peers' venv, then bench.py.
#   bench/run.sh full|quick [bench.py args...]
# BENCH_PGPORT (default 55499) picks the cluster's port; BENCH_VENV the venv (default
# ${TMPDIR:-/tmp}/pgconductor-bench-venv, rebuilt when bench/requirements.txt changes).
set -euo pipefail
mode=${1:-quick}
[ $# -gt 0 ] && shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")

export BENCH_PGPORT=${BENCH_PGPORT:-55499}
# Its own cluster with PostgreSQL's default durability (never the test cluster's settings).
CLUSTER_PROFILE=bench PGPORT=$BENCH_PGPORT "$root/scripts/cluster.sh" start
make -C "$root" --no-print-directory install >/dev/null

venv=${BENCH_VENV:-${TMPDIR:-/tmp}/pgconductor-bench-venv}
stamp="$venv/.bench-requirements"
if ! cmp -s "$here/requirements.txt" "$stamp" 2>/dev/null; then
  echo "==> bench venv $venv (peers pinned in bench/requirements.txt)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt" -e "$root/python" \
    2> >(grep -v "is ignored" >&2)
  cp "$here/requirements.txt" "$stamp"
else
  # the project package may have new dependencies since the venv was made
  "$venv/bin/pip" install -q --disable-pip-version-check -e "$root/python" 2> >(grep -v "is ignored" >&2)
fi

cd "$here"
exec "$venv/bin/python" bench.py --mode "$mode" "$@"
