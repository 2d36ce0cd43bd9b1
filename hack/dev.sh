#!/usr/bin/env bash
# Starts a development hub: the embedded store, generated certificates and an admin kubeconfig
# under ./.edgefleet, serving on https://127.0.0.1:6443, with three simulated edge clusters whose
# agents dial its tunnel port (127.0.0.1:8132, the listen port + 1689). Prints how to point kubectl at it.
# Extra arguments go to `edgefleet-apiserver dev` (e.g. --agents 10, --listen 0.0.0.0:6443).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v protoc >/dev/null 2>&1; then
  hack/install-deps.sh
fi
cargo build --release --locked -p edgefleet-apiserver -p edgefleet-agent --bins
exec target/release/edgefleet-apiserver dev "$@"
