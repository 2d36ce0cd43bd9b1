#!/usr/bin/env bash
# The whole test suite, as CI runs it: dependencies, formatting, lints, then every test
# (unit, integration, and end-to-end against real etcd, kubectl and the Python client).
set -euo pipefail
cd "$(dirname "$0")/.."

hack/install-deps.sh

echo "--- cargo fmt"
cargo fmt --all -- --check
echo "--- cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "--- build"
# The end-to-end tests run the binaries; build them with the tests, in one profile.
cargo build --workspace --bins --locked
echo "--- tests"
cargo nextest run --workspace --locked --no-fail-fast "$@"
