//! A typed, consistent-enough view of the five kinds, taken from the registry's watch caches.
//!
//! The controllers never read storage: each [`Snapshot`] is built from the caches, which follow
//! one storage watch per resource. Objects are decoded once per stored revision and shared
//! (`Arc`) between snapshots; rebuilding after a change costs one decode per changed object and
//! a walk over the cache, never a storage read.
//!
//! ```text
//!   Cacher(environments) ─┐
//!   Cacher(clusters) ─────┤  SnapshotBuilder.build()   Snapshot { environments, clusters,
//!   Cacher(fleets) ───────┼──────────────────────────►            fleets, addons, placements }
//!   Cacher(clusteraddons) ┤  (decode what changed,       + which parts changed in ways that
//!   Cacher(placements) ───┘   reuse the rest)              matter for desired bundles
//! ```
//!
//! Snapshots of different kinds may be at slightly different revisions (each cache moves on
//! its own); every controller derives from the newest snapshot and converges when the caches
//! settle, as a reconcile loop does over informers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use edgefleet_api::{ApiKind, Cluster, ClusterAddon, Environment, Fleet, Placement};

use crate::registry::cacher::Cacher;
use crate::registry::Registry;

/// `(namespace, name)`; the namespace is empty for Environments.
pub type ObjectKey = (String, String);

/// Objects of one kind, by key.
pub type Objects<K> = BTreeMap<ObjectKey, Arc<K>>;

/// Everything the controllers derive from.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub environments: Objects<Environment>,
    pub clusters: Objects<Cluster>,
    pub fleets: Objects<Fleet>,
    pub addons: Objects<ClusterAddon>,
    pub placements: Objects<Placement>,
}

/// What changed since the previous build.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Something desired bundles depend on: any spec or label, an object added or removed.
    pub targets: bool,
    /// Anything at all (statuses included): aggregated statuses may change.
    pub any: bool,
}

/// Decoded objects of one kind, reused while their stored revision is unchanged.
struct Decoded<K> {
    by_key: HashMap<String, (i64, ObjectKey, Arc<K>)>,
}

impl<K: ApiKind> Decoded<K> {
    fn new() -> Self {
        Decoded {
            by_key: HashMap::new(),
        }
    }

    /// Brings the decoded set to the cache's contents; returns the objects and what changed.
    fn refresh(&mut self, cacher: &Cacher, prefix: &str) -> (Objects<K>, Changes) {
        let snapshot = cacher.snapshot(prefix);
        let mut next = HashMap::with_capacity(snapshot.objects.len());
        let mut changes = Changes::default();
        for obj in snapshot.objects {
            let reused = self
                .by_key
                .remove(&obj.key)
                .filter(|(revision, _, _)| *revision == obj.mod_revision);
            let entry = match reused {
                Some(entry) => entry,
                None => {
                    let Ok(typed) = serde_json::from_slice::<K>(&obj.json) else {
                        tracing::warn!(key = %obj.key, "a cached object does not decode; skipped");
                        continue;
                    };
                    let typed = Arc::new(typed);
                    changes.any = true;
                    changes.targets |= self
                        .previous(&obj.key)
                        .is_none_or(|old| matters_for_targets(old, &typed));
                    (
                        obj.mod_revision,
                        (obj.namespace.clone(), obj.name.clone()),
                        typed,
                    )
                }
            };
            next.insert(obj.key.clone(), entry);
        }
        // What is left was deleted.
        if !self.by_key.is_empty() {
            changes.any = true;
            changes.targets = true;
        }
        self.by_key = next;
        let objects = self
            .by_key
            .values()
            .map(|(_, key, obj)| (key.clone(), obj.clone()))
            .collect();
        (objects, changes)
    }

    fn previous(&self, key: &str) -> Option<&K> {
        self.by_key.get(key).map(|(_, _, obj)| obj.as_ref())
    }
}

/// Whether a change of an object can change desired bundles (statuses cannot).
fn matters_for_targets<K: ApiKind>(old: &K, new: &K) -> bool {
    old.spec() != new.spec()
        || old.metadata().labels != new.metadata().labels
        || old.metadata().uid != new.metadata().uid
        || old.metadata().deletion_timestamp != new.metadata().deletion_timestamp
}

/// Builds snapshots from the registry's caches.
pub struct SnapshotBuilder {
    registry: Registry,
    environments: Decoded<Environment>,
    clusters: Decoded<Cluster>,
    fleets: Decoded<Fleet>,
    addons: Decoded<ClusterAddon>,
    placements: Decoded<Placement>,
}

impl SnapshotBuilder {
    pub fn new(registry: Registry) -> Self {
        SnapshotBuilder {
            registry,
            environments: Decoded::new(),
            clusters: Decoded::new(),
            fleets: Decoded::new(),
            addons: Decoded::new(),
            placements: Decoded::new(),
        }
    }

    /// The caches of the five kinds, to wait on.
    pub fn cachers(&self) -> Vec<Cacher> {
        KINDS
            .iter()
            .filter_map(|plural| self.registry.resource(plural))
            .map(|r| r.cacher().clone())
            .collect()
    }

    /// Whether every cache has completed its first list (before that, a snapshot is partial and
    /// must not be acted on: it would look like everything was deleted).
    pub fn is_ready(&self) -> bool {
        self.cachers().iter().all(Cacher::is_ready)
    }

    pub fn build(&mut self) -> (Snapshot, Changes) {
        let mut all = Changes::default();
        let registry = self.registry.clone();
        let mut refresh = |plural: &str, f: &mut dyn FnMut(&Cacher, &str) -> Changes| {
            if let Some(resource) = registry.resource(plural) {
                let changes = f(resource.cacher(), &resource.key_prefix);
                all.any |= changes.any;
                all.targets |= changes.targets;
            }
        };
        let mut snapshot = Snapshot::default();
        refresh("environments", &mut |c, p| {
            let (objects, changes) = self.environments.refresh(c, p);
            snapshot.environments = objects;
            changes
        });
        refresh("clusters", &mut |c, p| {
            let (objects, changes) = self.clusters.refresh(c, p);
            snapshot.clusters = objects;
            changes
        });
        refresh("fleets", &mut |c, p| {
            let (objects, changes) = self.fleets.refresh(c, p);
            snapshot.fleets = objects;
            changes
        });
        refresh("clusteraddons", &mut |c, p| {
            let (objects, changes) = self.addons.refresh(c, p);
            snapshot.addons = objects;
            changes
        });
        refresh("placements", &mut |c, p| {
            let (objects, changes) = self.placements.refresh(c, p);
            snapshot.placements = objects;
            changes
        });
        (snapshot, all)
    }
}

const KINDS: [&str; 5] = [
    "environments",
    "clusters",
    "fleets",
    "clusteraddons",
    "placements",
];

impl Snapshot {
    /// Objects of one kind in one namespace.
    pub fn in_namespace<'a, K>(
        objects: &'a Objects<K>,
        namespace: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Arc<K>)> + 'a {
        objects
            .range((namespace.to_string(), String::new())..)
            .take_while(move |((ns, _), _)| ns == namespace)
            .map(|((_, name), obj)| (name.as_str(), obj))
    }
}
