//! A quick throughput probe (not the formal benchmark): concurrent creates per second on a
//! backend, and raw etcd puts per second at the same concurrency.
//!
//! ```text
//! cargo run -p edgefleet-e2e --example storage_bench -- embedded|etcd|etcd-raw [writers] [ops]
//! ```
//!
//! `embedded` writes to a temporary directory; the etcd modes start their own etcd.

use std::sync::Arc;

use anyhow::bail;
use bytes::Bytes;
use edgefleet_apiserver::storage::embedded::EmbeddedStore;
use edgefleet_apiserver::storage::etcd::EtcdStore;
use edgefleet_apiserver::storage::DynStorage;
use edgefleet_e2e::EtcdProcess;
use tokio::time::Instant;

/// Roughly the size of a small Kubernetes object in JSON.
const VALUE_BYTES: usize = 512;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("embedded");
    let writers: usize = args.get(1).map_or(Ok(64), |s| s.parse())?;
    let ops: usize = args.get(2).map_or(Ok(20_000), |s| s.parse())?;
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);

    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    let etcd = match mode {
        "etcd" | "etcd-raw" => Some(EtcdProcess::start().await?),
        "embedded" => None,
        other => bail!("unknown mode {other:?}"),
    };
    let started = Instant::now();
    let tasks: Vec<_> = if mode == "etcd-raw" {
        let client = etcd.as_ref().expect("etcd").client().await?;
        (0..writers)
            .map(|w| {
                let (mut kv, value) = (client.kv_client(), value.clone());
                tokio::spawn(async move {
                    for n in (w..ops).step_by(writers) {
                        kv.put(format!("/bench/{n:08}"), value.to_vec(), None)
                            .await?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect()
    } else {
        let store: DynStorage = match &etcd {
            Some(etcd) => Arc::new(EtcdStore::connect(etcd.config()).await?),
            None => Arc::new(EmbeddedStore::open(dir.path())?),
        };
        (0..writers)
            .map(|w| {
                let (store, value) = (store.clone(), value.clone());
                tokio::spawn(async move {
                    for n in (w..ops).step_by(writers) {
                        store
                            .create(&format!("bench/{n:08}"), value.clone())
                            .await?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect()
    };
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    println!(
        "{mode}: {ops} writes by {writers} writers in {elapsed:.2?}: {:.0}/s",
        ops as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
