//! The etcd backend: the production store, one etcd (or a 3/5-member cluster) shared by every
//! hub replica. Uses only the etcd 3.4 v3 API (Debian ships 3.4).
//!
//! Keys given to the trait are logical (`edgefleet.io/clusters/retail/edge-1`); etcd holds
//! them under a prefix (`/registry/edgefleet.io/clusters/retail/edge-1`), which is stripped on
//! the way out. Values are stored as given; revisions are etcd's own.
//!
//! ```text
//!  create  Txn(create_revision(k) == 0                    → put            | fail: AlreadyExists)
//!    guarded by g: Txn(create_revision(k) == 0 ∧ version(g) > 0 ∧ mod_revision(g) == exp → put
//!                      | else count k, get g → AlreadyExists / NotFound(g) / Conflict(g))
//!  update  Txn(version(k) > 0 ∧ mod_revision(k) == exp    → put, prev_kv   | else get → NotFound/Conflict)
//!  delete  Txn(version(k) > 0 [∧ mod_revision(k) == exp]  → delete, prev_kv | else get → NotFound/Conflict)
//!  list    Range(prefix.., revision, limit) → more, count
//!  watch   Watch(prefix, start_revision = after + 1, prev_kv, progress_notify)
//! ```
//!
//! `version(k) > 0` guards an update with `expected == 0`: etcd compares a missing key's
//! revisions as 0, so without it such an update would create the key (and `version(g) > 0`
//! keeps a guard expecting 0 from holding on a missing guard key).
//!
//! Progress items are etcd's progress notifications, sent every
//! `--experimental-watch-progress-notify-interval` (10 minutes unless configured).
//!
//! etcd does not say how far it compacted when it refuses a range for that reason, so the
//! `compacted` of such a [`StorageError::Compacted`] is the lowest it can be (`requested + 1`);
//! a watch's cancellation does carry it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions,
    Identity, KvClient, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
    WatchClient, WatchOptions,
};
use futures::StreamExt;

use super::{
    check_value_size, Event, EventKind, Guard, KeyValue, ListOptions, ListResult, Result, Revision,
    Storage, StorageError, WatchItem, WatchStream,
};

/// How long connecting to an etcd endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one unary request may take before the store reports etcd unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2 keepalive, as kube-apiserver sets it for etcd; etcd refuses pings more frequent than
/// its `--grpc-keepalive-min-time` (5s by default).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The key through which hub replicas agree who compacts, shared with kube-apiserver: etcd's
/// compaction is global, so anyone compacting the same etcd should coordinate on it.
pub const COMPACT_REV_KEY: &str = "compact_rev_key";

/// How to reach etcd.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// `http://host:port` or `https://host:port`; `host:port` picks the scheme from whether
    /// TLS files are given.
    pub endpoints: Vec<String>,
    /// Prepended to every key; a trailing `/` is added if missing.
    pub prefix: String,
    /// CA bundle to verify etcd's serving certificate.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, for etcd's `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            prefix: "/registry/".to_string(),
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }
}

/// Why etcd could not be used; the source of [`StorageError::Unavailable`].
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd request failed")]
    Request(#[source] etcd_client::Error),
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("etcd watch was canceled: {0}")]
    WatchCanceled(String),
    #[error("etcd watch stream ended")]
    WatchEnded,
    #[error("unexpected etcd response: {0}")]
    Protocol(&'static str),
    #[error("reading {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid etcd configuration: {0}")]
    Config(&'static str),
}

impl From<EtcdError> for StorageError {
    fn from(e: EtcdError) -> Self {
        StorageError::Unavailable(Box::new(e))
    }
}

/// The outcome of one compare-and-swap on [`COMPACT_REV_KEY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactionClaim {
    /// Whether this caller won the interval and should compact.
    pub won: bool,
    /// The key's version now: what to expect at the next attempt.
    pub version: i64,
    /// etcd's revision when the claim was decided.
    pub revision: Revision,
}

/// The etcd store. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct EtcdStore {
    kv: KvClient,
    watch: WatchClient,
    prefix: String,
    /// The highest compaction this process made or was told of (shared by clones, so the
    /// compactor's handle and the registry's agree).
    compacted: Arc<AtomicI64>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// How an etcd call failed, as far as the trait cares.
