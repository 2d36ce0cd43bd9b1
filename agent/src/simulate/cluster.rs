//! A simulated edge cluster: its nodes, namespaces and version, rendered on demand.
//!
//! Memory is the point (10,000 clusters in one process): every cluster of a simulation shares
//! one [`World`] (the shape, the creation time, the facts feed), and a cluster itself is just
//! its environment and name. Objects are built per request from those, deterministically:
//!
//! | object    | derived from                                                                |
//! |-----------|-----------------------------------------------------------------------------|
//! | nodes     | `<name>-node-<i>`, i < `--nodes`; node 0 is the control plane (k3s labels)   |
//! | GPUs      | `--gpus-per-node` × `--gpu-model` on every node (capacity = allocatable)     |
//! | IPs, UIDs | a SHA-256 of the cluster identity (stable across restarts)                   |
//! | version   | `--kubernetes-version`, also each kubelet's version                          |
//! | ages      | every object was created when the simulation started                         |
//!
//! Every cluster of one simulation has the same shape; clusters differ in names, IPs and UIDs.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Namespace, NamespaceSpec, NamespaceStatus, Node, NodeAddress, NodeCondition,
    NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::version::Info;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::facts::stream::FactsFeed;
use crate::facts::{cluster_facts, facts_line, NodeFacts, GPU_PRODUCT_LABEL, GPU_RESOURCE};

/// The shape every simulated cluster of one simulation has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterShape {
    /// Nodes per cluster.
    pub nodes: u32,
    /// GPUs per node.
    pub gpus_per_node: u32,
    /// GPU product (node label `nvidia.com/gpu.product`).
    pub gpu_model: String,
    /// `gitVersion` of the simulated kube-apiserver and kubelets.
    pub kubernetes_version: String,
}

impl Default for ClusterShape {
    fn default() -> Self {
        Self {
            nodes: 3,
            gpus_per_node: 2,
            gpu_model: "NVIDIA-L4".into(),
            kubernetes_version: "v1.31.4+k3s1".into(),
        }
    }
}

impl ClusterShape {
    /// Checks the shape renders into valid objects.
    pub fn validate(&self) -> Result<()> {
        if major_minor(&self.kubernetes_version).is_none() {
            return Err(Error::Shape(format!(
                "kubernetes version {:?} is not v<major>.<minor>[.<patch>…]",
                self.kubernetes_version
            )));
        }
        if self.gpus_per_node > 0 && self.gpu_model.trim().is_empty() {
            return Err(Error::Shape(
                "a GPU model is needed when nodes have GPUs".into(),
            ));
        }
        if i32::try_from(u64::from(self.nodes) * u64::from(self.gpus_per_node)).is_err() {
            return Err(Error::Shape("too many GPUs per cluster".into()));
        }
        Ok(())
    }
}

/// What every simulated cluster of a simulation shares.
#[derive(Debug)]
pub struct World {
    shape: ClusterShape,
    started: Timestamp,
    facts: FactsFeed,
    // Held so the feed stays open: facts streams end when their sender goes away.
    _publish: watch::Sender<Option<Bytes>>,
}

impl World {
    /// A world of `shape`, started `started`. Its facts are computed once, from the nodes of
    /// a cluster of that shape (they do not depend on names).
    pub fn new(shape: ClusterShape, started: Timestamp) -> Result<Arc<Self>> {
        shape.validate()?;
        let (publish, facts) = watch::channel(None);
        let world = Arc::new(Self {
            shape,
            started,
            facts,
            _publish: publish.clone(),
        });
        let template = SimulatedCluster::new("env", "template", world.clone());
        let nodes: Vec<NodeFacts> = template.nodes().iter().map(NodeFacts::from_node).collect();
        let facts = cluster_facts(&world.shape.kubernetes_version, &nodes);
        publish.send_replace(Some(facts_line(&facts)));
        Ok(world)
    }

    /// The shared facts feed.
    pub fn facts(&self) -> FactsFeed {
        self.facts.clone()
    }

    /// The shape.
    pub fn shape(&self) -> &ClusterShape {
        &self.shape
    }
}

/// One simulated cluster.
#[derive(Debug)]
pub struct SimulatedCluster {
    environment: Box<str>,
    name: Box<str>,
    world: Arc<World>,
}

/// The namespaces every cluster has, as kube-apiserver creates them.
pub const NAMESPACES: [&str; 4] = ["default", "kube-node-lease", "kube-public", "kube-system"];

/// `metadata.resourceVersion` of every simulated object and list: nothing ever changes.
pub const RESOURCE_VERSION: &str = "1";

const CONTROL_PLANE_LABELS: [&str; 2] = [
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
];

impl SimulatedCluster {
    /// The cluster `environment/name` in `world`.
    pub fn new(environment: &str, name: &str, world: Arc<World>) -> Self {
        Self {
            environment: environment.into(),
            name: name.into(),
            world,
        }
    }

    /// The shared world.
    pub fn world(&self) -> &World {
        &self.world
    }

