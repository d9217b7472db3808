#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs the real clients the end-to-end tests
# drive (curl, dig, ip, and grpcio in a virtualenv), then runs every crate's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v dig >/dev/null 2>&1 || need+=(dnsutils)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
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

# grpcio (gRPC C-core, from PyPI) is the gRPC peer the end-to-end tests check against: it
# enforces the protocol where tonic does not. Kept in a virtualenv under target/.
venv=target/test-venv
if ! "$venv/bin/python" -c 'import grpc' >/dev/null 2>&1; then
  echo "creating $venv with grpcio"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'grpcio==1.85.1'
fi

cargo test --workspace --locked "$@"
