#!/usr/bin/env bash
# Starts a development hub: the embedded store, generated certificates and an admin kubeconfig
# under ./.edgefleet, serving on https://127.0.0.1:6443. Prints how to point kubectl at it.
# Extra arguments go to `edgefleet-apiserver dev` (e.g. --listen 0.0.0.0:6443).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v protoc >/dev/null 2>&1; then
  hack/install-deps.sh
fi
cargo build --release --locked -p edgefleet-apiserver --bin edgefleet-apiserver
exec target/release/edgefleet-apiserver dev "$@"