    /// When every object was created.
    pub fn created(&self) -> Timestamp {
        self.world.started
    }

    /// The name of node `index`.
    pub fn node_name(&self, index: u32) -> String {
        format!("{}-node-{index}", self.name)
    }

    /// Every node, in name order of index.
    pub fn nodes(&self) -> Vec<Node> {
        (0..self.world.shape.nodes).map(|i| self.node(i)).collect()
    }

    /// The node called `name`, if there is one.
    pub fn find_node(&self, name: &str) -> Option<Node> {
        let index: u32 = name
            .strip_prefix(&*self.name)?
            .strip_prefix("-node-")?
            .parse()
            .ok()?;
        // `parse` accepts `+1` and `01`; only the canonical spelling names a node.
        (index < self.world.shape.nodes && self.node_name(index) == name).then(|| self.node(index))
    }

    /// Node `index`.
    pub fn node(&self, index: u32) -> Node {
        let shape = &self.world.shape;
        let name = self.node_name(index);
        let digest = self.digest(&name);
        let mut labels: BTreeMap<String, String> = [
            ("beta.kubernetes.io/arch", "amd64"),
            ("beta.kubernetes.io/instance-type", "k3s"),
            ("beta.kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", "amd64"),
            ("kubernetes.io/os", "linux"),
            ("node.kubernetes.io/instance-type", "k3s"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        labels.insert("kubernetes.io/hostname".into(), name.clone());
        if index == 0 {
            for role in CONTROL_PLANE_LABELS {
                labels.insert(role.into(), "true".into());
            }
        }
        let mut capacity = quantities(&[
            ("cpu", "16"),
            ("ephemeral-storage", "203056560Ki"),
            ("hugepages-1Gi", "0"),
            ("hugepages-2Mi", "0"),
            ("memory", "65842412Ki"),
            ("pods", "110"),
        ]);
        let mut allocatable = quantities(&[
            ("cpu", "16"),
            ("ephemeral-storage", "197533365368"),
            ("hugepages-1Gi", "0"),
            ("hugepages-2Mi", "0"),
            ("memory", "65842412Ki"),
            ("pods", "110"),
        ]);
        if shape.gpus_per_node > 0 {
            labels.insert(GPU_PRODUCT_LABEL.into(), shape.gpu_model.clone());
            labels.insert(
                "nvidia.com/gpu.count".into(),
                shape.gpus_per_node.to_string(),
            );
            labels.insert("nvidia.com/gpu.present".into(), "true".into());
            let gpus = Quantity(shape.gpus_per_node.to_string());
            capacity.insert(GPU_RESOURCE.into(), gpus.clone());
            allocatable.insert(GPU_RESOURCE.into(), gpus);
        }

        let created = Time(self.world.started);
        let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: Some(created.clone()),
            last_transition_time: Some(created.clone()),
        };
        Node {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                uid: Some(uuid_from(&digest)),
                resource_version: Some(RESOURCE_VERSION.into()),
                creation_timestamp: Some(created.clone()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: Some(format!("10.42.{index}.0/24")),
                pod_cidrs: Some(vec![format!("10.42.{index}.0/24")]),
                provider_id: Some(format!("k3s://{name}")),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: self.internal_ip(index),
                    },
                    NodeAddress {
                        type_: "Hostname".into(),
                        address: name.clone(),
                    },
                ]),
                allocatable: Some(allocatable),
                capacity: Some(capacity),
                conditions: Some(vec![
                    condition(
                        "MemoryPressure",
                        "False",
                        "KubeletHasSufficientMemory",
                        "kubelet has sufficient memory available",
                    ),
                    condition(
                        "DiskPressure",
                        "False",
                        "KubeletHasNoDiskPressure",
                        "kubelet has no disk pressure",
                    ),
                    condition(
                        "PIDPressure",
                        "False",
                        "KubeletHasSufficientPID",
                        "kubelet has sufficient PID available",
                    ),
                    condition(
                        "Ready",
                        "True",
                        "KubeletReady",
                        "kubelet is posting ready status",
                    ),
                ]),
                daemon_endpoints: Some(NodeDaemonEndpoints {
                    kubelet_endpoint: Some(DaemonEndpoint { port: 10250 }),
                }),
                node_info: Some(NodeSystemInfo {
                    architecture: "amd64".into(),
                    boot_id: uuid_from(&digest[8..]),
                    container_runtime_version: "containerd://1.7.23-k3s2".into(),
                    kernel_version: "6.8.0-51-generic".into(),
                    kube_proxy_version: shape.kubernetes_version.clone(),
                    kubelet_version: shape.kubernetes_version.clone(),
                    machine_id: hex(&digest[..16]),
                    operating_system: "linux".into(),
                    os_image: "Ubuntu 24.04.1 LTS".into(),
                    system_uuid: uuid_from(&digest[16..]),
                    swap: None,
                }),
                ..NodeStatus::default()
            }),
        }
    }

    /// Every namespace, in name order.
    pub fn namespaces(&self) -> Vec<Namespace> {
        NAMESPACES
            .iter()
            .map(|n| self.namespace_object(n))
            .collect()
    }

    /// The namespace called `name`, if there is one.
    pub fn find_namespace(&self, name: &str) -> Option<Namespace> {
        NAMESPACES
            .contains(&name)
            .then(|| self.namespace_object(name))
    }

    fn namespace_object(&self, name: &str) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(uuid_from(&self.digest(&format!("namespace/{name}")))),
                resource_version: Some(RESOURCE_VERSION.into()),
                creation_timestamp: Some(Time(self.world.started)),
                labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_owned(),
                    name.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(NamespaceSpec {
                finalizers: Some(vec!["kubernetes".into()]),
            }),
            status: Some(NamespaceStatus {
                phase: Some("Active".into()),
                conditions: None,
            }),
        }
    }

    /// The `/version` document.
    pub fn version_info(&self) -> Info {
        let version = &self.world.shape.kubernetes_version;
        let (major, minor) = major_minor(version).unwrap_or_default();
        Info {
            build_date: "2024-12-10T00:00:00Z".into(),
            compiler: "gc".into(),
            git_commit: hex(&sha256(version.as_bytes())[..20]),
            git_tree_state: "clean".into(),
            git_version: version.clone(),
            go_version: "go1.22.9".into(),
            major: major.to_owned(),
            minor: minor.to_owned(),
            platform: "linux/amd64".into(),
            ..Info::default()
        }
    }

    fn internal_ip(&self, index: u32) -> String {
        let digest = self.digest("network");
        format!("10.{}.{}.{}", digest[0], index / 250, index % 250 + 4)
    }

    /// A stable digest of this cluster's identity and `what`.
    fn digest(&self, what: &str) -> [u8; 32] {
        sha256(format!("{}/{}/{what}", self.environment, self.name).as_bytes())
    }
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
        .collect()
}

