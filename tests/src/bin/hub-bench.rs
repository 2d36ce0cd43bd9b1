//! The hub's benchmarks (issue: the hub): creates/s through the hub on etcd against raw etcd
//! puts, `kubectl get clusters -A` over 10,000 clusters, one update reaching 10,000 watchers,
//! the hub's memory, and what the audit trail costs a request (the same GETs to a hub without
//! a trail, with one, and with one that fsyncs before acknowledging). Run by `hack/bench/hub.sh`, which builds in release mode and writes the
//! figures into BENCHMARKS.md.
//!
//! Method: every figure is measured in rounds; within a round the hub and its baseline run back
//! to back (interleaved), and the report gives the median round. The load generator runs on the
//! same machine as the hub and etcd, and its share of the CPU is part of every figure.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::Parser;
use edgefleet_e2e::client::HubClient;
use edgefleet_e2e::hub::Hub;
use edgefleet_e2e::procs::{cpu_seconds, load_average, rss_kib};
use edgefleet_e2e::tunnel_bench::load::percentile;
use edgefleet_e2e::EtcdProcess;
use futures::StreamExt;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Parser)]
struct Args {
    /// Rounds per figure (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent writers for the create benchmark.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Creates per round.
    #[arg(long, default_value_t = 5000)]
    creates: usize,
    /// Clusters for the list and watch benchmarks.
    #[arg(long, default_value_t = 10_000)]
    clusters: usize,
    /// Concurrent watchers.
    #[arg(long, default_value_t = 10_000)]
    watchers: usize,
    /// Sequential GETs per hub and round for the audit latency figure.
    #[arg(long, default_value_t = 2000)]
    audit_sequential: usize,
    /// Concurrent GETs per hub and round for the audit throughput figure (64 at a time).
    #[arg(long, default_value_t = 20_000)]
    audit_concurrent: usize,
    /// Write the report here as well as to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

const NS: &str = "bench";
/// Streams per HTTP/2 connection (the hub allows 1000).
const STREAMS_PER_CONNECTION: usize = 900;

fn cluster_body(name: &str, i: usize) -> Bytes {
    let region = ["eu", "us", "ap"][i % 3];
    let gpu = ["a100", "l4", "none"][i % 3];
    let body = json!({
        "apiVersion": "edgefleet.io/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": name, "labels": {"region": region, "gpu": gpu, "site": format!("store-{i:05}")}},
        "spec": {"kubernetesVersion": "v1.31.4+k3s1", "nodePools": [{"name": "gpu", "replicas": 2, "machineType": "l4-24g"}]},
    });
    Bytes::from(serde_json::to_vec(&body).unwrap())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn create_env(client: &HubClient) -> anyhow::Result<()> {
    let env = json!({"apiVersion": "edgefleet.io/v1alpha1", "kind": "Environment", "metadata": {"name": NS}});
    let (status, body) = client
        .call(
            Method::POST,
            "/apis/edgefleet.io/v1alpha1/environments",
            Some("application/json"),
            Bytes::from(env.to_string()),
        )
        .await?;
    if status != StatusCode::CREATED && status != StatusCode::CONFLICT {
        bail!(
            "creating the environment: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

/// Creates `count` clusters named `<prefix>-<i>` from `concurrency` tasks; returns creates/s.
async fn hub_creates(
    client: &HubClient,
    prefix: &str,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let path = format!("/apis/edgefleet.io/v1alpha1/namespaces/{NS}/clusters");
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|w| {
            let (client, path, prefix) = (client.clone(), path.clone(), prefix.to_string());
            tokio::spawn(async move {
                for i in (w..count).step_by(concurrency) {
                    let (status, body) = client
                        .call(
                            Method::POST,
                            &path,
                            Some("application/json"),
                            cluster_body(&format!("{prefix}-{i}"), i),
                        )
                        .await?;
                    if status != StatusCode::CREATED {
                        bail!("create: {status} {}", String::from_utf8_lossy(&body));
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Puts `count` keys of the size the hub stores, raw, at the same concurrency; returns puts/s.
async fn raw_puts(
    etcd: &EtcdProcess,
    prefix: &str,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let client = etcd.client().await?;
    // The stored form of one object: what the hub writes per create.
    let value = {
        let mut v: serde_json::Value = serde_json::from_slice(&cluster_body("x", 0))?;
        v["metadata"]["uid"] = json!("6c0d1e2f-0000-4000-8000-000000000000");
        v["metadata"]["creationTimestamp"] = json!("2026-11-21T08:00:00Z");
        v["metadata"]["generation"] = json!(1);
        v["metadata"]["managedFields"] = json!([{"manager": "hub-bench", "operation": "Update", "apiVersion": "edgefleet.io/v1alpha1", "time": "2026-11-21T08:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:gpu": {}, "f:region": {}, "f:site": {}}}, "f:spec": {".": {}, "f:kubernetesVersion": {}, "f:nodePools": {}}}}]);
        serde_json::to_vec(&v)?
    };
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|w| {
            let (mut kv, value, prefix) = (client.kv_client(), value.clone(), prefix.to_string());
            tokio::spawn(async move {
                for i in (w..count).step_by(concurrency) {
                    kv.put(format!("/bench-raw/{prefix}/{i}"), value.clone(), None)
                        .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Runs `kubectl get clusters -A` and returns its wall time and output line count.
/// One `kubectl get clusters -A` run.
struct KubectlRun {
    elapsed: Duration,
    lines: usize,
    /// Time client-go held requests back by its own rate limit (QPS 5, burst 10 in kubectl),
    /// from its `-v=4` "Waited for … due to client-side throttling" lines.
    throttled: Duration,
}

/// `kubectl get clusters -A EXTRA…`, timed.
fn kubectl_get_all(hub: &Hub, extra: &[&str]) -> anyhow::Result<KubectlRun> {
    let started = std::time::Instant::now();
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&hub.kubeconfig)
        .args(["get", "clusters", "-A", "-v=4"])
        .args(extra)
        .output()?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        bail!("kubectl get: {}", String::from_utf8_lossy(&out.stderr));
    }
    let throttled = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.split("Waited for ").nth(1))
        .filter_map(|rest| rest.split(" due to client-side throttling").next())
        .filter_map(parse_go_duration)
        .sum();
    Ok(KubectlRun {
        elapsed,
        lines: String::from_utf8_lossy(&out.stdout).lines().count(),
        throttled,
    })
}

/// Go's `time.Duration` text as klog prints it (`58.534238ms`, `1.2s`, `950µs`).
fn parse_go_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => value,
        "ms" => value / 1e3,
        "µs" | "us" => value / 1e6,
        "ns" => value / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

/// Opens `count` watches from `rv`; each reports the time it sees a line containing the round's
/// marker. Returns once every watch has its response headers.
async fn open_watchers(
    client: &HubClient,
    count: usize,
    rv: &str,
    tx: mpsc::UnboundedSender<(usize, Instant)>,
) -> anyhow::Result<()> {
    let path = format!("/apis/edgefleet.io/v1alpha1/namespaces/{NS}/clusters?watch=1&resourceVersion={rv}&timeoutSeconds=3600");
    let opened = futures::stream::iter(0..count)
        .map(|_| {
            let (client, path, tx) = (client.clone(), path.clone(), tx.clone());
            async move {
                let resp = client.send(Method::GET, &path, None, Bytes::new()).await?;
                if resp.status() != StatusCode::OK {
                    bail!("watch: {}", resp.status());
                }
                tokio::spawn(async move {
                    let mut body = resp.into_body();
                    let mut buf: Vec<u8> = Vec::new();
                    while let Some(Ok(frame)) = body.frame().await {
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        buf.extend_from_slice(&data);
                        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = buf.drain(..=end).collect();
                            if let Some(round) = marker(&line) {
                                let _ = tx.send((round, Instant::now()));
                            }
                        }
                    }
                });
                anyhow::Ok(())
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await;
    opened.into_iter().collect()
}

/// The benchmark round a watch event carries (`"bench-round":"<n>"`), if any.
/// Latency of `n` GETs of one Cluster, one after the other.
async fn gets_one_at_a_time(client: &HubClient, n: usize) -> anyhow::Result<Vec<Duration>> {
    let path = format!("/apis/edgefleet.io/v1alpha1/namespaces/{NS}/clusters/a-0");
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let (status, _) = client.call(Method::GET, &path, None, Bytes::new()).await?;
        if status != StatusCode::OK {
            bail!("GET {path}: {status}");
        }
        latencies.push(started.elapsed());
    }
    Ok(latencies)
}

/// GETs/s for `n` GETs of one Cluster, `concurrency` in flight.
async fn gets_concurrently(
    client: &HubClient,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let path = format!("/apis/edgefleet.io/v1alpha1/namespaces/{NS}/clusters/a-0");
    let started = Instant::now();
    let mut results = futures::stream::iter(0..n)
        .map(|_| client.call(Method::GET, &path, None, Bytes::new()))
        .buffer_unordered(concurrency);
    while let Some(result) = results.next().await {
        let (status, _) = result?;
        if status != StatusCode::OK {
            bail!("GET {path}: {status}");
        }
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

fn marker(line: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(line).ok()?;
    let at = text.find("\"bench-round\":\"")? + "\"bench-round\":\"".len();
    text[at..].split('"').next()?.parse().ok()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Per-round figures (a list) and the summary table, printed as they come.
    let mut rounds = Vec::new();
    let mut rows = Vec::new();
    let mut line = |s: String| {
        println!("{s}");
        if s.starts_with('|') {
            rows.push(s);
        } else {
            rounds.push(format!("- {}", s.trim()));
        }
    };
    line(format!(
        "machine: {} cores; load average at start: {}",
        std::thread::available_parallelism()?,
        load_average()
    ));

    // 1. Creates through the hub on etcd vs raw etcd puts, interleaved.
    {
        let etcd = EtcdProcess::start().await?;
        let hub = tokio::task::block_in_place(|| Hub::etcd(&etcd))?;
        let client = HubClient::connect(&hub.kubeconfig, 4).await?;
        create_env(&client).await?;
        hub_creates(&client, "warmup", 500, args.concurrency).await?;
        let (hub_pid, etcd_pid) = (hub.pid().context("hub pid")?, etcd.pid());
        let (mut through_hub, mut raw) = (Vec::new(), Vec::new());
        let (mut hub_cpu, mut etcd_cpu_hub, mut etcd_cpu_raw) =
            (Vec::new(), Vec::new(), Vec::new());
        // CPU microseconds per operation between two readings of a process's CPU seconds.
        let per_op = |before: f64, after: f64, ops: usize| (after - before) * 1e6 / ops as f64;
        for round in 0..args.rounds {
            let (h0, e0) = (cpu_seconds(hub_pid), cpu_seconds(etcd_pid));
            through_hub.push(
                hub_creates(
                    &client,
                    &format!("r{round}"),
                    args.creates,
                    args.concurrency,
                )
                .await?,
            );
            let (h1, e1) = (cpu_seconds(hub_pid), cpu_seconds(etcd_pid));
            raw.push(raw_puts(&etcd, &format!("r{round}"), args.creates, args.concurrency).await?);
            let e2 = cpu_seconds(etcd_pid);
            hub_cpu.push(per_op(h0, h1, args.creates));
            etcd_cpu_hub.push(per_op(e0, e1, args.creates));
            etcd_cpu_raw.push(per_op(e1, e2, args.creates));
            line(format!(
                "  round {round}: hub {:.0} creates/s (CPU per create: hub {:.0} µs, etcd {:.0} µs), raw etcd {:.0} puts/s (etcd CPU per put {:.0} µs) (load {})",
                through_hub[round],
                hub_cpu[round],
                etcd_cpu_hub[round],
                raw[round],
                etcd_cpu_raw[round],
                load_average()
            ));
        }
        let (h, r) = (median(through_hub), median(raw));
        line(format!(
            "| creates/s through the hub on etcd, {} writers, {} per round | {h:.0} | raw etcd puts {r:.0} | {:.2} (goal ≥ 0.80) |",
            args.concurrency,
            args.creates,
            h / r
        ));
        line(format!(
            "| CPU per create on the 2 shared cores: hub / etcd (a create is a compare-and-put transaction) | {:.0} µs / {:.0} µs | etcd per raw put: {:.0} µs | |",
            median(hub_cpu),
            median(etcd_cpu_hub),
            median(etcd_cpu_raw)
        ));
    }

    // 2. kubectl get clusters -A over N clusters, and the hub's memory.
    let etcd = EtcdProcess::start().await?;
    let hub = tokio::task::block_in_place(|| Hub::etcd(&etcd))?;
    let pid = hub.pid().context("hub pid")?;
    let client = HubClient::connect(
        &hub.kubeconfig,
        (args.watchers / STREAMS_PER_CONNECTION).max(1) + 1,
    )
    .await?;
    create_env(&client).await?;
    let rss_empty = rss_kib(pid);
    hub_creates(&client, "c", args.clusters, args.concurrency).await?;
    tokio::time::sleep(Duration::from_secs(2)).await; // let the watch cache settle before measuring memory
    let rss_clusters = rss_kib(pid);
    let mut kubectl = Vec::new();
    let mut throttled = Vec::new();
    let mut unchunked = Vec::new();
    let mut raw_range = Vec::new();
    let etcd_client = etcd.client().await?;
    for round in 0..args.rounds {
        let run = tokio::task::block_in_place(|| kubectl_get_all(&hub, &[]))?;
        let one = tokio::task::block_in_place(|| kubectl_get_all(&hub, &["--chunk-size=0"]))?;
        for lines in [run.lines, one.lines] {
            if lines != args.clusters + 1 {
                bail!(
                    "kubectl printed {lines} lines for {} clusters",
                    args.clusters
                );
            }
        }
        let elapsed = run.elapsed;
        let started = Instant::now();
        let mut kv = etcd_client.kv_client();
        let mut from = "/".to_string();
        let mut keys = 0;
        loop {
            let page = kv
                .get(
                    from.clone(),
                    Some(
                        etcd_client::GetOptions::new()
                            .with_range("0")
                            .with_limit(500),
                    ),
                )
                .await?;
            keys += page.kvs().len();
            match page.kvs().last() {
                Some(last) if page.more() => from = format!("{}\0", last.key_str()?),
                _ => break,
            }
        }
        let raw = started.elapsed();
        line(format!(
            "  round {round}: kubectl get clusters -A {:.0} ms ({:.0} ms of it throttled by client-go); with --chunk-size=0 {:.0} ms; raw etcd range of {keys} keys in pages of 500 {:.0} ms",
            elapsed.as_secs_f64() * 1e3,
            run.throttled.as_secs_f64() * 1e3,
            one.elapsed.as_secs_f64() * 1e3,
            raw.as_secs_f64() * 1e3
        ));
        kubectl.push(elapsed.as_secs_f64() * 1e3);
        throttled.push(run.throttled.as_secs_f64() * 1e3);
        unchunked.push(one.elapsed.as_secs_f64() * 1e3);
        raw_range.push(raw.as_secs_f64() * 1e3);
    }
    let (k, t, u, r) = (
        median(kubectl),
        median(throttled),
        median(unchunked),
        median(raw_range),
    );
    line(format!("| `kubectl get clusters -A`, {} clusters, pages of 500 (wall time of the command; of it, kubectl's own client-side throttling, QPS 5 burst 10) | {k:.0} ms ({t:.0} ms throttled) | raw etcd range in pages of 500: {r:.0} ms | {:.0} ms without the throttling (goal ≤ 1000 ms) |", args.clusters, k - t));
    line(format!("| `kubectl get clusters -A --chunk-size=0`, {} clusters (one request) | {u:.0} ms | | goal ≤ 1000 ms |", args.clusters));

    // 3. One update reaching N watchers.
    let (_, list) = client
        .call(
            Method::GET,
            &format!("/apis/edgefleet.io/v1alpha1/namespaces/{NS}/clusters?limit=1"),
            None,
            Bytes::new(),
        )
        .await?;
    let rv = serde_json::from_slice::<serde_json::Value>(&list)?["metadata"]["resourceVersion"]
        .as_str()
        .context("rv")?
        .to_string();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let opening = Instant::now();
    open_watchers(&client, args.watchers, &rv, tx).await?;
    line(format!(
        "  {} watches open in {:.1} s",
        args.watchers,
        opening.elapsed().as_secs_f64()
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_watchers = rss_kib(pid);
    let mut all_reached = Vec::new();
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    let target = format!("/apis/edgefleet.io/v1alpha1/namespaces/{NS}/clusters/c-0");
    for round in 0..args.rounds {
        let patch = json!({"metadata": {"labels": {"bench-round": round.to_string()}}});
        let t0 = Instant::now();
        let (status, _) = client
            .call(
                Method::PATCH,
                &target,
                Some("application/merge-patch+json"),
                Bytes::from(patch.to_string()),
            )
            .await?;
        if status != StatusCode::OK {
            bail!("patch: {status}");
        }
        let mut latencies = Vec::with_capacity(args.watchers);
        let deadline = t0 + Duration::from_secs(60);
        while latencies.len() < args.watchers {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((r, at))) if r == round => latencies.push(at - t0),
                Ok(Some(_)) => {}
                _ => bail!(
                    "only {} of {} watchers saw round {round}",
                    latencies.len(),
                    args.watchers
                ),
            }
        }
        latencies.sort();
        let (p50, p99, max) = (
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            *latencies.last().unwrap(),
        );
        line(format!(
            "  round {round}: p50 {:.0} ms, p99 {:.0} ms, all {} watchers {:.0} ms (load {})",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            args.watchers,
            max.as_secs_f64() * 1e3,
            load_average()
        ));
        all_reached.push(max.as_secs_f64() * 1e3);
        p50s.push(p50.as_secs_f64() * 1e3);
        p99s.push(p99.as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    line(format!(
        "| one update reaching {} watchers: all / p50 / p99 | {:.0} ms / {:.0} ms / {:.0} ms | | goal ≤ 1000 ms for all |",
        args.watchers,
        median(all_reached),
        median(p50s),
        median(p99s)
    ));
    let per_watcher = (rss_watchers.saturating_sub(rss_clusters)) as f64 / args.watchers as f64;
    line(format!(
        "| hub RSS: empty / {} clusters / + {} watchers | {} MiB / {} MiB / {} MiB | | {per_watcher:.1} KiB per watcher |",
        args.clusters,
        args.watchers,
        rss_empty / 1024,
        rss_clusters / 1024,
        rss_watchers / 1024
    ));
    drop(hub);
    drop(etcd);

    // 4. The audit trail's cost: one GET at a time (latency) and 64 at a time (throughput) to
    // three hubs on one etcd, in rotating order each round.
    {
        let etcd = EtcdProcess::start().await?;
        let trails = tempfile::tempdir()?;
        let audit_flags = |name: &str, fsync: bool| {
            let dir = trails.path().join(name);
            std::fs::create_dir_all(&dir).expect("a directory for the trail and key");
            let mut flags = vec![
                format!("--audit-log-dir={}", dir.join("trail").display()),
                format!(
                    "--audit-signing-key-file={}",
                    dir.join("signing.key").display()
                ),
            ];
            if fsync {
                flags.push("--audit-fsync".to_string());
            }
            flags
        };
        let variants = [
            ("no trail", Vec::new()),
            ("trail", audit_flags("written", false)),
            ("trail + fsync", audit_flags("synced", true)),
        ];
        let mut hubs = Vec::new();
        for (name, flags) in &variants {
            let hub = tokio::task::block_in_place(|| Hub::etcd_with(&etcd, flags))?;
            let client = HubClient::connect(&hub.kubeconfig, 1).await?;
            create_env(&client).await?;
            hub_creates(&client, "a", 1, 1).await?;
            gets_one_at_a_time(&client, 200).await?; // warm-up
            hubs.push((*name, hub, client));
        }
        let mut p50 = vec![Vec::new(); hubs.len()];
        let mut p99 = vec![Vec::new(); hubs.len()];
        let mut per_second = vec![Vec::new(); hubs.len()];
        for round in 0..args.rounds {
            for k in 0..hubs.len() {
                let i = (round + k) % hubs.len();
                let (name, _, client) = &hubs[i];
                let mut latencies = gets_one_at_a_time(client, args.audit_sequential).await?;
                latencies.sort();
                let rate = gets_concurrently(client, args.audit_concurrent, 64).await?;
                line(format!(
                    "  round {round}, {name}: GET p50 {:.0} µs, p99 {:.0} µs; {rate:.0} GETs/s at 64 concurrent (load {})",
                    percentile(&latencies, 0.5).as_secs_f64() * 1e6,
                    percentile(&latencies, 0.99).as_secs_f64() * 1e6,
                    load_average()
                ));
                p50[i].push(percentile(&latencies, 0.5).as_secs_f64() * 1e6);
                p99[i].push(percentile(&latencies, 0.99).as_secs_f64() * 1e6);
                per_second[i].push(rate);
            }
        }
        let p50: Vec<f64> = p50.into_iter().map(median).collect();
        let p99: Vec<f64> = p99.into_iter().map(median).collect();
        let per_second: Vec<f64> = per_second.into_iter().map(median).collect();
        for i in 1..hubs.len() {
            line(format!(
                "| audit overhead per request, {}: GET one at a time, p50 / p99 | {:.0} µs / {:.0} µs | no trail: {:.0} µs / {:.0} µs | +{:.0} µs p50 (goal ≤ 200 µs) |",
                hubs[i].0, p50[i], p99[i], p50[0], p99[0], p50[i] - p50[0]
            ));
        }
        for i in 1..hubs.len() {
            line(format!(
                "| audit records/s, {}: 64 GETs at a time, 2 records each | {:.0} records/s ({:.0} GETs/s) | no trail: {:.0} GETs/s | {:.2} |",
                hubs[i].0,
                2.0 * per_second[i],
                per_second[i],
                per_second[0],
                per_second[i] / per_second[0]
            ));
        }
    }

    let report = format!(
        "| figure | edgefleet | baseline | ratio / goal |\n|---|---|---|---|\n{}\n\nRounds (medians above):\n\n{}\n",
        rows.join("\n"),
        rounds.join("\n")
    );
    if let Some(out) = args.out {
        std::fs::write(out, report)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_klog_prints_them() {
        assert_eq!(
            parse_go_duration("58.534238ms"),
            Some(Duration::from_secs_f64(0.058534238))
        );
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("950µs"), Some(Duration::from_micros(950)));
        assert_eq!(parse_go_duration("soon"), None);
    }
}
