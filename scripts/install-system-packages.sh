#!/usr/bin/env bash
# Installs the Debian packages the local platform needs, only those missing.
# Runs before the project's virtual environment exists, so it is plain bash.
set -euo pipefail

# Packages by purpose: engine and image building, database, linting of shell scripts,
# registry stand-in and its password file, apt cache for test hosts, load generation, SSH client
# for Ansible and the stand-in, a headless browser for the end-to-end page checks.
readonly PACKAGES=(
  docker.io debootstrap
  postgresql
  shellcheck
  docker-registry apache2-utils
  apt-cacher-ng
  wrk
  openssh-client
  chromium
)
readonly MIN_FREE_GIB=15

die() {
  printf 'setup: %s\n' "$1" >&2
  exit 1
}

[ "$(id -u)" -eq 0 ] || die "the local platform installs packages and starts dockerd, so it must run as root (try: sudo make setup)"
command -v apt-get >/dev/null || die "apt-get not found: the local platform needs Debian or Ubuntu"

free_kib=$(df --output=avail -k / | tail -n 1)
if [ "$free_kib" -lt $((MIN_FREE_GIB * 1024 * 1024)) ]; then
  die "only $((free_kib / 1024 / 1024)) GiB free on /; the images and host volumes need ${MIN_FREE_GIB} GiB (free some space, e.g. docker system prune)"
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  # dpkg-query prints "install ok installed" only for a fully installed package.
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "setup: system packages present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || die "apt-get update failed; check the network and /etc/apt/sources.list"
# policy-rc.d 101 stops the packages' maintainer scripts from starting services (dockerd,
# the default PostgreSQL cluster): the project starts only what it needs, itself.
policy=/usr/sbin/policy-rc.d
created_policy=false
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 0755 "$policy"
  created_policy=true
fi
rc=0
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/deploykit-apt.log 2>&1 || rc=$?
if [ "$created_policy" = true ]; then rm -f "$policy"; fi
if [ "$rc" -ne 0 ]; then
  tail -n 20 /tmp/deploykit-apt.log >&2
  die "apt-get install ${missing[*]} failed (exit $rc); the full log is /tmp/deploykit-apt.log"
fi
echo "setup: installed ${missing[*]}"
