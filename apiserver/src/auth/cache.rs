//! The short-lived answer cache in front of TokenReview and SubjectAccessReview, as kube's
//! `token/cache` and webhook authorizer caches behave:
//!
//! ```text
//!  get_or_fetch(key)
//!     │ fresh entry? ──────────────────────────────► answer (no request)
//!     │ lookup for key in flight? ─► wait for it ──► same answer (one request for all)
//!     ▼
//!  spawn fetch ─► Ok(v): cache for ttl(v) (0 = do not cache) ─► answer
//!               └ Err(e): not cached, so the next request asks again ─► error
//! ```
//!
//! The fetch runs as its own task: a caller that gives up (its client went away) does not cancel
//! the lookup the other waiters share, and the answer still lands in the cache. Entries expire
//! on `tokio::time::Instant`, so tests can pause the clock.
//!
//! The table is bounded: keys come from untrusted input (any bearer token), so when it is full
//! expired entries are swept (at most once per [`SWEEP_INTERVAL`]) and, if it is still full, new
//! answers are returned without being cached.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::time::Instant;

/// Kube sizes its token cache for 32k entries ("5k nodes and 10k namespaces, with a 2x margin").
pub const DEFAULT_MAX_ENTRIES: usize = 32 * 1024;
/// How often a full table may be swept for expired entries.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The fetch task ended without an answer (it panicked, or the runtime is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the shared lookup task did not finish")]
pub struct LookupAborted(#[source] pub tokio::task::JoinError);

type SharedFetch<V, E> = Shared<BoxFuture<'static, Result<V, Arc<E>>>>;

struct State<K, V, E> {
    entries: HashMap<K, (V, Instant)>,
    in_flight: HashMap<K, SharedFetch<V, E>>,
    last_sweep: Option<Instant>,
}

/// A TTL cache with coalesced lookups; cheap to clone (clones share the table).
pub struct LookupCache<K, V, E> {
    state: Arc<Mutex<State<K, V, E>>>,
    max_entries: usize,
}

impl<K, V, E> Clone for LookupCache<K, V, E> {
    fn clone(&self) -> Self {
        LookupCache {
            state: self.state.clone(),
            max_entries: self.max_entries,
        }
    }
}

impl<K, V, E> LookupCache<K, V, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: From<LookupAborted> + Send + Sync + 'static,
{
    pub fn new(max_entries: usize) -> Self {
        LookupCache {
            state: Arc::new(Mutex::new(State {
                entries: HashMap::new(),
                in_flight: HashMap::new(),
                last_sweep: None,
            })),
            max_entries,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K, V, E>> {
        // Every critical section leaves the maps consistent before anything can panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached answer for `key`, or the answer of one shared `fetch`; `ttl` says how long an
    /// answer stays (zero: not at all). Errors are never cached.
    pub async fn get_or_fetch<F, T>(&self, key: K, ttl: T, fetch: F) -> Result<V, Arc<E>>
    where
        F: Future<Output = Result<V, E>> + Send + 'static,
        T: FnOnce(&V) -> Duration + Send + 'static,
    {
        let shared = {
            let mut state = self.lock();
            let now = Instant::now();
            match state.entries.get(&key) {
                Some((value, expires)) if *expires > now => return Ok(value.clone()),
                Some(_) => {
                    state.entries.remove(&key);
                }
                None => {}
            }
            if let Some(shared) = state.in_flight.get(&key) {
                shared.clone()
            } else {
                let shared = self.spawn_fetch(key.clone(), ttl, fetch);
                state.in_flight.insert(key, shared.clone());
                shared
            }
        };
        shared.await
    }

    fn spawn_fetch<F, T>(&self, key: K, ttl: T, fetch: F) -> SharedFetch<V, E>
    where
        F: Future<Output = Result<V, E>> + Send + 'static,
        T: FnOnce(&V) -> Duration + Send + 'static,
    {
        let cache = self.clone();
        let retire = key.clone();
        let task = tokio::spawn(async move {
            let result = fetch.await;
            // Store and retire the in-flight entry in one critical section, so a caller arriving
            // now finds either the lookup or its answer, never neither.
            let mut state = cache.lock();
            state.in_flight.remove(&key);
            if let Ok(value) = &result {
                let ttl = ttl(value);
                if !ttl.is_zero() {
                    cache.insert(&mut state, key, value.clone(), ttl);
                }
            }
            result.map_err(Arc::new)
        });
        let this = self.clone();
        async move {
            match task.await {
                Ok(result) => result,
                Err(join) => {
                    // The task died before retiring its in-flight entry; retire it here so the
                    // key does not stay stuck on a lookup that will never answer.
                    this.lock().in_flight.remove(&retire);
                    Err(Arc::new(E::from(LookupAborted(join))))
                }
            }
        }
        .boxed()
        .shared()
    }

    fn insert(&self, state: &mut State<K, V, E>, key: K, value: V, ttl: Duration) {
        let now = Instant::now();
        if state.entries.len() >= self.max_entries
            && state
                .last_sweep
                .is_none_or(|last| now.duration_since(last) >= SWEEP_INTERVAL)
        {
            state.entries.retain(|_, (_, expires)| *expires > now);
            state.last_sweep = Some(now);
        }
        if state.entries.len() < self.max_entries {
            state.entries.insert(key, (value, now + ttl));
        }
    }

    /// Entries in the table, expired or not (for tests).
    #[cfg(test)]
    fn entries(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Debug, PartialEq)]
    enum TestError {
        Failed,
        Aborted,
    }

    impl From<LookupAborted> for TestError {
        fn from(_: LookupAborted) -> Self {
            TestError::Aborted
        }
    }

    type Cache = LookupCache<&'static str, u32, TestError>;

    /// A fetch that counts its calls and answers `value` (or fails when `value` is `None`).
    fn fetch(
        calls: &Arc<AtomicUsize>,
        value: Option<u32>,
    ) -> impl Future<Output = Result<u32, TestError>> + Send + 'static {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            value.ok_or(TestError::Failed)
        }
    }

    const TTL: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn answers_are_cached_for_their_ttl_then_fetched_again() {
        let cache = Cache::new(16);
        let calls = Arc::new(AtomicUsize::new(0));
        let get = |v| cache.get_or_fetch("k", |_| TTL, fetch(&calls, Some(v)));

        assert_eq!(get(1).await.unwrap(), 1);
        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        assert_eq!(get(2).await.unwrap(), 1, "still cached");
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(get(3).await.unwrap(), 3, "expired, fetched again");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_ttl_depends_on_the_answer_and_zero_does_not_cache() {
        let cache = Cache::new(16);
        let calls = Arc::new(AtomicUsize::new(0));
        let ttl = |v: &u32| Duration::from_secs(u64::from(*v));
        for _ in 0..2 {
            cache
                .get_or_fetch("zero", ttl, fetch(&calls, Some(0)))
                .await
                .unwrap();
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "a zero TTL bypasses the cache"
        );

        cache
            .get_or_fetch("five", ttl, fetch(&calls, Some(5)))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(4)).await;
        cache
            .get_or_fetch("five", ttl, fetch(&calls, Some(5)))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_are_not_cached() {
        let cache = Cache::new(16);
        let calls = Arc::new(AtomicUsize::new(0));
        let err = cache
            .get_or_fetch("k", |_| TTL, fetch(&calls, None))
            .await
            .unwrap_err();
        assert_eq!(*err, TestError::Failed);
        assert_eq!(
            cache
                .get_or_fetch("k", |_| TTL, fetch(&calls, Some(7)))
                .await
                .unwrap(),
            7
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_lookups_of_one_key_share_one_fetch() {
        let cache = Cache::new(16);
        let calls = Arc::new(AtomicUsize::new(0));
        // join_all polls every lookup once before any fetch can run, so all of them are
        // in flight together.
        let lookups = (0..8).map(|i| cache.get_or_fetch("k", |_| TTL, fetch(&calls, Some(i))));
        let answers = futures::future::join_all(lookups).await;
        assert!(answers.iter().all(|a| *a.as_ref().unwrap() == 0));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let other = cache.get_or_fetch("other", |_| TTL, fetch(&calls, Some(9)));
        assert_eq!(
            other.await.unwrap(),
            9,
            "other keys are looked up on their own"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_gives_up_does_not_cancel_the_shared_fetch() {
        let cache = Cache::new(16);
        let calls = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let slow = {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                released.await.ok();
                Ok(42)
            }
        };
        let mut abandoned = Box::pin(cache.get_or_fetch("k", |_| TTL, slow));
        // Poll once so the fetch starts, then drop the caller.
        assert!(futures::poll!(&mut abandoned).is_pending());
        drop(abandoned);
        release.send(()).unwrap();
        let answer = cache
            .get_or_fetch("k", |_| TTL, fetch(&calls, Some(0)))
            .await
            .unwrap();
        assert_eq!(answer, 42);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_sweeps_expired_entries_and_otherwise_stops_caching() {
        let cache = Cache::new(2);
        let calls = Arc::new(AtomicUsize::new(0));
        for key in ["a", "b"] {
            cache
                .get_or_fetch(key, |_| TTL, fetch(&calls, Some(1)))
                .await
                .unwrap();
        }
        // Full of live entries: "c" is answered but not cached.
        for _ in 0..2 {
            cache
                .get_or_fetch("c", |_| TTL, fetch(&calls, Some(1)))
                .await
                .unwrap();
        }
        assert_eq!((cache.entries(), calls.load(Ordering::SeqCst)), (2, 4));

        // Once they expired, the sweep makes room.
        tokio::time::advance(TTL).await;
        cache
            .get_or_fetch("c", |_| TTL, fetch(&calls, Some(1)))
            .await
            .unwrap();
        assert_eq!(cache.entries(), 1);
    }
}
