//! Sources of Services and EndpointSlices. Each turns what it reads into store [`Event`]s and
//! sends them to the one [`Writer`](crate::store::Writer).
//!
//! - [`manifests`]: a YAML file or directory, reloaded when it changes.
#![cfg_attr(
    feature = "kube",
    doc = "- [`kube`] (cargo feature `kube`, on by default): list+watch against the Kubernetes \
           API, with bookmarks, backoff, relist on 410 Gone and stalled-watch detection."
)]

#[cfg(feature = "kube")]
pub mod kube;
pub mod manifests;

use std::sync::Arc;

use tokio::sync::Notify;

#[cfg(feature = "kube")]
use crate::model::ModelError;
use crate::model::{EndpointSlice, Service};
use crate::store::Event;

/// Asks a running source to look at its input again now (the proxy pulls it on SIGHUP).
///
/// The manifests source then applies every changed file that parses at once, without waiting
/// for it to be stable, since the operator says the edit is complete. The Kubernetes source
/// retries a backing-off list or watch at once.
#[derive(Clone, Debug, Default)]
pub struct Reload(Arc<Notify>);

impl Reload {
    /// A trigger nobody has pulled yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests a reload. Requests made while one is pending coalesce into one.
    pub fn trigger(&self) {
        self.0.notify_one();
    }

    /// Resolves at the next request (or at once if one is pending).
    pub async fn requested(&self) {
        self.0.notified().await
    }
}

/// Logs an object that failed conversion, with its identity.
#[cfg(feature = "kube")]
pub(crate) fn log_invalid<K: ::kube::Resource>(obj: &K, kind: &'static str, error: &ModelError) {
    let meta = obj.meta();
    tracing::warn!(
        kind,
        namespace = meta.namespace.as_deref().unwrap_or(""),
        name = meta.name.as_deref().unwrap_or(""),
        resource_version = meta.resource_version.as_deref().unwrap_or(""),
        %error,
        "skipping invalid object; keeping its last good version, if any"
    );
}

/// Converts an object, logging a failure.
#[cfg(feature = "kube")]
pub(crate) fn convert<K, T>(obj: &K, kind: &'static str) -> Result<T, ModelError>
where
    K: ::kube::Resource,
    T: for<'a> TryFrom<&'a K, Error = ModelError>,
{
    T::try_from(obj).inspect_err(|error| log_invalid(obj, kind, error))
}

/// Either kind of object we route on, converted.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Object {
    /// A Service.
    Service(Service),
    /// An EndpointSlice.
    Slice(EndpointSlice),
}

impl From<Object> for Event {
    fn from(o: Object) -> Self {
        match o {
            Object::Service(s) => Event::ApplyService(s),
            Object::Slice(s) => Event::ApplySlice(s),
        }
    }
}
