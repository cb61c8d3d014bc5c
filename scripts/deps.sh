#!/usr/bin/env bash
# Install what is missing, idempotently; silent when everything is already there.
#   scripts/deps.sh         apt packages, then the .venv
#   scripts/deps.sh apt     apt packages only
#   scripts/deps.sh venv    the .venv only
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(make postgresql-15 postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl shellcheck pgbouncer)
VENV=.venv
STAMP=$VENV/.stamp
PYPROJECT=python/pyproject.toml

# installed PKG: true when dpkg has PKG fully installed.
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# as_root CMD...: run CMD as root (directly, or via sudo), or fail with a clear message.
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "deps: need root to run: $* (no sudo available); run as root" >&2; exit 1; fi
}

# apt_deps: apt-get update once and install the missing packages, only if any is missing.
apt_deps() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
  # python3 -m venv needs Debian's python3-venv unless the python3 on PATH ships ensurepip.
  python3 -c 'import ensurepip, venv' 2>/dev/null || installed python3-venv || missing+=(python3-venv)
  [ ${#missing[@]} -eq 0 ] && return
  echo "deps: installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# venv_deps: (re)install python[dev] into .venv when pyproject.toml is newer than the stamp.
venv_deps() {
  if [ ! -f "$PYPROJECT" ]; then
    echo "deps: $PYPROJECT not there yet: skipping the .venv"
    return
  fi
  [ -f "$STAMP" ] && [ ! "$PYPROJECT" -nt "$STAMP" ] && [ -x "$VENV/bin/python" ] && return
  echo "deps: installing python[dev] into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  if ! { "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
         "$VENV/bin/python" -m pip install --disable-pip-version-check -e 'python[dev]'; } \
       >"$VENV/pip.log" 2>&1; then
    tail -n 30 "$VENV/pip.log" >&2
    echo "deps: pip install failed (full log: $VENV/pip.log)" >&2
    exit 1
  fi
  touch "$STAMP"
}

case "${1:-all}" in
  all) apt_deps; venv_deps ;;
  apt) apt_deps ;;
  venv) venv_deps ;;
  *) echo "usage: $0 [all|apt|venv]" >&2; exit 2 ;;
esac
