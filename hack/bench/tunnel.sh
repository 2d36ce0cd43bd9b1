#!/usr/bin/env bash
# The tunnel's benchmarks (request path against direct HTTP/2+TLS and rathole, held streams,
# stalled streams, reconnects, 10,000 simulated agents), in release mode, written into
# BENCHMARKS.md.
# Usage: hack/bench/tunnel.sh [--quick] [tunnel-bench flags, e.g. --rounds 5 --agents 2000]
#   --quick: small numbers everywhere, as a smoke test; prints the report, leaves
#            BENCHMARKS.md alone.
# The full run pins both cores for several minutes: check /proc/loadavg first on a shared
# machine.
set -euo pipefail
cd "$(dirname "$0")/../.."

hack/install-deps.sh
cargo build --release --locked -p edgefleet-apiserver -p edgefleet-agent -p edgefleet-e2e --bins

# The baseline, rathole, from crates.io, built once into a throwaway directory outside the
# repository (never committed). rathole 0.5.0's lockfile pins `time` 0.3.29, which current
# rustc no longer compiles; when the locked build fails, build again with the newest
# semver-compatible dependencies.
tools=${EDGEFLEET_BENCH_TOOLS:-${TMPDIR:-/tmp}/edgefleet-bench-tools}
rathole=$tools/rathole/bin/rathole
if [ ! -x "$rathole" ]; then
  mkdir -p "$tools"
  echo "building rathole into $tools (once)"
  (
    cd "$tools"
    cargo install --quiet --root "$tools/rathole" rathole --locked 2>"$tools/rathole-locked.log" ||
      cargo install --quiet --root "$tools/rathole" rathole 2>"$tools/rathole.log"
  ) || echo "rathole did not build (see $tools/rathole*.log): measuring without it"
fi
baseline=()
if [ -x "$rathole" ] && command -v openssl >/dev/null 2>&1; then
  baseline=(--rathole "$rathole")
else
  echo "no rathole (or no openssl for its PKCS#12 identity): the rathole baseline is skipped"
fi

# 10,000 agents hold 10,000 sockets in the hub and in the simulator; held watches one
# connection each need more than the default 1,024 descriptors in the driver too.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

quick=false
for arg in "$@"; do
  [ "$arg" = --quick ] && quick=true
done
out=$(mktemp)
trap 'rm -f "$out"' EXIT
target/release/tunnel-bench "${baseline[@]}" --out "$out" "$@"
if $quick; then
  echo "quick run: BENCHMARKS.md left as is"
else
  hack/bench/record.sh tunnel "$out" "hack/bench/tunnel.sh $*"
fi