enum Failure {
    Compacted,
    FutureRevision,
    /// The request is over etcd's `--max-request-bytes`.
    TooLarge,
    Other(StorageError),
}

impl From<EtcdError> for Failure {
    fn from(e: EtcdError) -> Self {
        Failure::Other(e.into())
    }
}

fn classify(error: etcd_client::Error) -> Failure {
    // etcd reports both as gRPC OutOfRange; only the message tells them apart.
    if let etcd_client::Error::GRpcStatus(status) = &error {
        if status
            .message()
            .contains("required revision has been compacted")
        {
            return Failure::Compacted;
        }
        if status
            .message()
            .contains("required revision is a future revision")
        {
            return Failure::FutureRevision;
        }
        if status.message().contains("request is too large") {
            return Failure::TooLarge;
        }
    }
    Failure::Other(EtcdError::Request(error).into())
}

/// Runs one etcd request with the request timeout.
async fn call<T>(
    request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) => Err(classify(error)),
        Err(_) => Err(EtcdError::Timeout(REQUEST_TIMEOUT).into()),
    }
}

/// For calls where neither compaction nor a future revision can happen.
fn plain(failure: Failure) -> StorageError {
    match failure {
        Failure::Other(e) => e,
        Failure::Compacted => EtcdError::Protocol("unexpected compaction error").into(),
        Failure::FutureRevision => EtcdError::Protocol("unexpected future revision error").into(),
        Failure::TooLarge => EtcdError::Protocol("unexpected request size error").into(),
    }
}

/// For writes of `value` to `key`: etcd's size refusal is the caller's to hear about.
fn written<'a>(key: &'a str, value: &'a Bytes) -> impl FnOnce(Failure) -> StorageError + 'a {
    move |failure| match failure {
        Failure::TooLarge => StorageError::TooLarge {
            key: key.to_string(),
            size: value.len(),
        },
        other => plain(other),
    }
}

/// The first key after every key that starts with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte is 0xff, or the prefix is empty: the range runs to the end of the keyspace.
    vec![0]
}

fn read_file(path: &PathBuf) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|source| EtcdError::ReadFile {
        path: path.clone(),
        source,
    })
}

fn revision_of(response: &TxnResponse) -> Result<Revision> {
    response
        .header()
        .map(|h| h.revision())
        .ok_or_else(|| EtcdError::Protocol("response without header").into())
}

