//! The child of the storage crash tests: creates keys with many concurrent writers, forever,
//! and prints `<key> <mod_revision>` for each create once the store acknowledged it. The test
//! kills it with SIGKILL mid-burst and checks that every printed key is stored.
//!
//! ```text
//! storage-crash-writer embedded <dir> <key-prefix>
//! storage-crash-writer etcd <endpoint> <key-prefix>
//! ```

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use edgefleet_apiserver::storage::embedded::EmbeddedStore;
use edgefleet_apiserver::storage::etcd::{EtcdConfig, EtcdStore};
use edgefleet_apiserver::storage::DynStorage;

/// Concurrent writers, so that the store batches their creates.
const WRITERS: usize = 32;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [backend, location, prefix] = args.as_slice() else {
        bail!("usage: storage-crash-writer embedded|etcd <dir|endpoint> <key-prefix>");
    };
    let store: DynStorage = match backend.as_str() {
        "embedded" => Arc::new(EmbeddedStore::open(Path::new(location))?),
        "etcd" => {
            let config = EtcdConfig {
                endpoints: vec![location.clone()],
                ..EtcdConfig::default()
            };
            Arc::new(EtcdStore::connect(config).await?)
        }
        other => bail!("unknown backend {other:?}"),
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, prefix) = (store.clone(), prefix.clone());
            tokio::spawn(async move {
                for n in 0.. {
                    let key = format!("{prefix}{w:02}-{n:06}");
                    let kv = store.create(&key, Bytes::from(key.clone())).await?;
                    // One write per line, so a kill never leaves half a line.
                    let line = format!("{key} {}\n", kv.mod_revision);
                    std::io::stdout()
                        .lock()
                        .write_all(line.as_bytes())
                        .context("stdout")?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for writer in writers {
        writer.await??;
    }
    Ok(())
}
