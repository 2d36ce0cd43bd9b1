//! Shared harness for the end-to-end tests: a real etcd ([`etcd::EtcdProcess`]), a real hub
//! process with kubectl pointed at it ([`hub::Hub`]), certificates ([`pki`]) and the storage
//! conformance suite ([`conformance`]).

pub mod client;
pub mod conformance;

pub mod etcd;
pub mod hub;
pub mod pki;
pub mod tunnel_bench;

pub use etcd::{ClientTls, EtcdOptions, EtcdProcess};
