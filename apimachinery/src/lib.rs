//! `edgefleet-apimachinery`: the Kubernetes wire conventions the hub (`edgefleet-apiserver`)
//! and the agent (`edgefleet-agent`, its simulated clusters included) share, each in exactly one
//! place, with kube-apiserver's semantics (DESIGN.md §1).
//!
//! ```text
//!                      request ─► request_info ─► verb, resource, namespace, name, subresource
//!                                   │  uses query (booleans) and selectors (fieldSelector name)
//!   hub: router, authorization, audit (its own paths and the edge part of proxied ones)
//!   agent (simulated clusters): list filtering, Tables, Status, watch flags
//!
//!   query         ?watch=… ?limit=…: kube's parameter codec (first value; booleans never 400)
//!   selectors     ?labelSelector= ?fieldSelector=: parse, print, match
//!   table         Table / PartialObjectMetadata / <Kind>List bytes, includeObject
//!   status        metav1.Status builder
//!   impersonation Impersonate-User/Group/Uid/Extra-* names, extra-key encoding
//!   apply         server-side apply: field sets, managedFields, conflicts, schemas (typed or deduced)
//! ```
//!
//! Pure: no I/O, no clock (callers pass `now`), no async, no tokio. It may use `edgefleet-api`'s
//! types (validation of names, printer columns); nothing here knows a particular kind. The
//! Kubernetes-free HTTP helpers (hop-by-hop headers, the WebSocket accept key) live in
//! `edgefleet-tunnel`; which failure gets which Status stays with each component.

pub mod apply;
pub mod impersonation;
pub mod query;
pub mod request_info;
pub mod selectors;
pub mod status;
pub mod table;

pub use request_info::RequestInfo;