impl EtcdStore {
    /// Connects to etcd and checks that it answers.
    pub async fn connect(config: EtcdConfig) -> Result<EtcdStore> {
        if config.endpoints.is_empty() {
            return Err(EtcdError::Config("no endpoints").into());
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true);
        if config.ca_file.is_some() || config.cert_file.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &config.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read_file(ca)?));
            }
            match (&config.cert_file, &config.key_file) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(Identity::from_pem(read_file(cert)?, read_file(key)?));
                }
                (None, None) => {}
                _ => return Err(EtcdError::Config("cert_file and key_file go together").into()),
            }
            options = options.with_tls(tls);
        }
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(EtcdError::Request)?;
        let mut prefix = config.prefix;
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        let store = EtcdStore {
            kv: client.kv_client(),
            watch: client.watch_client(),
            prefix,
            compacted: Arc::new(AtomicI64::new(0)),
        };
        // The client connects lazily; fail now rather than at the first request.
        store.current_revision().await?;
        tracing::info!(endpoints = ?config.endpoints, prefix = %store.prefix, "connected to etcd");
        Ok(store)
    }

    /// The key prefix in etcd.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// One round of the compaction election kube-apiserver runs: compare-and-swap
    /// [`COMPACT_REV_KEY`] from `expected_version` to a new version holding `revision`. The
    /// winner compacts; a loser learns the version to expect next time.
    pub async fn claim_compaction(
        &self,
        expected_version: i64,
        revision: Revision,
    ) -> Result<CompactionClaim> {
        let txn = Txn::new()
            .when([Compare::version(
                COMPACT_REV_KEY,
                CompareOp::Equal,
                expected_version,
            )])
            .and_then([TxnOp::put(COMPACT_REV_KEY, revision.to_string(), None)])
            .or_else([TxnOp::get(COMPACT_REV_KEY, None)]);
        let response = call(self.kv.clone().txn(txn)).await.map_err(plain)?;
        let current = revision_of(&response)?;
        if response.succeeded() {
            return Ok(CompactionClaim {
                won: true,
                version: expected_version + 1,
                revision: current,
            });
        }
        let version = match response.op_responses().first() {
            Some(TxnOpResponse::Get(get)) => get.kvs().first().map_or(0, |kv| kv.version()),
            _ => return Err(EtcdError::Protocol("compaction claim without a get").into()),
        };
        Ok(CompactionClaim {
            won: false,
            version,
            revision: current,
        })
    }

    fn full_key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(self.prefix.as_bytes());
        full.extend_from_slice(key.as_bytes());
        full
    }

    fn logical(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        let key = kv
            .key()
            .strip_prefix(self.prefix.as_bytes())
            .ok_or_else(|| StorageError::Corrupt(format!("etcd key outside {:?}", self.prefix)))?;
        let key = std::str::from_utf8(key)
            .map_err(|_| StorageError::Corrupt("etcd key is not UTF-8".to_string()))?;
        Ok(KeyValue {
            key: key.to_string(),
            value: Bytes::copy_from_slice(kv.value()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        })
    }

    /// The reason a refused write's else-branch read of `key` gives for the refusal.
    fn refusal(
        &self,
        key: &str,
        expected: Option<Revision>,
        read: Option<&TxnOpResponse>,
    ) -> StorageError {
        let current = match read {
            Some(TxnOpResponse::Get(get)) => get.kvs().first().map(|kv| self.logical(kv)),
            _ => return EtcdError::Protocol("refused write without a get").into(),
        };
        match (current, expected) {
            (None, _) => StorageError::NotFound {
                key: key.to_string(),
            },
            (Some(Err(e)), _) => e,
            (Some(Ok(current)), Some(expected)) => StorageError::Conflict {
                key: key.to_string(),
                expected,
                current: Box::new(current),
            },
            // Without a precondition only absence refuses a write.
            (Some(Ok(_)), None) => EtcdError::Protocol("unconditional write refused").into(),
        }
    }

    async fn future_revision(&self, requested: Revision) -> StorageError {
        match self.current_revision().await {
            Ok(current) => StorageError::FutureRevision { requested, current },
            Err(e) => e,
        }
    }
}

