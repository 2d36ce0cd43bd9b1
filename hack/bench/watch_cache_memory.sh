#!/usr/bin/env bash
# The hub's memory under large objects (issue 9, item 5): VmRSS of a hub on the embedded store
# before and after UPDATES merge patches that each replace a ~1 MB ClusterAddon, after the
# storage compaction that follows, and how many bytes a watch from the first revision then
# replays. Prints a Markdown table; with --record, writes it into BENCHMARKS.md.
#
# Usage: hack/bench/watch_cache_memory.sh [--record] [--binary PATH]
#   UPDATES (200), OBJECT_BYTES (1000000) and COMPACTION (10s) are read from the environment.
#   --binary measures a hub built elsewhere (e.g. an older commit) instead of building this one.
#
# Method: `edgefleet-apiserver serve --storage embedded` with the PKI a `dev` hub generates,
# --etcd-compaction-interval $COMPACTION, no audit trail and no agents, so what grows is the
# registry, its watch cache and the store. Every write is one curl (HTTP/1.1, mutual TLS).
# After the last update the script waits until the hub logged a compaction at or past the last
# revision, then 2 s more for the watch cache's sweep, and reads VmRSS again.
set -euo pipefail
cd "$(dirname "$0")/../.."

record=false binary=""
while [ $# -gt 0 ]; do
  case $1 in
    --record) record=true ;;
    --binary) binary=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
UPDATES=${UPDATES:-200}
OBJECT_BYTES=${OBJECT_BYTES:-1000000}
COMPACTION=${COMPACTION:-10s}
if [ -z "$binary" ]; then
  cargo build --release --locked -p edgefleet-apiserver --bin edgefleet-apiserver
  binary=target/release/edgefleet-apiserver
fi

work=$(mktemp -d)
hub_pid=""
cleanup() {
  if [ -n "$hub_pid" ]; then kill "$hub_pid" 2>/dev/null || true; wait "$hub_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$hub_pid/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$hub_pid/status"; }

# 1. A dev hub only to generate the CA, the serving and admin certificates and rbac.yaml.
"$binary" dev --data-dir "$work/dev" --listen 127.0.0.1:0 --tunnel-listen 127.0.0.1:0 --agents 0 \
  >"$work/dev.log" 2>&1 &
hub_pid=$!
for _ in $(seq 300); do grep -q "serving on https://" "$work/dev.log" && break; sleep 0.1; done
kill "$hub_pid"; wait "$hub_pid" 2>/dev/null || true; hub_pid=""
pki=$work/dev/pki

# 2. The measured hub.
port=$(free_port)
RUST_LOG=info "$binary" serve --storage embedded --data-dir "$work/store" \
  --bind-address 127.0.0.1 --secure-port "$port" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" --authorization-rbac-file "$work/dev/rbac.yaml" \
  --etcd-compaction-interval "$COMPACTION" >"$work/hub.out" 2>"$work/hub.log" &
hub_pid=$!
api="https://127.0.0.1:$port"
curl_hub() { curl -sS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$@"; }
for _ in $(seq 300); do
  [ "$(curl_hub -o /dev/null -w '%{http_code}' "$api/readyz" 2>/dev/null)" = 200 ] && break
  sleep 0.1
done

base=$api/apis/edgefleet.io/v1alpha1
curl_hub -o /dev/null -X POST -H 'Content-Type: application/json' "$base/environments" \
  -d '{"apiVersion":"edgefleet.io/v1alpha1","kind":"Environment","metadata":{"name":"bench"}}'
# A ClusterAddon whose inline ConfigMap holds OBJECT_BYTES; version N is all letter N % 26.
body() {
  python3 - "$1" "$2" "$OBJECT_BYTES" <<'PY'
import json, string, sys
kind, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = {"blob": string.ascii_lowercase[n % 26] * size, "version": str(n)}
manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "blob"}, "data": data}
spec = {"version": "v1.0.%d" % n, "manifests": [manifest]}
if kind == "create":
    doc = {"apiVersion": "edgefleet.io/v1alpha1", "kind": "ClusterAddon",
           "metadata": {"name": "big"}, "spec": spec}
else:
    doc = {"spec": spec}
sys.stdout.write(json.dumps(doc))
PY
}
body create 0 >"$work/body.json"
first_rv=$(curl_hub -X POST -H 'Content-Type: application/json' --data-binary "@$work/body.json" \
  "$base/namespaces/bench/clusteraddons" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["resourceVersion"])')
sleep 1
rss_start=$(rss_kib)

failed=0
for i in $(seq 1 "$UPDATES"); do
  body patch "$i" >"$work/body.json"
  code=$(curl_hub -o "$work/reply.json" -w '%{http_code}' -X PATCH \
    -H 'Content-Type: application/merge-patch+json' --data-binary "@$work/body.json" \
    "$base/namespaces/bench/clusteraddons/big")
  [ "$code" = 200 ] || failed=$((failed + 1))
done
last_rv=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["metadata"]["resourceVersion"])' "$work/reply.json")
sleep 1
rss_updates=$(rss_kib)
hwm_updates=$(hwm_kib)

# 3. Wait for the compaction that covers the last update (the compactor compacts to what it saw
# one interval earlier), then for the cache's sweep.
compacted=0
for _ in $(seq 600); do
  compacted=$(sed 's/\x1b\[[0-9;]*m//g' "$work/hub.log" |
    sed -n 's/.*compacted storage.*revision=\([0-9]*\).*/\1/p' | tail -1)
  [ -n "$compacted" ] && [ "$compacted" -ge "$last_rv" ] && break
  sleep 0.5
done
sleep 7
rss_compacted=$(rss_kib)

# 4. A watch from the first revision, as any viewer may open it.
replayed=$(curl_hub --max-time 60 "$base/clusteraddons?watch=1&resourceVersion=$first_rv&timeoutSeconds=5" | wc -c)
rss_replay=$(rss_kib)

report=$work/report.md
{
  echo "| ${UPDATES} updates of a $((OBJECT_BYTES / 1000)) kB ClusterAddon (embedded store) | hub VmRSS |"
  echo "|---|---|"
  echo "| after the create | $((rss_start / 1024)) MiB |"
  echo "| after the updates | $((rss_updates / 1024)) MiB (peak $((hwm_updates / 1024)) MiB) |"
  echo "| after compaction to revision ${compacted:-none} (last update: $last_rv) | $((rss_compacted / 1024)) MiB |"
  echo "| a watch from revision $first_rv afterwards | replayed $replayed bytes; RSS then $((rss_replay / 1024)) MiB |"
  [ "$failed" = 0 ] || echo "| failed updates | $failed |"
} >"$report"
cat "$report"
if $record; then
  hack/bench/record.sh watch-cache-memory "$report" "hack/bench/watch_cache_memory.sh"
fi
