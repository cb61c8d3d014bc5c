#!/usr/bin/env bash
# Released SQL never changes, and the update chain reaches the current version.
#   scripts/check-frozen.sh EXTVERSION BUILT_SCRIPT
# 1. extension/versions/pgconductor--EXTVERSION.sql, if frozen, equals the build.
# 2. extension/updates/pgconductor--A--B.sql form one chain from the oldest frozen
#    version in extension/versions/ to EXTVERSION, with no gaps, forks or orphans.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:?usage: $0 EXTVERSION BUILT}
built=${2:?usage: $0 EXTVERSION BUILT}
frozen=extension/versions/pgconductor--$version.sql

# fail MSG: print MSG and exit 1.
fail() { echo "check-frozen: $*" >&2; exit 1; }

if [ -e "$frozen" ] && ! cmp -s "$built" "$frozen"; then
  diff -u "$frozen" "$built" | head -n 40 >&2 || true
  fail "$frozen is released and must not change; put the change in extension/updates/ and bump default_version"
fi

shopt -s nullglob
updates=(extension/updates/pgconductor--*--*.sql)
bases=(extension/versions/pgconductor--*.sql)
for f in "${updates[@]}"; do
  [[ $(basename "$f") =~ ^pgconductor--[0-9][0-9A-Za-z.]*--[0-9][0-9A-Za-z.]*\.sql$ ]] ||
    fail "bad update script name: $f (want pgconductor--FROM--TO.sql)"
done
if [ ${#bases[@]} -eq 0 ]; then
  [ ${#updates[@]} -eq 0 ] || fail "extension/updates/ has scripts but extension/versions/ has no frozen base"
  echo "check-frozen: ok (no released version yet)"
  exit 0
fi

# Walk from the oldest frozen base through the updates.
oldest=$(for f in "${bases[@]}"; do b=$(basename "$f" .sql); echo "${b#pgconductor--}"; done | sort -V | head -n 1)
cur=$oldest used=0 chain=$oldest
while :; do
  next=(extension/updates/pgconductor--"$cur"--*.sql)
  [ ${#next[@]} -le 1 ] || fail "more than one update from $cur: ${next[*]}"
  [ ${#next[@]} -eq 1 ] || break
  b=$(basename "${next[0]}" .sql)
  cur=${b##*--} used=$((used + 1)) chain="$chain -> $cur"
  [ $used -le ${#updates[@]} ] || fail "the update chain loops: $chain"
done
[ "$cur" = "$version" ] || fail "the update chain $chain ends at $cur, not at default_version $version"
[ $used -eq ${#updates[@]} ] || fail "update scripts off the chain $chain: ${updates[*]}"
echo "check-frozen: ok ($chain)"
