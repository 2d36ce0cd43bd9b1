//! Placeholder until the etcd backend lands.
