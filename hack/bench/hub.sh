#!/usr/bin/env bash
# The hub's benchmarks (creates/s on etcd vs raw etcd, kubectl get over 10,000 clusters, one
# update to 10,000 watchers, memory), in release mode, written into BENCHMARKS.md.
# Usage: hack/bench/hub.sh [hub-bench flags, e.g. --rounds 5]
set -euo pipefail
cd "$(dirname "$0")/../.."

hack/install-deps.sh
cargo build --release --locked -p edgefleet-apiserver -p edgefleet-agent -p edgefleet-e2e --bins
# 10,000 watchers need more than the default 1,024 descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

out=$(mktemp)
target/release/hub-bench --out "$out" "$@"
hack/bench/record.sh hub "$out" "hack/bench/hub.sh $*"
