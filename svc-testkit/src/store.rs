//! Object storage with etcd-like resource versions, history and compaction.
//!
//! Pure data structure (no I/O, no clock): the server wraps it in a lock.
//! Every write bumps one global `u64` resource version shared by all kinds
//! and appends an [`Event`] to the history. History keeps every event with a
//! resource version above `compacted`; older versions are "compacted" and
//! requests for them fail with [`StoreError::Expired`]. Each event remembers
//! the previous object state, so a list can be served at any snapshot
//! version that has not been compacted.

mod event;

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::kind::Kind;
use crate::selector::Filter;

pub(crate) use event::{Event, EventType};

/// Events kept before the oldest ones are compacted automatically.
const MAX_HISTORY: usize = 100_000;

/// Namespace and name; orders objects the way list responses do.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ObjKey {
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl ObjKey {
    pub(crate) fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// Why the store refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreError {
    /// The requested resource version has been compacted.
    Expired { requested: u64, compacted: u64 },
    /// The requested resource version is newer than the store.
    TooLarge { requested: u64, current: u64 },
    /// Malformed input (object, continue token).
    Invalid(String),
    /// A create found an existing object.
    AlreadyExists,
    /// A resourceVersion precondition failed.
    Conflict(String),
}

/// How a write treats an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteMode {
    /// Create or replace; any `metadata.resourceVersion` in the input is ignored.
    Apply,
    /// Fail with `AlreadyExists` if the object exists.
    Create,
    /// Create or replace; a non-empty `metadata.resourceVersion` must match.
    Update,
}

/// Which state a list reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListAt {
    /// The current state.
    Current,
    /// The current state, which must be at least this version.
    NotOlderThan(u64),
    /// The state exactly at this version.
    Exact(u64),
}

/// One page of a list.
#[derive(Debug)]
pub(crate) struct ListPage {
    pub(crate) rv: u64,
    pub(crate) items: Vec<Arc<Value>>,
    pub(crate) continue_: Option<String>,
    pub(crate) remaining: u64,
}

/// The object store. See the module docs.
#[derive(Debug)]
pub(crate) struct Store {
    rv: u64,
    compacted: u64,
    next_uid: u64,
    objects: [BTreeMap<ObjKey, Arc<Value>>; 2],
    history: VecDeque<Arc<Event>>,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            rv: 1,
            compacted: 1,
            next_uid: 1,
            objects: Default::default(),
            history: VecDeque::new(),
        }
    }
}

pub(crate) fn set_meta(obj: &mut Value, field: &str, value: Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(field.to_owned(), value);
    }
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj["metadata"][field].as_str().filter(|s| !s.is_empty())
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty() && !s.contains(['/', '%']) && s != "." && s != ".."
}

impl Store {
    /// The current (latest) resource version.
    pub(crate) fn resource_version(&self) -> u64 {
        self.rv
    }

    /// History holds every event with a resource version above this.
    pub(crate) fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Forgets all history up to the current version.
    pub(crate) fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    /// The current state of one object.
    pub(crate) fn get(&self, kind: Kind, key: &ObjKey) -> Option<Arc<Value>> {
        self.objects[kind.index()].get(key).cloned()
    }

