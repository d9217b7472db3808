//! Shared helpers for the examples.

pub mod grpc;
pub mod procfs;
pub mod rolling;
pub mod spread;