#[async_trait]
impl Storage for EtcdStore {
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        self.create_guarded(key, value, None).await
    }

    async fn create_guarded(
        &self,
        key: &str,
        value: Bytes,
        guard: Option<Guard>,
    ) -> Result<KeyValue> {
        check_value_size(key, &value)?;
        let full = self.full_key(key);
        let mut compares = vec![Compare::create_revision(full.clone(), CompareOp::Equal, 0)];
        // Without a guard only the key's existence refuses: nothing to read.
        let mut reads = Vec::new();
        if let Some(guard) = &guard {
            let guard_full = self.full_key(&guard.key);
            compares.push(Compare::version(guard_full.clone(), CompareOp::Greater, 0));
            compares.push(Compare::mod_revision(
                guard_full.clone(),
                CompareOp::Equal,
                guard.mod_revision,
            ));
            // Read in the same transaction, so the error describes the state that refused.
            reads.push(TxnOp::get(
                full.clone(),
                Some(GetOptions::new().with_count_only()),
            ));
            reads.push(TxnOp::get(guard_full, None));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then([TxnOp::put(full, value.to_vec(), None)])
            .or_else(reads);
        let response = call(self.kv.clone().txn(txn))
            .await
            .map_err(written(key, &value))?;
        if !response.succeeded() {
            let already_exists = StorageError::AlreadyExists {
                key: key.to_string(),
            };
            let Some(guard) = guard else {
                return Err(already_exists);
            };
            let reads = response.op_responses();
            return Err(match reads.first() {
                Some(TxnOpResponse::Get(get)) if get.count() > 0 => already_exists,
                Some(TxnOpResponse::Get(_)) => {
                    self.refusal(&guard.key, Some(guard.mod_revision), reads.get(1))
                }
                _ => EtcdError::Protocol("refused create without a get").into(),
            });
        }
        let revision = revision_of(&response)?;
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision: revision,
            mod_revision: revision,
        })
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let response = call(self.kv.clone().get(self.full_key(key), None))
            .await
            .map_err(plain)?;
        response
            .kvs()
            .first()
            .map(|kv| self.logical(kv))
            .transpose()
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult> {
        let from = match &opts.start {
            Some(start) if start.as_str() > prefix => start.as_str(),
            _ => prefix,
        };
        let mut options = GetOptions::new()
            .with_range(prefix_end(&self.full_key(prefix)))
            .with_limit(i64::try_from(opts.limit).unwrap_or(i64::MAX));
        let requested = opts.revision.filter(|r| *r > 0);
        if let Some(revision) = requested {
            options = options.with_revision(revision);
        }
        let response = match call(self.kv.clone().get(self.full_key(from), Some(options))).await {
            Ok(response) => response,
            Err(Failure::Compacted) => {
                let requested = requested.unwrap_or_default();
                return Err(StorageError::Compacted {
                    requested,
                    compacted: requested + 1,
                });
            }
            Err(Failure::FutureRevision) => {
                return Err(self.future_revision(requested.unwrap_or_default()).await)
            }
            Err(failure) => return Err(plain(failure)),
        };
        let items = response
            .kvs()
            .iter()
            .map(|kv| self.logical(kv))
            .collect::<Result<Vec<_>>>()?;
        let revision = match requested {
            Some(revision) => revision,
            None => response
                .header()
                .map(|h| h.revision())
                .ok_or(EtcdError::Protocol("response without header"))?,
        };
        // `count` is every key in the range, not only those returned.
        let remaining = response.count() - items.len() as i64;
        Ok(ListResult {
            items,
            revision,
            more: response.more(),
            remaining: Some(remaining),
        })
    }

    async fn update(&self, key: &str, expected: Revision, value: Bytes) -> Result<KeyValue> {
        check_value_size(key, &value)?;
        let full = self.full_key(key);
        let txn = Txn::new()
            .when([
                Compare::version(full.clone(), CompareOp::Greater, 0),
                Compare::mod_revision(full.clone(), CompareOp::Equal, expected),
            ])
            .and_then([TxnOp::put(
                full.clone(),
                value.to_vec(),
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(full, None)]);
        let response = call(self.kv.clone().txn(txn))
            .await
            .map_err(written(key, &value))?;
        if !response.succeeded() {
            return Err(self.refusal(key, Some(expected), response.op_responses().first()));
        }
        let revision = revision_of(&response)?;
        let create_revision = match response.op_responses().first() {
            Some(TxnOpResponse::Put(put)) => put.prev_key().map(|kv| kv.create_revision()),
            _ => None,
        }
        .ok_or(EtcdError::Protocol("update without the previous value"))?;
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision,
            mod_revision: revision,
        })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        let full = self.full_key(key);
        let mut guards = vec![Compare::version(full.clone(), CompareOp::Greater, 0)];
        if let Some(expected) = expected {
            guards.push(Compare::mod_revision(
                full.clone(),
                CompareOp::Equal,
                expected,
            ));
        }
        let txn = Txn::new()
            .when(guards)
            .and_then([TxnOp::delete(
                full.clone(),
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(full, None)]);
        let response = call(self.kv.clone().txn(txn)).await.map_err(plain)?;
        if !response.succeeded() {
            return Err(self.refusal(key, expected, response.op_responses().first()));
        }
        let revision = revision_of(&response)?;
        let last = match response.op_responses().first() {
            Some(TxnOpResponse::Delete(delete)) => {
                delete.prev_kvs().first().map(|kv| self.logical(kv))
            }
            _ => None,
        }
        .ok_or(EtcdError::Protocol("delete without the deleted value"))??;
        Ok(KeyValue {
            mod_revision: revision,
            ..last
        })
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let full_prefix = self.full_key(prefix);
        // Refuse a compacted start right away: etcd reports it only after the watch is
        // created, as a cancellation. A range at `after + 1` fails exactly when the watch would.
        let probe = GetOptions::new().with_count_only().with_revision(after + 1);
        match call(self.kv.clone().get(full_prefix.clone(), Some(probe))).await {
            Ok(_) | Err(Failure::FutureRevision) => {}
            Err(Failure::Compacted) => {
                return Err(StorageError::Compacted {
                    requested: after,
                    compacted: after + 2,
                })
            }
            Err(failure) => return Err(plain(failure)),
        }
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(after + 1)
            .with_prev_key()
            .with_progress_notify();
        let stream = call(self.watch.clone().watch(full_prefix, Some(options)))
            .await
            .map_err(plain)?;
        let watcher = EtcdWatcher {
            store: self.clone(),
            stream,
            after,
            pending: std::collections::VecDeque::new(),
            ended: false,
        };
        Ok(futures::stream::unfold(watcher, |mut watcher| async move {
            let item = watcher.next().await?;
            Some((item, watcher))
        })
        .boxed())
    }

    async fn current_revision(&self) -> Result<Revision> {
        let options = GetOptions::new().with_count_only();
        let response = call(self.kv.clone().get(self.prefix.as_bytes(), Some(options)))
            .await
            .map_err(plain)?;
        response
            .header()
            .map(|h| h.revision())
            .ok_or_else(|| EtcdError::Protocol("response without header").into())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        match call(self.kv.clone().compact(revision, None)).await {
            // Compacting to where etcd already compacted, or below, is a no-op.
            Ok(_) | Err(Failure::Compacted) => {
                self.compacted.fetch_max(revision, Ordering::AcqRel);
                Ok(())
            }
            Err(Failure::FutureRevision) => Err(self.future_revision(revision).await),
            Err(failure) => Err(plain(failure)),
        }
    }

    fn compacted_revision(&self) -> Revision {
        self.compacted.load(Ordering::Acquire)
    }
}

