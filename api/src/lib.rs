//! The `edgefleet.io/v1alpha1` API: the five kinds' types, their defaulting and validation,
//! their printer columns and their OpenAPI schemas.
//!
//! This crate holds no I/O. The hub (`edgefleet-apiserver`) serves these kinds through one
//! generic registry; everything it needs to know about a kind is reached through [`ApiKind`]:
//!
//! ```text
//!   ApiKind ──► INFO        names, scope, short names, categories   (discovery)
//!           ──► schema()    OpenAPI v3 schema                        (openapi, explain, SSA, pruning)
//!           ──► default()   fills defaults in place                  (admission)
//!           ──► validate()  field errors with paths                  (admission → 422)
//!           ──► columns()/cells()   Table rows                       (kubectl get)
//! ```
//!
//! | kind | scope | short name |
//! |---|---|---|
//! | [`Environment`] | cluster | `env` |
//! | [`Cluster`] | namespaced | `ec` |
//! | [`Fleet`] | namespaced | `fl` |
//! | [`ClusterAddon`] | namespaced | `ca` |
//! | [`Placement`] | namespaced | `pl` |

mod addon;
pub mod agent;
mod cluster;
pub mod delivery;
mod environment;
mod fleet;
mod kind;
mod placement;
pub mod schema;
pub mod table;
pub mod validation;

pub use addon::*;
pub use cluster::*;
pub use environment::*;
pub use fleet::*;
pub use kind::*;
pub use placement::*;

/// Re-exports of the Kubernetes types our kinds are built from.
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, LabelSelector, LabelSelectorRequirement, ObjectMeta, Time,
};
pub use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
pub use k8s_openapi::jiff;

/// The API group every edgefleet kind belongs to.
pub const GROUP: &str = "edgefleet.io";
/// The only served version.
pub const VERSION: &str = "v1alpha1";
/// `GROUP/VERSION`, as written in `apiVersion`.
pub const API_VERSION: &str = "edgefleet.io/v1alpha1";
/// The category that `kubectl get edgefleet` expands to.
pub const CATEGORY: &str = "edgefleet";

#[cfg(test)]
mod tests;
