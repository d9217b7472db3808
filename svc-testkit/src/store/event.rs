//! Committed writes and how watchers see them.

use std::sync::Arc;

use serde_json::Value;

use super::{set_meta, ObjKey};
use crate::kind::Kind;
use crate::selector::Filter;

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed write.
#[derive(Debug)]
pub(crate) struct Event {
    pub(crate) kind: Kind,
    pub(crate) rv: u64,
    pub(crate) type_: EventType,
    pub(crate) key: ObjKey,
    /// The state after the write (for deletes: the last state, with the new rv).
    pub(crate) object: Arc<Value>,
    /// The state before the write, `None` for creates.
    pub(crate) prev: Option<Arc<Value>>,
}

impl Event {
    /// What a watcher with `filter` sees of this event, if anything.
    ///
    /// Like the API server's watch cache: an object that starts matching is
    /// `ADDED`, one that stops matching is `DELETED` (its previous state, with
    /// this event's resource version).
    pub(crate) fn view(&self, filter: &Filter) -> Option<(EventType, Arc<Value>)> {
        let before = self.prev.as_deref().is_some_and(|p| filter.matches(p));
        if self.type_ == EventType::Deleted {
            return before.then(|| (EventType::Deleted, self.object.clone()));
        }
        match (before, filter.matches(&self.object)) {
            (false, true) => Some((EventType::Added, self.object.clone())),
            (true, true) => Some((EventType::Modified, self.object.clone())),
            (true, false) => {
                let mut prev = Value::clone(self.prev.as_deref()?);
                set_meta(&mut prev, "resourceVersion", self.rv.to_string().into());
                Some((EventType::Deleted, Arc::new(prev)))
            }
            (false, false) => None,
        }
    }
}
