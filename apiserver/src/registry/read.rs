//! Reads: get and list, with kube's resourceVersion semantics.
//!
//! | request | served from |
//! |---|---|
//! | `resourceVersion` unset | storage, at its current revision (a consistent read) |
//! | `resourceVersion=0` | the watch cache (any recent state) |
//! | `resourceVersion=N` (NotOlderThan) | the watch cache once it reached N |
//! | `resourceVersion=N&resourceVersionMatch=Exact`, or `continue` | storage, at revision N |
//!
//! Lists are read in pages of at most `limit` matching objects; a filtered list may read more
//! storage pages to fill one page. The continue token pins the revision of the first page.

use std::sync::Arc;
use std::time::Duration;

use super::cacher::{CacheError, CachedObject};
use super::{keys, Filter, Resource};
use crate::errors::ApiError;
use crate::storage::{self, Revision};

/// How long a read at a revision the cache has not reached may wait for it.
const CACHE_CATCH_UP: Duration = Duration::from_secs(3);
/// Storage page size when a list has no limit.
const STORAGE_PAGE: usize = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ResourceVersionMatch {
    #[default]
    NotOlderThan,
    Exact,
}

#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    pub namespace: String,
    pub filter: Filter,
    /// `0` = no limit.
    pub limit: usize,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<ResourceVersionMatch>,
}

pub struct ListResult {
    pub items: Vec<Arc<CachedObject>>,
    pub revision: Revision,
    pub continue_token: Option<String>,
    pub remaining: Option<i64>,
}

/// Parses a `resourceVersion` parameter.
pub fn parse_revision(rv: &str) -> Result<Revision, ApiError> {
    rv.parse::<Revision>()
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| ApiError::BadRequest(format!("invalid resource version: {rv:?}")))
}

impl Resource {
    /// Decodes a stored value into a cached object.
    pub(crate) fn cached(&self, kv: &storage::KeyValue) -> Result<Arc<CachedObject>, ApiError> {
        (super::decoder())(kv)
            .map(Arc::new)
            .map_err(ApiError::Internal)
    }

    /// One object, read from storage unless `resource_version` allows the cache.
    pub async fn get(
        &self,
        namespace: &str,
        name: &str,
        resource_version: Option<&str>,
    ) -> Result<Arc<CachedObject>, ApiError> {
        let key = self.key(namespace, name);
        match resource_version.filter(|rv| !rv.is_empty()) {
            None => {
                let kv = self
                    .store
                    .get(&key)
                    .await?
                    .ok_or_else(|| self.not_found(name))?;
                self.cached(&kv)
            }
            Some(rv) => {
                let revision = parse_revision(rv)?;
                self.cacher
                    .wait_for(revision, CACHE_CATCH_UP)
                    .await
                    .map_err(cache_error)?;
                self.cacher.get(&key).0.ok_or_else(|| self.not_found(name))
            }
        }
    }

    pub async fn list(&self, opts: &ListOptions) -> Result<ListResult, ApiError> {
        let mut prefix = self.list_prefix(&opts.namespace);
        // `fieldSelector=metadata.namespace=x` over all namespaces narrows like a namespaced list.
        if opts.namespace.is_empty() && self.namespaced() {
            if let Some(ns) = opts.filter.fields.required_value("metadata.namespace") {
                prefix = keys::prefix(super::GROUP, self.plural(), Some(ns));
            }
        }

        if let Some(token) = &opts.continue_token {
            if opts
                .resource_version
                .as_deref()
                .is_some_and(|rv| !rv.is_empty())
            {
                return Err(ApiError::BadRequest(
                    "specifying resource version is not allowed when using continue".into(),
                ));
            }
            let (start, revision) = keys::decode_continue(&self.key_prefix, token)?;
            if !start.starts_with(&prefix) {
                return Err(ApiError::BadRequest(
                    "continue key is not valid: not in this list's scope".into(),
                ));
            }
            return self
                .list_storage(&prefix, opts, Some(start), Some(revision))
                .await
                .map_err(expired_continue);
        }

        match (
            opts.resource_version.as_deref().filter(|rv| !rv.is_empty()),
            opts.resource_version_match,
        ) {
            (None, Some(_)) => Err(ApiError::BadRequest(
                "resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
            )),
            (None, None) => self.list_storage(&prefix, opts, None, None).await,
            (Some(rv), Some(ResourceVersionMatch::Exact)) => {
                let revision = parse_revision(rv)?;
                if revision == 0 {
                    return Err(ApiError::BadRequest(
                        "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\""
                            .into(),
                    ));
                }
                self.list_storage(&prefix, opts, None, Some(revision)).await
            }
            (Some(rv), _) => {
                let revision = parse_revision(rv)?;
                self.cacher
                    .wait_for(revision, CACHE_CATCH_UP)
                    .await
                    .map_err(cache_error)?;
                Ok(self.list_cache(&prefix, opts))
            }
        }
    }

