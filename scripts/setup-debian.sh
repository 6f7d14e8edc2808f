#!/usr/bin/env bash
# setup-debian.sh installs the system packages rlslab and its tests need on a
# Debian machine: PostgreSQL server binaries, PgBouncer, Chromium (for the
# browser tests), HAProxy, psycopg and Node.js with the seed app's packages
# (real clients through rlslab's proxy) and axe-core for the browser tests'
# accessibility checks. It installs only what is missing
# and is safe to run again.
#
#   scripts/setup-debian.sh          # everything (tests)
#   scripts/setup-debian.sh run      # only what `rlslab serve` needs
set -euo pipefail

want=(postgresql pgbouncer chromium haproxy psycopg nodejs)
[ "${1:-}" = "run" ] && want=(postgresql)

have() {
  case "$1" in
    postgresql) ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null 2>&1 ;;
    pgbouncer) command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] ;;
    chromium) command -v chromium >/dev/null 2>&1 ;;
    haproxy) command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] ;;
    psycopg) /usr/bin/python3 -c 'import psycopg' >/dev/null 2>&1 ;;
    nodejs) command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 ;;
  esac
}

# node_modules of the apps that lessons and tests run through the proxy, and
# axe-core, which the browser tests inject into the pages they check.
apps() {
  [ "${1:-}" = "run" ] && return 0
  command -v npm >/dev/null 2>&1 || return 0
  local here app
  here="$(cd "$(dirname "$0")/.." && pwd)"
  for app in "$here"/lessons/apps/*/ "$here"/internal/pgproxy/testdata/node/ "$here"/web/testdata/axe/; do
    [ -f "$app/package-lock.json" ] || continue
    [ -d "$app/node_modules" ] && [ "$app/node_modules/.package-lock.json" -nt "$app/package-lock.json" ] && continue
    (cd "$app" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || { echo "setup-debian.sh: npm ci in $app failed" >&2; exit 1; }
  done
}

missing=()
for p in "${want[@]}"; do have "$p" || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then
  apps "${1:-}"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-debian.sh: missing ${missing[*]} and apt-get is not available; install them by hand" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "setup-debian.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# policy-rc.d keeps the packages from starting their own services: rlslab
# starts PostgreSQL and PgBouncer itself, in temporary directories.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
  trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
fi
pkgs=()
for p in "${missing[@]}"; do
  case "$p" in
    chromium) pkgs+=(chromium fonts-dejavu-core) ;;
    psycopg) pkgs+=(python3-psycopg) ;;
    nodejs) pkgs+=(nodejs npm) ;;
    *) pkgs+=("$p") ;;
  esac
done
$sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
apps "${1:-}"