    /// Writes an object. Sets `apiVersion`, `kind`, `metadata.namespace`
    /// (default `default`), `uid`, `creationTimestamp` (to `now` if missing)
    /// and `resourceVersion`. `uid` and `creationTimestamp` of an existing
    /// object are kept.
    pub(crate) fn write(
        &mut self,
        kind: Kind,
        mut obj: Value,
        mode: WriteMode,
        now: &str,
    ) -> Result<Arc<Event>, StoreError> {
        let invalid = |m: &str| StoreError::Invalid(m.to_owned());
        let root = obj
            .as_object_mut()
            .ok_or_else(|| invalid("object must be a JSON object"))?;
        root.insert("apiVersion".into(), kind.api_version().into());
        root.insert("kind".into(), kind.kind().into());
        let meta = root.entry("metadata").or_insert_with(|| Map::new().into());
        if !meta.is_object() {
            return Err(invalid("metadata must be a JSON object"));
        }
        if meta_str(&obj, "name").is_none() && mode == WriteMode::Create {
            if let Some(prefix) = meta_str(&obj, "generateName") {
                let name = format!("{prefix}{:05x}", self.next_uid);
                set_meta(&mut obj, "name", name.into());
            }
        }
        let name = meta_str(&obj, "name").ok_or_else(|| invalid("metadata.name is required"))?;
        let namespace = meta_str(&obj, "namespace").unwrap_or("default");
        if !valid_segment(name) || !valid_segment(namespace) {
            return Err(invalid("invalid metadata.name or metadata.namespace"));
        }
        let key = ObjKey::new(namespace, name);
        let existing = self.get(kind, &key);
        match (&existing, mode) {
            (Some(_), WriteMode::Create) => return Err(StoreError::AlreadyExists),
            (_, WriteMode::Update) => {
                if let Some(want) = meta_str(&obj, "resourceVersion") {
                    let have = existing
                        .as_deref()
                        .and_then(|e| meta_str(e, "resourceVersion"));
                    if have != Some(want) {
                        return Err(StoreError::Conflict(format!(
                            "the object has been modified; resourceVersion {want} does not match {}",
                            have.unwrap_or("(none)")
                        )));
                    }
                }
            }
            _ => {}
        }
        let rv = self.rv + 1;
        set_meta(&mut obj, "namespace", key.namespace.clone().into());
        set_meta(&mut obj, "resourceVersion", rv.to_string().into());
        let old = |f: &str| {
            existing
                .as_deref()
                .and_then(|e| meta_str(e, f))
                .map(str::to_owned)
        };
        let uid = old("uid").or_else(|| meta_str(&obj, "uid").map(str::to_owned));
        let uid = uid.unwrap_or_else(|| format!("00000000-0000-4000-8000-{:012x}", self.next_uid));
        set_meta(&mut obj, "uid", uid.into());
        let created = old("creationTimestamp")
            .or_else(|| meta_str(&obj, "creationTimestamp").map(str::to_owned))
            .unwrap_or_else(|| now.to_owned());
        set_meta(&mut obj, "creationTimestamp", created.into());
        kind.validate(&obj).map_err(StoreError::Invalid)?;

        self.next_uid += 1;
        let object = Arc::new(obj);
        self.objects[kind.index()].insert(key.clone(), object.clone());
        let type_ = if existing.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        Ok(self.commit(Event {
            kind,
            rv,
            type_,
            key,
            object,
            prev: existing,
        }))
    }

    /// Deletes an object; `None` if it does not exist.
    pub(crate) fn delete(&mut self, kind: Kind, key: &ObjKey) -> Option<Arc<Event>> {
        let prev = self.objects[kind.index()].remove(key)?;
        let rv = self.rv + 1;
        let mut last = Value::clone(&prev);
        set_meta(&mut last, "resourceVersion", rv.to_string().into());
        let type_ = EventType::Deleted;
        let key = key.clone();
        Some(self.commit(Event {
            kind,
            rv,
            type_,
            key,
            object: Arc::new(last),
            prev: Some(prev),
        }))
    }

    fn commit(&mut self, event: Event) -> Arc<Event> {
        self.rv = event.rv;
        let event = Arc::new(event);
        self.history.push_back(event.clone());
        while self.history.len() > MAX_HISTORY {
            if let Some(oldest) = self.history.pop_front() {
                self.compacted = oldest.rv;
            }
        }
        event
    }

    fn check_rv(&self, requested: u64) -> Result<(), StoreError> {
        if requested < self.compacted {
            return Err(StoreError::Expired {
                requested,
                compacted: self.compacted,
            });
        }
        if requested > self.rv {
            return Err(StoreError::TooLarge {
                requested,
                current: self.rv,
            });
        }
        Ok(())
    }

    /// Every event of `kind` with a resource version above `rv`, oldest first.
    pub(crate) fn events_since(&self, kind: Kind, rv: u64) -> Result<Vec<Arc<Event>>, StoreError> {
        self.check_rv(rv)?;
        let start = self.history.partition_point(|e| e.rv <= rv);
        Ok(self
            .history
            .range(start..)
            .filter(|e| e.kind == kind)
            .cloned()
            .collect())
    }

