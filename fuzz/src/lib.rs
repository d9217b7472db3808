//! The fuzz targets' entry points (see `entries.rs`).
#![forbid(unsafe_code)]

mod entries;

pub use entries::*;