/// Turns etcd watch responses into watch items.
struct EtcdWatcher {
    store: EtcdStore,
    stream: etcd_client::WatchStream,
    after: Revision,
    pending: std::collections::VecDeque<WatchItem>,
    ended: bool,
}

impl EtcdWatcher {
    async fn next(&mut self) -> Option<Result<WatchItem>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(Ok(item));
            }
            if self.ended {
                return None;
            }
            if let Err(error) = self.receive().await {
                self.ended = true;
                return Some(Err(error));
            }
        }
    }

    /// Queues the items of the next response.
    async fn receive(&mut self) -> Result<()> {
        let response = match self.stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Err(EtcdError::WatchEnded.into()),
            Err(error) => return Err(EtcdError::Request(error).into()),
        };
        if response.canceled() {
            if response.compact_revision() > 0 {
                self.store
                    .compacted
                    .fetch_max(response.compact_revision(), Ordering::AcqRel);
                return Err(StorageError::Compacted {
                    requested: self.after,
                    compacted: response.compact_revision(),
                });
            }
            return Err(EtcdError::WatchCanceled(response.cancel_reason().to_string()).into());
        }
        if response.events().is_empty() {
            // The creation acknowledgement carries nothing; anything else empty is a progress
            // notification.
            if !response.created() {
                if let Some(header) = response.header() {
                    self.pending
                        .push_back(WatchItem::Progress(header.revision()));
                }
            }
            return Ok(());
        }
        for event in response.events() {
            let event = self.event(event)?;
            self.pending.push_back(WatchItem::Event(event));
        }
        Ok(())
    }

    fn event(&self, event: &etcd_client::Event) -> Result<Event> {
        let kv = event
            .kv()
            .ok_or(EtcdError::Protocol("watch event without a key"))?;
        let prev = event
            .prev_kv()
            .map(|prev| self.store.logical(prev))
            .transpose()?;
        match event.event_type() {
            EventType::Put if kv.create_revision() == kv.mod_revision() => Ok(Event {
                kind: EventKind::Created,
                kv: self.store.logical(kv)?,
                prev: None,
            }),
            EventType::Put => Ok(Event {
                kind: EventKind::Updated,
                kv: self.store.logical(kv)?,
                prev,
            }),
            EventType::Delete => match prev {
                Some(last) => Ok(Event {
                    kind: EventKind::Deleted,
                    kv: KeyValue {
                        mod_revision: kv.mod_revision(),
                        ..last
                    },
                    prev: None,
                }),
                // etcd could not read the value before the deletion: its revision is already
                // compacted, so the watcher is too far behind to go on.
                None => Err(StorageError::Compacted {
                    requested: self.after,
                    compacted: kv.mod_revision(),
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/registry/a/"), b"/registry/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
