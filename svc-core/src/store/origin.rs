//! Where objects come from: each source (or each watch of a source) tags its events with an
//! [`Origin`], so that several sources can feed one store, and reports its sync state and
//! errors per origin.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::ResourceKind;

/// The source of a set of objects in the store: `"manifests"`, `"kube"`, `"kube/ns/shop"`, ….
///
/// A full replace ([`Event::ReplaceServices`](super::Event::ReplaceServices) and
/// [`Event::ReplaceSlices`](super::Event::ReplaceSlices)) from one origin never removes objects
/// that another origin holds. Events sent without a tag belong to [`Origin::default`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin(Arc<str>);

impl Origin {
    /// An origin by name. Names are compared as given.
    pub fn new(name: impl AsRef<str>) -> Self {
        Self(name.as_ref().into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Origin {
    /// `"default"`: the origin of untagged events.
    fn default() -> Self {
        Self::new("default")
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The last error a source reported for one origin (see
/// [`Store::report_source_error`](super::Store::report_source_error)).
///
/// The source's own typed error is the [`source`](std::error::Error::source); downcast it to
/// find out more (the Kubernetes source's is `svc_core::source::kube::Error`, which names the
/// missing verb of a 403).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{origin}: {error}")]
pub struct SourceError {
    origin: Origin,
    permanent: bool,
    since: Instant,
    #[source]
    error: Arc<dyn std::error::Error + Send + Sync>,
}

impl SourceError {
    /// The origin that failed.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Whether the source considers it permanent (401, 403, 404 of the API group): it will
    /// not go away by retrying until someone fixes the configuration.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// When the origin started failing (the first error of this run of failures).
    pub fn since(&self) -> Instant {
        self.since
    }

    /// The source's error.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }
}

/// The store cannot answer yet: returned by [`Store::ready_for`](super::Store::ready_for) when
/// the bounded wait ends before the objects it waits for are listed.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotSynced {
    /// No list completed within the wait, and no source reported an error.
    #[error("not synced after {waited:?}")]
    Timeout {
        /// How long the caller waited.
        waited: Duration,
    },
    /// A source reports an error (the wait ended [`StoreConfig::error_grace`] after it).
    ///
    /// [`StoreConfig::error_grace`]: super::StoreConfig::error_grace
    #[error("not synced: {0}")]
    Source(#[source] SourceError),
}

impl NotSynced {
    /// The source's error, if one is known.
    pub fn source_error(&self) -> Option<&SourceError> {
        match self {
            Self::Source(e) => Some(e),
            Self::Timeout { .. } => None,
        }
    }
}

/// One origin's progress.
#[derive(Clone, Debug, Default)]
pub(crate) struct OriginSync {
    pub(crate) services: bool,
    pub(crate) slices: bool,
    /// The store is not synced until this origin is (a source announced it at start).
    pub(crate) expected: bool,
    /// The last error of each kind's watch (Services, slices): one watch's success does not
    /// end the other's failure.
    pub(crate) errors: [Option<SourceError>; 2],
}

pub(crate) fn kind_index(kind: ResourceKind) -> usize {
    match kind {
        ResourceKind::Service => 0,
        ResourceKind::EndpointSlice => 1,
    }
}

impl OriginSync {
    pub(crate) fn synced(&self) -> bool {
        self.services && self.slices
    }
}

/// Sync progress of the whole store, published through a `watch` channel.
#[derive(Clone, Debug, Default)]
pub(crate) struct SyncState {
    /// Some origin applied a full list of Services / of slices.
    pub(crate) services: bool,
    pub(crate) slices: bool,
    pub(crate) origins: HashMap<Origin, OriginSync>,
}

impl SyncState {
    /// Both kinds listed once, and every announced origin synced.
    pub(crate) fn synced(&self) -> bool {
        self.services && self.slices && self.origins.values().all(|o| !o.expected || o.synced())
    }

    /// The oldest error among origins that hold the store back: announced ones, or `origin`.
    pub(crate) fn blocking_error(&self, origin: Option<&Origin>) -> Option<&SourceError> {
        self.origins
            .iter()
            .filter(|(o, s)| (s.expected && !s.synced()) || Some(*o) == origin)
            .flat_map(|(_, s)| s.errors.iter().flatten())
            .min_by_key(|e| e.since)
    }

    pub(crate) fn set_error(
        &mut self,
        origin: &Origin,
        kind: ResourceKind,
        error: Arc<dyn std::error::Error + Send + Sync>,
        permanent: bool,
    ) {
        let entry = self.origins.entry(origin.clone()).or_default();
        let slot = &mut entry.errors[kind_index(kind)];
        let since = slot.as_ref().map_or_else(Instant::now, |e| e.since);
        *slot = Some(SourceError {
            origin: origin.clone(),
            permanent,
            since,
            error,
        });
    }
}
