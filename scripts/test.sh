#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the real clients the end-to-end tests
# drive (curl, dig, ip), then runs every crate's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v dig >/dev/null 2>&1 || need+=(dnsutils)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing ${need[*]}: install them (as root: apt-get install ${need[*]})" >&2
    exit 1
  fi
fi

cargo test --workspace --locked "$@"
