//! Keeps a real cluster's facts current with a list+watch of its nodes (not a poll: a watch
//! costs the edge kube-apiserver nothing while nodes do not change, and reports a node going
//! NotReady at once).
//!
//! The loop is a three-state machine:
//!
//! ```text
//!          ┌──────────────────────────────────────────────┐
//!          ▼                                              │ watch expired (410 Gone)
//!   List { failures } ── /version + paginated node list ──► Watch { resource_version }
//!          ▲      │ failed                                 │  Added/Modified/Deleted: update one
//!          │      ▼                                        │  summary, publish if the facts changed
//!   Retry { failures } ◄──────── failed ───────────────────┤  Bookmark: advance resource_version
//!     wait min(CAP, BASE·2ⁿ)                               │  ended (timeoutSeconds): re-read
//!                                                          └─ /version, watch again from there
//! ```
//!
//! Only [`NodeFacts`] summaries are kept, never whole `Node` objects, and a new line goes to the
//! feed only when the computed facts differ from the last published ones (node heartbeats that
//! change nothing the hub sees publish nothing).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use edgefleet_api::agent::ClusterFacts;
use edgefleet_tunnel::error_chain;
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::Api;
use tokio::sync::watch;

use super::stream::FactsFeed;
use super::{cluster_facts, facts_line, NodeFacts};

use crate::timeouts::{
    NODE_LIST_PAGE_SIZE, NODE_WATCH_RETRY_BASE, NODE_WATCH_RETRY_CAP, NODE_WATCH_TIMEOUT_SECONDS,
};

/// A feed with no facts yet, and its sender.
pub fn feed() -> (watch::Sender<Option<Bytes>>, FactsFeed) {
    watch::channel(None)
}

/// Watches the cluster behind `client` and publishes its facts to `publish`.
pub struct FactsWatcher {
    client: kube::Client,
    nodes: Api<Node>,
    known: Known,
}

/// What the watcher knows, and what it last published.
struct Known {
    kubernetes_version: String,
    nodes: HashMap<String, NodeFacts>,
    published: Option<ClusterFacts>,
    publish: watch::Sender<Option<Bytes>>,
}

impl Known {
    fn publish(&mut self) {
        let facts = cluster_facts(&self.kubernetes_version, self.nodes.values());
        if self.published.as_ref() != Some(&facts) {
            tracing::info!(
                kubernetes_version = %facts.kubernetes_version,
                nodes_ready = facts.nodes.ready,
                nodes_total = facts.nodes.total,
                gpu_models = facts.gpus.len(),
                "cluster facts changed"
            );
            self.publish.send_replace(Some(facts_line(&facts)));
            self.published = Some(facts);
        }
    }
}

enum State {
    /// Read `/version` and list every node, replacing what is known. `failures` attempts have
    /// failed in a row before this one.
    List { failures: u32 },
    /// Watch nodes from `resource_version`.
    Watch { resource_version: String },
    /// Wait, then list again.
    Retry { failures: u32 },
}

/// How a watch ended without an error.
enum WatchEnd {
    /// The server closed it (our `timeoutSeconds`); continue from this resource version.
    Closed { resource_version: String },
    /// The resource version is too old to watch from (410 Gone): list again.
    Expired,
}

impl FactsWatcher {
    /// A watcher publishing to `publish`.
    pub fn new(client: kube::Client, publish: watch::Sender<Option<Bytes>>) -> Self {
        Self {
            nodes: Api::all(client.clone()),
            client,
            known: Known {
                kubernetes_version: String::new(),
                nodes: HashMap::new(),
                published: None,
                publish,
            },
        }
    }

    /// Runs until the future is dropped.
    pub async fn run(mut self) {
        let mut state = State::List { failures: 0 };
        loop {
            state = match state {
                State::List { failures } => match self.list().await {
                    Ok(resource_version) => State::Watch { resource_version },
                    Err(error) => {
                        tracing::warn!(
                            failures,
                            "reading the cluster's nodes failed: {}",
                            error_chain(&error)
                        );
                        State::Retry { failures }
                    }
                },
                State::Watch { resource_version } => match self.watch(resource_version).await {
                    Ok(WatchEnd::Closed { resource_version }) => {
                        match self.refresh_version().await {
                            Ok(()) => State::Watch { resource_version },
                            Err(error) => {
                                tracing::warn!(
                                    "reading the cluster's version failed: {}",
                                    error_chain(&error)
                                );
                                State::Retry { failures: 0 }
                            }
                        }
                    }
                    Ok(WatchEnd::Expired) => State::List { failures: 0 },
                    Err(error) => {
                        tracing::warn!(
                            "watching the cluster's nodes failed: {}",
                            error_chain(&error)
                        );
                        State::Retry { failures: 0 }
                    }
                },
                State::Retry { failures } => {
                    tokio::time::sleep(retry_delay(failures)).await;
                    State::List {
                        failures: failures.saturating_add(1),
                    }
                }
            };
        }
    }

