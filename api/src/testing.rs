//! Builders of the five kinds for tests (feature `testing`), so that a test says what its object
//! is, not how its JSON is spelled:
//!
//! ```
//! use edgefleet_api::testing::{cluster, fleet};
//! let edge = cluster("edge-1").env("retail").label("gpu", "l4").version("v1.31.4");
//! let gpus = fleet("gpus").env("retail").selector_label("gpu", "l4");
//! let yaml = edge.yaml(); // for kubectl apply -f -
//! let json = gpus.json(); // for the registry, or an HTTP body
//! ```
//!
//! A builder holds the object as JSON and writes only what was asked for, so it builds apply
//! configurations (where an absent field and `paused: false` mean different things) as well as
//! whole objects. Every method writes a field of the kind's Rust type under its wire name, which
//! [`Builder::typed`] proves by decoding the result (a test below does it for every method).
//! [`Builder::set`] writes anything else, invalid values included, for the tests of validation.

use std::marker::PhantomData;

use serde_json::{json, Map, Value};

use crate::{ApiKind, Cluster, ClusterAddon, Environment, Fleet, Placement, API_VERSION};

/// An object of kind `K` under construction.
#[derive(Clone, Debug)]
pub struct Builder<K> {
    object: Value,
    kind: PhantomData<K>,
}

/// A new Environment named `name`.
pub fn environment(name: &str) -> Builder<Environment> {
    Builder::new(name)
}

/// A new Cluster named `name` (give it its Environment with [`Builder::env`]).
pub fn cluster(name: &str) -> Builder<Cluster> {
    Builder::new(name)
}

/// A new Fleet named `name`.
pub fn fleet(name: &str) -> Builder<Fleet> {
    Builder::new(name)
}

/// A new ClusterAddon named `name`.
pub fn addon(name: &str) -> Builder<ClusterAddon> {
    Builder::new(name)
}

/// A new Placement named `name`.
pub fn placement(name: &str) -> Builder<Placement> {
    Builder::new(name)
}

impl<K: ApiKind> Builder<K> {
    fn new(name: &str) -> Self {
        Builder {
            object: json!({
                "apiVersion": API_VERSION,
                "kind": K::INFO.kind,
                "metadata": {"name": name},
            }),
            kind: PhantomData,
        }
    }

    /// The object's namespace.
    pub fn namespace(self, namespace: &str) -> Self {
        self.set("/metadata/namespace", json!(namespace))
    }

    /// The Environment the object belongs to: its namespace.
    pub fn env(self, environment: &str) -> Self {
        self.namespace(environment)
    }

    pub fn label(self, key: &str, value: &str) -> Self {
        self.entry("/metadata/labels", key, json!(value))
    }

    pub fn annotation(self, key: &str, value: &str) -> Self {
        self.entry("/metadata/annotations", key, json!(value))
    }

    pub fn finalizer(self, finalizer: &str) -> Self {
        self.push("/metadata/finalizers", json!(finalizer))
    }

    /// `metadata.resourceVersion`, for optimistic concurrency.
    pub fn resource_version(self, revision: &str) -> Self {
        self.set("/metadata/resourceVersion", json!(revision))
    }

    /// The whole status, as JSON (status is written by agents and controllers, in any shape a
    /// test needs).
    pub fn status(self, status: Value) -> Self {
        self.set("/status", status)
    }

    /// Writes `value` at the JSON pointer `pointer` (`/spec/nodePools/0/replicas`), creating
    /// the objects on the way: for fields without a method, and for invalid values.
    ///
    /// # Panics
    /// When the pointer runs through something that is not an object (or an existing array
    /// element).
    pub fn set(mut self, pointer: &str, value: Value) -> Self {
        *slot(&mut self.object, pointer) = value;
        self
    }

    /// The object as JSON.
    pub fn json(self) -> Value {
        self.object
    }

    /// The object as YAML (one document, ending in a newline), for `kubectl apply -f -`.
    ///
    /// Written in YAML's JSON form, where every string is quoted: kubectl and PyYAML read
    /// YAML 1.1, in which a bare `yes`, `on` or `no` is a boolean, and a YAML emitter that
    /// follows 1.2 leaves those unquoted (`paused: yes` would be a valid Cluster).
    /// The leading comment keeps it YAML for readers that sniff the first byte: kubectl
    /// decodes a stream starting with `{` as JSON, which then refuses a `---` separator.
    pub fn yaml(self) -> String {
        let json = serde_json::to_string_pretty(&self.object).expect("JSON serializes");
        format!("# {} {}\n{json}\n", K::INFO.kind, self.name())
    }

    fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }

    /// The object as its Rust type.
    ///
    /// # Panics
    /// When the JSON does not decode (a value written with [`Builder::set`] of the wrong type).
    pub fn typed(self) -> K {
        serde_json::from_value(self.object).expect("the builder wrote the kind's fields")
    }

    fn entry(self, pointer: &str, key: &str, value: Value) -> Self {
        let key = key.replace('~', "~0").replace('/', "~1");
        self.set(&format!("{pointer}/{key}"), value)
    }

    fn push(mut self, pointer: &str, value: Value) -> Self {
        let list = slot(&mut self.object, pointer);
        if !list.is_array() {
            *list = json!([]);
        }
        list.as_array_mut().expect("an array").push(value);
        self
    }

    /// Sets a field of the last element of the list at `pointer`.
    fn last(mut self, pointer: &str, field: &str, value: Value) -> Self {
        let element = slot(&mut self.object, pointer)
            .as_array_mut()
            .and_then(|list| list.last_mut())
            .unwrap_or_else(|| panic!("{pointer} has no element yet"));
        *slot(element, &format!("/{field}")) = value;
        self
    }
}

/// The value at `pointer`, created (as `null`, in objects created on the way) if missing.
fn slot<'a>(mut value: &'a mut Value, pointer: &str) -> &'a mut Value {
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        if value.is_null() {
            *value = Value::Object(Map::new());
        }
        value = match value {
            Value::Object(map) => map.entry(token).or_insert(Value::Null),
            Value::Array(list) => {
                let index: usize = token
                    .parse()
                    .unwrap_or_else(|_| panic!("{token:?} indexes an array in {pointer}"));
                list.get_mut(index)
                    .unwrap_or_else(|| panic!("{pointer}: no element {index}"))
            }
            other => panic!("{pointer} runs through {other}"),
        };
    }
    value
}

impl Builder<Environment> {
    pub fn description(self, description: &str) -> Self {
        self.set("/spec/description", json!(description))
    }

    /// An add-on every cluster of the environment must run.
    pub fn addon(self, name: &str) -> Self {
        self.push("/spec/addons", json!({"name": name}))
    }
}

impl Builder<Cluster> {
    /// `spec.kubernetesVersion`.
    pub fn version(self, version: &str) -> Self {
        self.set("/spec/kubernetesVersion", json!(version))
    }

    pub fn paused(self, paused: bool) -> Self {
        self.set("/spec/paused", json!(paused))
    }

    /// A node pool of `replicas` nodes.
    pub fn pool(self, name: &str, replicas: i32) -> Self {
        self.push(
            "/spec/nodePools",
            json!({"name": name, "replicas": replicas}),
        )
    }

    /// The machine type of the last pool added.
    pub fn machine_type(self, machine_type: &str) -> Self {
        self.pool_field("machineType", json!(machine_type))
    }

    /// A node label of the last pool added.
    pub fn pool_label(self, key: &str, value: &str) -> Self {
        let key = key.replace('~', "~0").replace('/', "~1");
        self.pool_field(&format!("labels/{key}"), json!(value))
    }

    /// Any field of the last pool added (an invalid value, for validation tests).
    pub fn pool_field(self, field: &str, value: Value) -> Self {
        self.last("/spec/nodePools", field, value)
    }
}

impl Builder<Fleet> {
    /// A `matchLabels` entry of the fleet's selector.
    pub fn selector_label(self, key: &str, value: &str) -> Self {
        self.entry("/spec/selector/matchLabels", key, json!(value))
    }

    /// A `matchExpressions` entry of the fleet's selector (`In`, `NotIn`, `Exists`, ...).
    pub fn selector_expression(self, key: &str, operator: &str, values: &[&str]) -> Self {
        self.push(
            "/spec/selector/matchExpressions",
            json!({"key": key, "operator": operator, "values": values}),
        )
    }

    /// `spec.kubernetesVersion` of every member cluster.
    pub fn version(self, version: &str) -> Self {
        self.set("/spec/kubernetesVersion", json!(version))
    }

    pub fn agent_version(self, version: &str) -> Self {
        self.set("/spec/agentVersion", json!(version))
    }

    /// `spec.strategy.maxUnavailable`: a count (`1`) or a percentage (`"25%"`).
    pub fn max_unavailable(self, max: Value) -> Self {
        self.set("/spec/strategy/maxUnavailable", max)
    }

    pub fn paused(self, paused: bool) -> Self {
        self.set("/spec/paused", json!(paused))
    }
}

impl Builder<ClusterAddon> {
    /// `spec.version` of the add-on.
    pub fn version(self, version: &str) -> Self {
        self.set("/spec/version", json!(version))
    }

    pub fn description(self, description: &str) -> Self {
        self.set("/spec/description", json!(description))
    }

    pub fn target_namespace(self, namespace: &str) -> Self {
        self.set("/spec/targetNamespace", json!(namespace))
    }

    /// An inline manifest (one Kubernetes object).
    pub fn manifest(self, object: Value) -> Self {
        self.push("/spec/manifests", object)
    }

    /// A Helm chart instead of manifests.
    pub fn helm(self, repository: &str, chart: &str, version: &str) -> Self {
        self.set(
            "/spec/helm",
            json!({"repository": repository, "chart": chart, "version": version}),
        )
    }
}

impl Builder<Placement> {
    /// An add-on to place.
    pub fn addon(self, name: &str) -> Self {
        self.push("/spec/addons", json!({"name": name}))
    }