/// `("1", "31")` from `v1.31.4+k3s1`.
fn major_minor(version: &str) -> Option<(&str, &str)> {
    let mut parts = version.strip_prefix('v')?.split(['.', '+', '-']);
    let major = parts.next().filter(|p| p.parse::<u32>().is_ok())?;
    let minor = parts.next().filter(|p| p.parse::<u32>().is_ok())?;
    Some((major, minor))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0_u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn uuid_from(bytes: &[u8]) -> String {
    let mut raw = [0_u8; 16];
    raw.copy_from_slice(&bytes[..16]);
    uuid::Builder::from_random_bytes(raw)
        .into_uuid()
        .to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str) -> SimulatedCluster {
        let world = World::new(ClusterShape::default(), Timestamp::UNIX_EPOCH).unwrap();
        SimulatedCluster::new("retail", name, world)
    }

    #[test]
    fn versions_must_name_major_and_minor() {
        assert_eq!(major_minor("v1.31.4+k3s1"), Some(("1", "31")));
        assert_eq!(major_minor("v1.30"), Some(("1", "30")));
        for bad in ["1.31.4", "v1", "vX.Y", ""] {
            assert_eq!(major_minor(bad), None, "{bad}");
            let shape = ClusterShape {
                kubernetes_version: bad.into(),
                ..ClusterShape::default()
            };
            assert!(shape.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn nodes_are_found_by_their_canonical_names_only() {
        let c = cluster("store-1");
        assert_eq!(c.nodes().len(), 3);
        assert!(c.find_node("store-1-node-2").is_some());
        for missing in [
            "store-1-node-3",
            "store-1-node-01",
            "store-1-node-+1",
            "other-node-0",
        ] {
            assert!(c.find_node(missing).is_none(), "{missing}");
        }
    }

    #[test]
    fn objects_are_deterministic_per_cluster_and_differ_between_clusters() {
        let (a, b) = (cluster("store-1"), cluster("store-2"));
        assert_eq!(a.node(1), cluster("store-1").node(1));
        assert_ne!(a.node(1).metadata.uid, b.node(1).metadata.uid);
        let ip = |c: &SimulatedCluster| {
            c.node(0).status.unwrap().addresses.unwrap()[0]
                .address
                .clone()
        };
        assert!(ip(&a).starts_with("10."));
        assert_eq!(ip(&a), ip(&cluster("store-1")));
    }

    #[test]
    fn the_shared_facts_are_those_of_the_simulated_nodes() {
        let c = cluster("store-1");
        let line = c.world().facts().borrow().clone().unwrap();
        let facts: edgefleet_api::agent::ClusterFacts = serde_json::from_slice(&line).unwrap();
        assert_eq!(facts.kubernetes_version, "v1.31.4+k3s1");
        assert_eq!(facts.nodes.ready, 3);
        assert_eq!(facts.nodes.total, 3);
        assert_eq!(facts.gpus.len(), 1);
        assert_eq!(facts.gpus[0].model, "NVIDIA-L4");
        assert_eq!((facts.gpus[0].count, facts.gpus[0].allocatable), (6, 6));
    }
}
