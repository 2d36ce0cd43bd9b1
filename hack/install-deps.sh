#!/usr/bin/env bash
# Installs what building and testing edgefleet needs on a fresh Debian machine:
# etcd (the real one, for storage and end-to-end tests), protoc (etcd-client's build),
# kubectl (usually preinstalled; Debian's kubernetes-client otherwise) and the Python
# `kubernetes` client (a second real client in the tests).
set -euo pipefail

need_apt=()
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubernetes-client)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import kubernetes' >/dev/null 2>&1; then
  echo "installing: python kubernetes client"
  python3 -m pip install --quiet kubernetes
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing: cargo-nextest"
  cargo install --locked --quiet cargo-nextest
fi
