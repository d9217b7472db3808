//! Query string parsing into list and watch options.
//!
//! Every error is a message for a 400 `BadRequest` response.

use std::time::Duration;

use crate::selector::{FieldSelector, Filter, LabelSelector};
use crate::store::ListAt;

/// Decoded `application/x-www-form-urlencoded` query pairs.
#[derive(Debug, Default)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex);
                let lo = bytes.get(i + 2).copied().and_then(hex);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(format!("invalid percent-encoding in {s:?}"));
                };
                out.push(hi << 4 | lo);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("query parameter {s:?} is not UTF-8"))
}

impl Query {
    /// Parses a raw query string.
    pub(crate) fn parse(raw: Option<&str>) -> Result<Self, String> {
        let mut pairs = Vec::new();
        for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            pairs.push((decode(k)?, decode(v)?));
        }
        Ok(Self { pairs })
    }

    /// The last value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter: `true`/`1` or `false`/`0`; `None` when absent.
    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, String> {
        match self.get(key) {
            None => Ok(None),
            Some("true" | "1") => Ok(Some(true)),
            Some("false" | "0" | "") => Ok(Some(false)),
            Some(v) => Err(format!("invalid boolean for {key}: {v:?}")),
        }
    }

    /// An unsigned integer parameter; `None` when absent or empty.
    pub(crate) fn u64(&self, key: &str) -> Result<Option<u64>, String> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("invalid value for {key}: {v:?}")),
        }
    }

    /// Whether this is a watch request (`watch=true` or `watch=1`).
    pub(crate) fn is_watch(&self) -> Result<bool, String> {
        Ok(self.bool("watch")?.unwrap_or(false))
    }

    fn filter(&self, namespace: Option<&str>) -> Result<Filter, String> {
        let labels = LabelSelector::parse(self.get("labelSelector").unwrap_or_default())
            .map_err(|e| format!("unable to parse labelSelector: {}", e.0))?;
        let fields = FieldSelector::parse(self.get("fieldSelector").unwrap_or_default())
            .map_err(|e| format!("unable to parse fieldSelector: {}", e.0))?;
        Ok(Filter {
            namespace: namespace.map(str::to_owned),
            labels,
            fields,
        })
    }

    fn resource_version(&self) -> Result<Option<u64>, String> {
        self.u64("resourceVersion")
            .map_err(|_| format!("invalid resourceVersion {:?}", self.get("resourceVersion")))
    }

    fn version_match(&self) -> Result<Option<Match>, String> {
        match self.get("resourceVersionMatch") {
            None | Some("") => Ok(None),
            Some("NotOlderThan") => Ok(Some(Match::NotOlderThan)),
            Some("Exact") => Ok(Some(Match::Exact)),
            Some(v) => Err(format!("unsupported resourceVersionMatch {v:?}")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    NotOlderThan,
    Exact,
}

/// Options of a list request.
#[derive(Debug)]
pub(crate) struct ListOptions {
    pub(crate) filter: Filter,
    pub(crate) at: ListAt,
    /// 0 means no limit.
    pub(crate) limit: u64,
    pub(crate) continue_: Option<String>,
}

/// Parses list options. `resourceVersion` unset, `""` or `"0"` reads the
/// current state; a continue token takes precedence over `resourceVersion`.
pub(crate) fn list_options(q: &Query, namespace: Option<&str>) -> Result<ListOptions, String> {
    let filter = q.filter(namespace)?;
    let rv = q.resource_version()?;
    let at = match (q.version_match()?, rv) {
        (Some(_), None) => {
            return Err(
                "resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
            )
        }
        (Some(Match::Exact), Some(0)) => {
            return Err(
                "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"".into(),
            )
        }
        (Some(Match::Exact), Some(n)) => ListAt::Exact(n),
        (_, None | Some(0)) => ListAt::Current,
        (_, Some(n)) => ListAt::NotOlderThan(n),
    };
    let continue_ = q
        .get("continue")
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    let limit = q.u64("limit")?.unwrap_or(0);
    Ok(ListOptions {
        filter,
        at,
        limit,
        continue_,
    })
}

/// Options of a watch request.
#[derive(Debug)]
pub(crate) struct WatchOptions {
    pub(crate) filter: Filter,
    /// `None` for unset, `""` or `"0"`.
    pub(crate) rv: Option<u64>,
    pub(crate) send_initial_events: Option<bool>,
    pub(crate) bookmarks: bool,
    pub(crate) timeout: Option<Duration>,
}

/// Parses watch options, with the API server's validation of
/// `sendInitialEvents` (needs `allowWatchBookmarks=true`, and
/// `resourceVersionMatch` is only allowed with it, as `NotOlderThan`).
pub(crate) fn watch_options(q: &Query, namespace: Option<&str>) -> Result<WatchOptions, String> {
    let filter = q.filter(namespace)?;
    let rv = q.resource_version()?.filter(|rv| *rv != 0);
    let send_initial_events = q.bool("sendInitialEvents")?;
    let bookmarks = q.bool("allowWatchBookmarks")?.unwrap_or(false);
    match (send_initial_events, q.version_match()?) {
        (Some(_), Some(Match::NotOlderThan)) | (None, None) => {}
        (Some(_), _) => {
            return Err("sendInitialEvents requires resourceVersionMatch=NotOlderThan".into())
        }
        (None, Some(_)) => {
            return Err(
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"
                    .into(),
            )
        }
    }
    if send_initial_events == Some(true) && !bookmarks {
        return Err("sendInitialEvents=true requires allowWatchBookmarks=true".into());
    }
    let timeout = q
        .u64("timeoutSeconds")?
        .filter(|s| *s > 0)
        .map(Duration::from_secs);
    Ok(WatchOptions {
        filter,
        rv,
        send_initial_events,
        bookmarks,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Query {
        Query::parse(Some(s)).unwrap()
    }

    #[test]
    fn decodes_pairs() {
        let q = q("labelSelector=app%3Dweb%2Ctier+in+(a)&watch&limit=2&limit=3");
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert_eq!(q.get("watch"), Some(""));
        assert_eq!(q.u64("limit"), Ok(Some(3)));
        assert!(Query::parse(Some("a=%zz")).is_err());
        assert!(Query::parse(Some("a=%ff")).is_err());
    }

    #[test]
    fn list_resource_versions() {
        let at = |s: &str| list_options(&q(s), None).map(|o| o.at);
        assert_eq!(at(""), Ok(ListAt::Current));
        assert_eq!(
            at("resourceVersion=0&resourceVersionMatch=NotOlderThan"),
            Ok(ListAt::Current)
        );
        assert_eq!(at("resourceVersion=5"), Ok(ListAt::NotOlderThan(5)));
        assert_eq!(
            at("resourceVersion=5&resourceVersionMatch=Exact"),
            Ok(ListAt::Exact(5))
        );
        assert!(at("resourceVersionMatch=Exact").is_err());
        assert!(at("resourceVersion=0&resourceVersionMatch=Exact").is_err());
        assert!(at("resourceVersion=abc").is_err());
        assert!(at("resourceVersion=1&resourceVersionMatch=Newest").is_err());
        assert!(list_options(&q("limit=-1"), None).is_err());
        assert!(list_options(&q("labelSelector=a%3D%3D%3Db"), None).is_err());
    }

    #[test]
    fn watch_validation() {
        let w = |s: &str| watch_options(&q(s), Some("ns"));
        let ok =
            w("watch=true&resourceVersion=7&timeoutSeconds=3&allowWatchBookmarks=true").unwrap();
        assert_eq!(ok.rv, Some(7));
        assert_eq!(ok.timeout, Some(Duration::from_secs(3)));
        assert!(ok.bookmarks);
        assert_eq!(ok.filter.namespace.as_deref(), Some("ns"));
        assert_eq!(w("resourceVersion=0").unwrap().rv, None);
        let streaming =
            "sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true";
        assert_eq!(w(streaming).unwrap().send_initial_events, Some(true));
        assert!(w("sendInitialEvents=true&resourceVersionMatch=NotOlderThan").is_err());
        assert!(w("sendInitialEvents=true&allowWatchBookmarks=true").is_err());
        assert!(w("resourceVersionMatch=NotOlderThan").is_err());
        assert!(w("allowWatchBookmarks=maybe").is_err());
        assert!(w("fieldSelector=spec.foo%3Dbar").is_err());
    }
}
