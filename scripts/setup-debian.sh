#!/usr/bin/env bash
# setup-debian.sh installs the system packages rlslab and its tests need on a
# Debian machine: PostgreSQL server binaries, PgBouncer and Chromium (for the
# browser tests). It installs only what is missing and is safe to run again.
#
#   scripts/setup-debian.sh          # everything (tests)
#   scripts/setup-debian.sh run      # only what `rlslab serve` needs
set -euo pipefail

want=(postgresql pgbouncer chromium)
[ "${1:-}" = "run" ] && want=(postgresql)

have() {
  case "$1" in
    postgresql) ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null 2>&1 ;;
    pgbouncer) command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] ;;
    chromium) command -v chromium >/dev/null 2>&1 ;;
  esac
}

missing=()
for p in "${want[@]}"; do have "$p" || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0

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
    *) pkgs+=("$p") ;;
  esac
done
$sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
