//! Shared helpers for the examples.

pub mod grpc;
pub mod rolling;
pub mod spread;