    /// A page from the watch cache; further pages come from storage at the same revision.
    fn list_cache(&self, prefix: &str, opts: &ListOptions) -> ListResult {
        let snapshot = self.cacher.snapshot(prefix);
        let mut items = Vec::new();
        let mut continue_token = None;
        let mut remaining = None;
        for (i, obj) in snapshot.objects.iter().enumerate() {
            if !opts.filter.matches(obj) {
                continue;
            }
            if opts.limit > 0 && items.len() == opts.limit {
                let last = items
                    .last()
                    .map(|o: &Arc<CachedObject>| o.key.clone())
                    .unwrap_or_default();
                continue_token = Some(keys::encode_continue(
                    &self.key_prefix,
                    &last,
                    snapshot.revision,
                ));
                if opts.filter.is_everything() {
                    remaining = Some((snapshot.objects.len() - i) as i64);
                }
                break;
            }
            items.push(obj.clone());
        }
        ListResult {
            items,
            revision: snapshot.revision,
            continue_token,
            remaining,
        }
    }

    /// Reads pages from storage at one revision until `limit` objects match or the keys run out.
    async fn list_storage(
        &self,
        prefix: &str,
        opts: &ListOptions,
        start: Option<String>,
        revision: Option<Revision>,
    ) -> Result<ListResult, ApiError> {
        let page_size = if opts.limit == 0 {
            STORAGE_PAGE
        } else {
            opts.limit.clamp(1, 10_000)
        };
        let mut request = storage::ListOptions {
            revision,
            start,
            limit: page_size,
        };
        let mut items = Vec::new();
        let read_revision = loop {
            let page = self.store.list(prefix, request.clone()).await?;
            let mut last_examined = None;
            for (i, kv) in page.items.iter().enumerate() {
                let obj = self.cached(kv)?;
                last_examined = Some(kv.key.clone());
                if opts.filter.matches(&obj) {
                    items.push(obj);
                    let more_here = i + 1 < page.items.len();
                    if opts.limit > 0 && items.len() == opts.limit && (more_here || page.more) {
                        let token = keys::encode_continue(&self.key_prefix, &kv.key, page.revision);
                        let remaining = opts.filter.is_everything().then(|| {
                            let here = (page.items.len() - i - 1) as i64;
                            here + page.remaining.unwrap_or(0)
                        });
                        return Ok(ListResult {
                            items,
                            revision: page.revision,
                            continue_token: Some(token),
                            remaining,
                        });
                    }
                }
            }
            match (page.more, last_examined) {
                (true, Some(last)) => {
                    request.revision = Some(page.revision);
                    request.start = Some(format!("{last}\u{0}"));
                }
                _ => break page.revision,
            }
        };
        Ok(ListResult {
            items,
            revision: read_revision,
            continue_token: None,
            remaining: None,
        })
    }
}

/// A cache read that cannot be served.
pub(crate) fn cache_error(err: CacheError) -> ApiError {
    match err {
        CacheError::TooOld { requested, horizon } => {
            ApiError::Expired(format!("too old resource version: {requested} ({horizon})"))
        }
        CacheError::TooNew { requested, current } => {
            ApiError::TooLargeResourceVersion { requested, current }
        }
    }
}

/// kube's message when a continue token's revision was compacted.
fn expired_continue(err: ApiError) -> ApiError {
    match err {
        ApiError::Expired(_) => ApiError::Expired(
            "The provided continue parameter is too old to display a consistent list result. You can \
             start a new list without the continue parameter."
                .into(),
        ),
        other => other,
    }
}
