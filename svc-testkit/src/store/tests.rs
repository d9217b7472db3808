use serde_json::json;

use super::*;
use crate::selector::LabelSelector;

const NOW: &str = "2026-01-01T00:00:00Z";

fn svc(ns: &str, name: &str, app: &str) -> Value {
    json!({"metadata": {"namespace": ns, "name": name, "labels": {"app": app}}, "spec": {}})
}

fn put(store: &mut Store, ns: &str, name: &str, app: &str) -> u64 {
    store
        .write(Kind::Service, svc(ns, name, app), WriteMode::Apply, NOW)
        .unwrap()
        .rv
}

fn names(page: &ListPage) -> Vec<String> {
    page.items
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

fn all() -> Filter {
    Filter::default()
}

fn app(v: &str) -> Filter {
    Filter {
        labels: LabelSelector::parse(&format!("app={v}")).unwrap(),
        ..Filter::default()
    }
}

#[test]
fn writes_bump_one_global_version() {
    let mut s = Store::default();
    let start = s.resource_version();
    assert_eq!(put(&mut s, "a", "x", "web"), start + 1);
    let slice = json!({"metadata": {"name": "x-1", "namespace": "a"}, "addressType": "IPv4", "endpoints": []});
    let e = s
        .write(Kind::EndpointSlice, slice, WriteMode::Apply, NOW)
        .unwrap();
    assert_eq!(e.rv, start + 2);
    assert_eq!(e.object["apiVersion"], "discovery.k8s.io/v1");
    assert_eq!(
        e.object["metadata"]["resourceVersion"],
        (start + 2).to_string()
    );
    assert_eq!(s.resource_version(), start + 2);
}

#[test]
fn write_sets_and_keeps_metadata() {
    let mut s = Store::default();
    let first = s
        .write(
            Kind::Service,
            json!({"metadata": {"name": "x"}}),
            WriteMode::Apply,
            NOW,
        )
        .unwrap();
    assert_eq!(first.type_, EventType::Added);
    assert_eq!(first.object["metadata"]["namespace"], "default");
    assert_eq!(first.object["kind"], "Service");
    let uid = first.object["metadata"]["uid"].clone();
    assert!(uid.as_str().is_some_and(|u| !u.is_empty()));
    let second = s
        .write(
            Kind::Service,
            json!({"metadata": {"name": "x"}}),
            WriteMode::Apply,
            "2030-01-01T00:00:00Z",
        )
        .unwrap();
    assert_eq!(second.type_, EventType::Modified);
    assert_eq!(second.object["metadata"]["uid"], uid);
    assert_eq!(second.object["metadata"]["creationTimestamp"], NOW);
    assert!(second.prev.is_some());
}

#[test]
fn write_rejects_bad_objects() {
    let mut s = Store::default();
    let rv = s.resource_version();
    for bad in [
        json!([]),
        json!({"metadata": {}}),
        json!({"metadata": {"name": "a/b"}}),
        json!({"metadata": 1}),
    ] {
        assert!(matches!(
            s.write(Kind::Service, bad, WriteMode::Apply, NOW),
            Err(StoreError::Invalid(_))
        ));
    }
    let wrong_type = json!({"metadata": {"name": "x"}, "spec": {"ports": "nope"}});
    assert!(matches!(
        s.write(Kind::Service, wrong_type, WriteMode::Apply, NOW),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        s.resource_version(),
        rv,
        "failed writes must not bump the version"
    );
}

#[test]
fn create_and_update_preconditions() {
    let mut s = Store::default();
    let rv = put(&mut s, "a", "x", "web");
    assert_eq!(
        s.write(Kind::Service, svc("a", "x", "web"), WriteMode::Create, NOW)
            .unwrap_err(),
        StoreError::AlreadyExists
    );
    let mut stale = svc("a", "x", "db");
    stale["metadata"]["resourceVersion"] = json!("1");
    assert!(matches!(
        s.write(Kind::Service, stale.clone(), WriteMode::Update, NOW),
        Err(StoreError::Conflict(_))
    ));
    stale["metadata"]["resourceVersion"] = json!(rv.to_string());
    assert!(s
        .write(Kind::Service, stale, WriteMode::Update, NOW)
        .is_ok());
    let generated = json!({"metadata": {"generateName": "gen-", "namespace": "a"}});
    let e = s
        .write(Kind::Service, generated, WriteMode::Create, NOW)
        .unwrap();
    assert!(e.key.name.starts_with("gen-"));
}

#[test]
fn delete_emits_last_state_with_new_version() {
    let mut s = Store::default();
    put(&mut s, "a", "x", "web");
    let e = s.delete(Kind::Service, &ObjKey::new("a", "x")).unwrap();
    assert_eq!(e.type_, EventType::Deleted);
    assert_eq!(e.object["metadata"]["resourceVersion"], e.rv.to_string());
    assert_eq!(e.object["metadata"]["labels"]["app"], "web");
    assert!(s.delete(Kind::Service, &ObjKey::new("a", "x")).is_none());
    assert!(s.get(Kind::Service, &ObjKey::new("a", "x")).is_none());
}

#[test]
fn list_is_ordered_and_paginated() {
    let mut s = Store::default();
    for (ns, name) in [("b", "1"), ("a", "2"), ("a", "1"), ("c", "0"), ("b", "0")] {
        put(&mut s, ns, name, "web");
    }
    let p1 = s
        .list(Kind::Service, &all(), ListAt::Current, 2, None)
        .unwrap();
    assert_eq!(names(&p1), ["1", "2"]);
    assert_eq!(p1.remaining, 3);
    let token = p1.continue_.clone().unwrap();
    // Writes after the first page do not show up in later pages.
    put(&mut s, "b", "00", "web");
    s.delete(Kind::Service, &ObjKey::new("c", "0"));
    let p2 = s
        .list(Kind::Service, &all(), ListAt::Current, 2, Some(&token))
        .unwrap();
    assert_eq!(names(&p2), ["0", "1"]);
    assert_eq!(p2.rv, p1.rv);
    let p3 = s
        .list(
            Kind::Service,
            &all(),
            ListAt::Current,
            2,
            p2.continue_.as_deref(),
        )
        .unwrap();
    assert_eq!(names(&p3), ["0"]);
    assert!(p3.continue_.is_none());
    assert_eq!(
        s.list(Kind::Service, &all(), ListAt::Current, 0, None)
            .unwrap()
            .items
            .len(),
        5
    );
}

#[test]
fn list_filters_and_reads_exact_snapshots() {
    let mut s = Store::default();
    let rv1 = put(&mut s, "a", "x", "web");
    put(&mut s, "a", "y", "db");
    put(&mut s, "a", "x", "db");
    let now = s
        .list(Kind::Service, &app("db"), ListAt::Current, 0, None)
        .unwrap();
    assert_eq!(names(&now), ["x", "y"]);
    let then = s
        .list(Kind::Service, &app("web"), ListAt::Exact(rv1), 0, None)
        .unwrap();
    assert_eq!(names(&then), ["x"]);
    assert_eq!(then.rv, rv1);
    assert!(s
        .list(Kind::EndpointSlice, &all(), ListAt::Current, 0, None)
        .unwrap()
        .items
        .is_empty());
}

#[test]
fn list_version_errors() {
    let mut s = Store::default();
    let rv1 = put(&mut s, "a", "x", "web");
    let p = s
        .list(Kind::Service, &all(), ListAt::Current, 0, None)
        .unwrap();
    assert!(matches!(
        s.list(
            Kind::Service,
            &all(),
            ListAt::NotOlderThan(rv1 + 5),
            0,
            None
        ),
        Err(StoreError::TooLarge { .. })
    ));
    assert!(matches!(
        s.list(Kind::Service, &all(), ListAt::Exact(rv1 + 5), 0, None),
        Err(StoreError::TooLarge { .. })
    ));
    put(&mut s, "a", "y", "web");
    put(&mut s, "a", "z", "web");
    let token = s
        .list(Kind::Service, &all(), ListAt::Current, 1, None)
        .unwrap()
        .continue_
        .unwrap();
    put(&mut s, "a", "zz", "web");
    s.compact();
    assert!(matches!(
        s.list(Kind::Service, &all(), ListAt::Exact(p.rv), 0, None),
        Err(StoreError::Expired { .. })
    ));
    assert!(matches!(
        s.list(Kind::Service, &all(), ListAt::Current, 1, Some(&token)),
        Err(StoreError::Expired { .. })
    ));
    for bad in ["", "x", "1", "1/a", "abc/a/b"] {
        assert!(
            matches!(
                s.list(Kind::Service, &all(), ListAt::Current, 1, Some(bad)),
                Err(StoreError::Invalid(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn events_since_and_compaction() {
    let mut s = Store::default();
    let start = s.resource_version();
    let rv1 = put(&mut s, "a", "x", "web");
    put(&mut s, "a", "y", "web");
    s.delete(Kind::Service, &ObjKey::new("a", "x"));
    let all_events = s.events_since(Kind::Service, start).unwrap();
    assert_eq!(
        all_events.iter().map(|e| e.type_).collect::<Vec<_>>(),
        [EventType::Added, EventType::Added, EventType::Deleted]
    );
    assert_eq!(s.events_since(Kind::Service, rv1).unwrap().len(), 2);
    assert!(s
        .events_since(Kind::EndpointSlice, start)
        .unwrap()
        .is_empty());
    s.compact();
    assert_eq!(s.compacted(), s.resource_version());
    assert_eq!(
        s.events_since(Kind::Service, rv1).unwrap_err(),
        StoreError::Expired {
            requested: rv1,
            compacted: s.resource_version()
        }
    );
    assert!(s
        .events_since(Kind::Service, s.resource_version())
        .unwrap()
        .is_empty());
    assert!(matches!(
        s.events_since(Kind::Service, s.resource_version() + 1),
        Err(StoreError::TooLarge { .. })
    ));
}

#[test]
fn view_translates_selector_transitions() {
    let mut s = Store::default();
    let web = app("web");
    let added = s
        .write(Kind::Service, svc("a", "x", "web"), WriteMode::Apply, NOW)
        .unwrap();
    assert_eq!(added.view(&web).unwrap().0, EventType::Added);
    let same = s
        .write(Kind::Service, svc("a", "x", "web"), WriteMode::Apply, NOW)
        .unwrap();
    assert_eq!(same.view(&web).unwrap().0, EventType::Modified);
    let left = s
        .write(Kind::Service, svc("a", "x", "db"), WriteMode::Apply, NOW)
        .unwrap();
    let (t, obj) = left.view(&web).unwrap();
    assert_eq!(t, EventType::Deleted);
    assert_eq!(obj["metadata"]["labels"]["app"], "web");
    assert_eq!(obj["metadata"]["resourceVersion"], left.rv.to_string());
    let back = s
        .write(Kind::Service, svc("a", "x", "web"), WriteMode::Apply, NOW)
        .unwrap();
    assert_eq!(back.view(&web).unwrap().0, EventType::Added);
    let other = s
        .write(Kind::Service, svc("a", "y", "db"), WriteMode::Apply, NOW)
        .unwrap();
    assert!(other.view(&web).is_none());
    let gone = s.delete(Kind::Service, &ObjKey::new("a", "y")).unwrap();
    assert!(gone.view(&web).is_none());
    assert_eq!(gone.view(&all()).unwrap().0, EventType::Deleted);
}

fn key_of(object: &Arc<Value>) -> String {
    let meta = &object["metadata"];
    format!(
        "{}/{}",
        meta["namespace"].as_str().unwrap(),
        meta["name"].as_str().unwrap()
    )
}

/// Lists pinned to a namespace or a name read only their keys: every combination of path
/// namespace, field selector and page size gives what filtering every object would.
#[test]
fn pinned_lists_match_a_full_scan() {
    use crate::selector::FieldSelector;
    let mut s = Store::default();
    for ns in ["a", "b", "c"] {
        for name in ["x", "y", "z"] {
            put(&mut s, ns, name, if name == "y" { "db" } else { "web" });
        }
    }
    let field = |f: &str| FieldSelector::parse(f).unwrap();
    let filters = [
        Filter {
            namespace: Some("b".into()),
            ..all()
        },
        Filter {
            namespace: Some("b".into()),
            fields: field("metadata.name=y"),
            ..all()
        },
        Filter {
            fields: field("metadata.namespace=c,metadata.name!=x"),
            ..all()
        },
        Filter {
            fields: field("metadata.name=z"),
            ..all()
        },
        Filter {
            namespace: Some("a".into()),
            fields: field("metadata.namespace=b"),
            ..all()
        },
        Filter {
            namespace: Some("zz".into()),
            ..all()
        },
        Filter {
            namespace: Some("c".into()),
            ..app("db")
        },
    ];
    for filter in &filters {
        let everything = s
            .list(Kind::Service, &all(), ListAt::Current, 0, None)
            .unwrap();
        let expected: Vec<String> = everything
            .items
            .iter()
            .filter(|o| filter.matches(o))
            .map(key_of)
            .collect();
        for limit in [0, 1, 2] {
            let mut got = Vec::new();
            let mut token = None;
            loop {
                let page = s
                    .list(
                        Kind::Service,
                        filter,
                        ListAt::Current,
                        limit,
                        token.as_deref(),
                    )
                    .unwrap();
                got.extend(page.items.iter().map(key_of));
                match page.continue_ {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
            assert_eq!(got, expected, "{filter:?} limit {limit}");
        }
    }
}
