//! Shared harness for the end-to-end tests: a real etcd ([`etcd::EtcdProcess`]), a throwaway
//! PKI ([`pki::TestCa`]) and the storage conformance suite ([`conformance`]).

pub mod conformance;
pub mod etcd;
pub mod pki;

pub use etcd::{ClientTls, EtcdOptions, EtcdProcess};
