//! One object as several origins hold it.

use std::sync::Arc;

use super::origin::Origin;

/// The versions of one object held by each origin that has it. The one applied last is the
/// one the store serves; when its origin lets go, the previous holder's version is served
/// again. Almost every object has one holder, which costs no allocation.
#[derive(Clone, Debug)]
pub(crate) enum Held<T> {
    One(Origin, Arc<T>),
    Many(Vec<(Origin, Arc<T>)>),
}

impl<T: PartialEq> Held<T> {
    pub(crate) fn new(origin: Origin, value: Arc<T>) -> Self {
        Self::One(origin, value)
    }

    /// The version served: the one applied last.
    pub(crate) fn current(&self) -> &Arc<T> {
        match self {
            Self::One(_, v) => v,
            // Never empty: `remove` turns a one-element list back into `One`.
            Self::Many(all) => &all[all.len() - 1].1,
        }
    }

    pub(crate) fn holds(&self, origin: &Origin) -> bool {
        match self {
            Self::One(o, _) => o == origin,
            Self::Many(all) => all.iter().any(|(o, _)| o == origin),
        }
    }

    /// `origin`'s version, if it holds one.
    pub(crate) fn get(&self, origin: &Origin) -> Option<&Arc<T>> {
        match self {
            Self::One(o, v) => (o == origin).then_some(v),
            Self::Many(all) => all.iter().find(|(o, _)| o == origin).map(|(_, v)| v),
        }
    }

    /// Records `origin`'s version as the latest, unless it is the version `origin` holds
    /// already. An equal version already held (by anyone) is
    /// reused, so that an unchanged object keeps its `Arc` and is not republished.
    pub(crate) fn set(&mut self, origin: &Origin, value: T) {
        // An origin repeating its own version (a relist) does not take precedence back.
        if self.get(origin).is_some_and(|v| **v == value) {
            return;
        }
        let value = match self.find_equal(&value) {
            Some(same) => same,
            None => Arc::new(value),
        };
        self.set_arc(origin, value);
    }

    pub(crate) fn set_arc(&mut self, origin: &Origin, value: Arc<T>) {
        match self {
            Self::One(o, v) if o == origin => *v = value,
            Self::One(..) => {
                let Self::One(o, v) = std::mem::replace(self, Self::Many(Vec::with_capacity(2)))
                else {
                    unreachable!("matched One above")
                };
                *self = Self::Many(vec![(o, v), (origin.clone(), value)]);
            }
            Self::Many(all) => {
                all.retain(|(o, _)| o != origin);
                all.push((origin.clone(), value));
            }
        }
    }

    /// Drops `origin`'s version; `false` when nobody holds the object any more.
    pub(crate) fn remove(&mut self, origin: &Origin) -> bool {
        match self {
            Self::One(o, _) => o != origin,
            Self::Many(all) => {
                all.retain(|(o, _)| o != origin);
                if all.len() == 1 {
                    if let Some((o, v)) = all.pop() {
                        *self = Self::One(o, v);
                    }
                }
                true
            }
        }
    }

    fn find_equal(&self, value: &T) -> Option<Arc<T>> {
        match self {
            Self::One(_, v) => (**v == *value).then(|| v.clone()),
            Self::Many(all) => all
                .iter()
                .find(|(_, v)| **v == *value)
                .map(|(_, v)| v.clone()),
        }
    }
}
