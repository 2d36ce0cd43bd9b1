//! Tests of the pure controllers: targets, gate.