    /// The objects of `kind` as they were at resource version `rv`.
    fn snapshot(
        &self,
        kind: Kind,
        rv: u64,
    ) -> Result<Cow<'_, BTreeMap<ObjKey, Arc<Value>>>, StoreError> {
        self.check_rv(rv)?;
        let current = &self.objects[kind.index()];
        if rv == self.rv {
            return Ok(Cow::Borrowed(current));
        }
        let mut objects = current.clone();
        for event in self.history.iter().rev().take_while(|e| e.rv > rv) {
            if event.kind != kind {
                continue;
            }
            match &event.prev {
                Some(prev) => objects.insert(event.key.clone(), prev.clone()),
                None => objects.remove(&event.key),
            };
        }
        Ok(Cow::Owned(objects))
    }

    /// One page of matching objects, ordered by namespace and name.
    ///
    /// With a continue token, `at` is ignored and the page is read at the
    /// token's snapshot version. `limit` 0 means no limit.
    pub(crate) fn list(
        &self,
        kind: Kind,
        filter: &Filter,
        at: ListAt,
        limit: u64,
        continue_: Option<&str>,
    ) -> Result<ListPage, StoreError> {
        let (rv, after) = match continue_ {
            Some(token) => {
                let (rv, key) = decode_continue(token)?;
                (rv, Some(key))
            }
            None => match at {
                ListAt::Current => (self.rv, None),
                ListAt::NotOlderThan(n) if n > self.rv => {
                    return Err(StoreError::TooLarge {
                        requested: n,
                        current: self.rv,
                    })
                }
                ListAt::NotOlderThan(_) => (self.rv, None),
                ListAt::Exact(n) => (n, None),
            },
        };
        let objects = self.snapshot(kind, rv)?;
        // Keys are ordered by namespace, then name: a namespaced list (and one pinned to a
        // name) reads only its own keys instead of scanning every object of the kind.
        let first = match (filter.pinned_namespace(), filter.pinned_name()) {
            (Some(ns), name) => Some(ObjKey::new(ns, name.unwrap_or(""))),
            (None, _) => None,
        };
        let lower = match (&after, &first) {
            (Some(after), Some(first)) if after < first => Bound::Included(first),
            (Some(after), _) => Bound::Excluded(after),
            (None, Some(first)) => Bound::Included(first),
            (None, None) => Bound::Unbounded,
        };
        // Past the pinned namespace (or the pinned name in it), nothing can match.
        let in_range = |key: &ObjKey| {
            first.as_ref().is_none_or(|first| {
                key.namespace == first.namespace
                    && filter.pinned_name().is_none_or(|name| key.name == name)
            })
        };
        let mut matching = objects
            .range((lower, Bound::Unbounded))
            .take_while(|(key, _)| in_range(key))
            .filter(|(_, obj)| filter.matches(obj));
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let limit = if limit == 0 { usize::MAX } else { limit };
        let mut items = Vec::new();
        let mut last = None;
        for (key, obj) in matching.by_ref().take(limit) {
            items.push(obj.clone());
            last = Some(key);
        }
        let remaining = matching.count() as u64;
        let continue_ = match last {
            Some(key) if remaining > 0 => Some(encode_continue(rv, key)),
            _ => None,
        };
        Ok(ListPage {
            rv,
            items,
            continue_,
            remaining,
        })
    }
}

/// Continue tokens are `"{rv}/{namespace}/{name}"` of the snapshot and last key.
fn encode_continue(rv: u64, key: &ObjKey) -> String {
    format!("{rv}/{}/{}", key.namespace, key.name)
}

fn decode_continue(token: &str) -> Result<(u64, ObjKey), StoreError> {
    let bad = || StoreError::Invalid(format!("invalid continue token {token:?}"));
    let mut parts = token.splitn(3, '/');
    let rv = parts
        .next()
        .and_then(|rv| rv.parse().ok())
        .ok_or_else(bad)?;
    let namespace = parts.next().ok_or_else(bad)?;
    let name = parts.next().filter(|n| !n.contains('/')).ok_or_else(bad)?;
    Ok((rv, ObjKey::new(namespace, name)))
}

#[cfg(test)]
mod tests;
