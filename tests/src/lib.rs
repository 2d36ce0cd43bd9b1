//! Shared harness for the end-to-end tests: a real etcd ([`etcd::EtcdProcess`]), a real hub
//! process with kubectl pointed at it ([`hub::Hub`]), edge agents in front of an upstream
//! ([`edge::EdgeAgent`]), kubectl for any kubeconfig ([`kubectl::Kubectl`]), the test double
//! of the kubelet-facing API ([`pods::PodServer`]), certificates ([`pki`]) and the storage
//! conformance suite ([`conformance`]); reading audit trails and kubectl's request log ([`audit`]);
//! child processes and what `/proc` says of them ([`procs`]); the Python client's burst of
//! creates ([`python`]); the tunnel benchmark's rig ([`tunnel_bench`]).

pub mod audit;
pub mod client;
pub mod conformance;
pub mod edge;
pub mod etcd;
pub mod hub;
pub mod kubectl;
pub mod pki;
pub mod pods;
pub mod procs;
pub mod python;
pub mod tunnel_bench;

pub use etcd::{ClientTls, EtcdOptions, EtcdProcess};