    async fn refresh_version(&mut self) -> kube::Result<()> {
        let info = self.client.apiserver_version().await?;
        self.known.kubernetes_version = info.git_version;
        self.known.publish();
        Ok(())
    }

    /// Replaces everything known with a fresh list; returns the list's resource version.
    async fn list(&mut self) -> kube::Result<String> {
        let info = self.client.apiserver_version().await?;
        let mut nodes = HashMap::new();
        let mut params = ListParams::default().limit(NODE_LIST_PAGE_SIZE);
        let resource_version = loop {
            let page = self.nodes.list(&params).await?;
            for node in &page.items {
                if let Some(name) = &node.metadata.name {
                    nodes.insert(name.clone(), NodeFacts::from_node(node));
                }
            }
            match page.metadata.continue_.as_deref() {
                Some(token) if !token.is_empty() => params = params.continue_token(token),
                _ => break page.metadata.resource_version.unwrap_or_default(),
            }
        };
        self.known.kubernetes_version = info.git_version;
        self.known.nodes = nodes;
        self.known.publish();
        Ok(resource_version)
    }

    async fn watch(&mut self, mut resource_version: String) -> kube::Result<WatchEnd> {
        let params = WatchParams::default().timeout(NODE_WATCH_TIMEOUT_SECONDS);
        let events = match self.nodes.watch(&params, &resource_version).await {
            Ok(events) => events,
            Err(kube::Error::Api(status)) if status.code == 410 => return Ok(WatchEnd::Expired),
            Err(error) => return Err(error),
        };
        futures::pin_mut!(events);
        while let Some(event) = events.try_next().await? {
            match event {
                WatchEvent::Added(node) | WatchEvent::Modified(node) => {
                    advance(&mut resource_version, &node);
                    if let Some(name) = node.metadata.name.clone() {
                        self.known.nodes.insert(name, NodeFacts::from_node(&node));
                        self.known.publish();
                    }
                }
                WatchEvent::Deleted(node) => {
                    advance(&mut resource_version, &node);
                    if let Some(name) = &node.metadata.name {
                        self.known.nodes.remove(name);
                        self.known.publish();
                    }
                }
                WatchEvent::Bookmark(bookmark) => {
                    resource_version = bookmark.metadata.resource_version;
                }
                WatchEvent::Error(status) if status.code == 410 => return Ok(WatchEnd::Expired),
                WatchEvent::Error(status) => return Err(kube::Error::Api(status)),
            }
        }
        Ok(WatchEnd::Closed { resource_version })
    }
}

fn advance(resource_version: &mut String, node: &Node) {
    if let Some(rv) = &node.metadata.resource_version {
        resource_version.clone_from(rv);
    }
}

/// `min(CAP, BASE · 2^failures)`.
fn retry_delay(failures: u32) -> Duration {
    NODE_WATCH_RETRY_BASE
        .saturating_mul(1_u32.checked_shl(failures.min(16)).unwrap_or(u32::MAX))
        .min(NODE_WATCH_RETRY_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::node;

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        assert_eq!(retry_delay(0), NODE_WATCH_RETRY_BASE);
        assert_eq!(retry_delay(1), NODE_WATCH_RETRY_BASE * 2);
        assert_eq!(retry_delay(3), NODE_WATCH_RETRY_BASE * 8);
        assert_eq!(retry_delay(40), NODE_WATCH_RETRY_CAP);
    }

    #[test]
    fn a_line_is_published_only_when_the_facts_change() {
        let (publish, mut feed) = feed();
        let mut known = Known {
            kubernetes_version: "v1.31.4".into(),
            nodes: HashMap::new(),
            published: None,
            publish,
        };
        known
            .nodes
            .insert("a".into(), NodeFacts::from_node(&node("a").build()));
        known.publish();
        assert!(feed.has_changed().unwrap());
        let first = feed.borrow_and_update().clone().unwrap();
        assert!(std::str::from_utf8(&first).unwrap().contains("\"ready\":1"));

        // The same node again (a status heartbeat): nothing new.
        known
            .nodes
            .insert("a".into(), NodeFacts::from_node(&node("a").build()));
        known.publish();
        assert!(!feed.has_changed().unwrap());

        // The node goes NotReady: a new line.
        known.nodes.insert(
            "a".into(),
            NodeFacts::from_node(&node("a").not_ready().build()),
        );
        known.publish();
        assert!(feed.has_changed().unwrap());
        let second = feed.borrow_and_update().clone().unwrap();
        assert!(std::str::from_utf8(&second)
            .unwrap()
            .contains("\"ready\":0"));
    }
}