    /// A Fleet whose clusters are targets.
    pub fn fleet(self, name: &str) -> Self {
        self.push("/spec/clusters/fleets", json!(name))
    }

    /// A Cluster, by name, that is a target.
    pub fn cluster(self, name: &str) -> Self {
        self.push("/spec/clusters/names", json!(name))
    }

    /// A `matchLabels` entry of the selector choosing target clusters.
    pub fn selector_label(self, key: &str, value: &str) -> Self {
        self.entry("/spec/clusters/selector/matchLabels", key, json!(value))
    }

    /// A progressive rollout: `canary` clusters first (a count or a percentage).
    pub fn canary(self, canary: Value) -> Self {
        self.set("/spec/strategy/type", json!("Progressive"))
            .set("/spec/strategy/canary", canary)
    }

    pub fn max_unavailable(self, max: Value) -> Self {
        self.set("/spec/strategy/maxUnavailable", max)
    }

    pub fn min_soak_seconds(self, seconds: i32) -> Self {
        self.set("/spec/strategy/minSoakSeconds", json!(seconds))
    }

    pub fn paused(self, paused: bool) -> Self {
        self.set("/spec/paused", json!(paused))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decoding into the Rust type and encoding again loses nothing: every field the builder
    /// wrote has the kind's wire name and type. (`paused: true`, since `false` is not encoded.)
    fn round_trips<K: ApiKind>(builder: Builder<K>) {
        let json = builder.clone().json();
        assert_eq!(serde_json::to_value(builder.typed()).unwrap(), json);
    }

    #[test]
    fn every_builder_method_writes_a_field_of_its_kind() {
        round_trips(
            environment("retail")
                .label("tier", "prod")
                .annotation("edgefleet.io/owner", "ops")
                .finalizer("edgefleet.io/clusters")
                .resource_version("7")
                .description("Retail stores")
                .addon("policies"),
        );
        round_trips(
            cluster("edge-1")
                .env("retail")
                .label("gpu", "l4")
                .version("v1.31.4")
                .paused(true)
                .pool("gpu", 3)
                .machine_type("g6.xlarge")
                .pool_label("nvidia.com/gpu.product", "NVIDIA-L4")
                .status(json!({"kubernetesVersion": "v1.31.4"})),
        );
        round_trips(
            fleet("gpus")
                .env("retail")
                .selector_label("gpu", "l4")
                .selector_expression("region", "In", &["eu", "us"])
                .version("v1.31.4")
                .agent_version("v0.1.0")
                .max_unavailable(json!("25%"))
                .paused(true),
        );
        round_trips(
            addon("gpu-operator")
                .env("retail")
                .version("v25.3.0")
                .description("NVIDIA GPU operator")
                .target_namespace("gpu-operator")
                .helm(
                    "https://helm.ngc.nvidia.com/nvidia",
                    "gpu-operator",
                    "v25.3.0",
                ),
        );
        round_trips(
            addon("policies").env("retail").version("1").manifest(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "p"}}),
            ),
        );
        round_trips(
            placement("gpu-operator")
                .env("retail")
                .addon("gpu-operator")
                .fleet("gpus")
                .cluster("edge-1")
                .selector_label("gpu", "l4")
                .canary(json!(1))
                .max_unavailable(json!(1))
                .min_soak_seconds(300)
                .paused(true),
        );
    }

    #[test]
    fn a_builder_writes_only_what_it_was_asked_for() {
        assert_eq!(
            cluster("edge-1").env("retail").paused(false).json(),
            json!({
                "apiVersion": "edgefleet.io/v1alpha1",
                "kind": "Cluster",
                "metadata": {"name": "edge-1", "namespace": "retail"},
                "spec": {"paused": false},
            })
        );
    }

    #[test]
    fn label_keys_with_slashes_are_keys_not_paths() {
        let json = cluster("edge-1")
            .label("topology.kubernetes.io/region", "eu")
            .json();
        assert_eq!(
            json["metadata"]["labels"]["topology.kubernetes.io/region"],
            "eu"
        );
    }

    #[test]
    fn set_writes_invalid_values_for_validation_tests() {
        let json = cluster("edge-1")
            .pool("gpu", 3)
            .pool_field("replicas", json!("three"))
            .set("/spec/kubernetesVersion", json!(42))
            .json();
        assert_eq!(json["spec"]["nodePools"][0]["replicas"], "three");
        assert_eq!(json["spec"]["kubernetesVersion"], 42);
    }

    #[test]
    fn strings_that_yaml_1_1_reads_as_booleans_stay_strings() {
        let yaml = cluster("x").set("/spec/paused", json!("yes")).yaml();
        assert!(yaml.contains(r#""paused": "yes""#), "{yaml}");
    }

    #[test]
    fn yaml_is_the_same_object() {
        let built = environment("retail").description("Retail stores");
        let yaml: Value = serde_yaml_ng::from_str(&built.clone().yaml()).unwrap();
        assert_eq!(yaml, built.json());
    }
}
