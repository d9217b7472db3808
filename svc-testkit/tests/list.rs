//! List, get and write semantics through a real `kube::Client`.

mod common;

use common::{setup, svc};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;
use svc_testkit::{endpoint_slice, EndpointSpec, Kind, SERVICE_NAME_LABEL};

fn names(list: &kube::core::ObjectList<Service>) -> Vec<String> {
    list.items
        .iter()
        .map(|s| s.metadata.name.clone().unwrap_or_default())
        .collect()
}

fn api_code(err: kube::Error) -> u16 {
    match err {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn paginates_over_a_consistent_snapshot() {
    let (server, api) = setup().await;
    for name in ["e", "c", "a", "d", "b"] {
        server.apply_service(svc("default", name, "web"));
    }
    let rv = server.resource_version().to_string();

    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(names(&first), ["a", "b"]);
    assert_eq!(
        first.metadata.resource_version.as_deref(),
        Some(rv.as_str())
    );
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().unwrap();

    // Changes after the first page are not seen by later pages.
    server.delete_service("default", "c");
    server.apply_service(svc("default", "bb", "web"));

    let second = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&second), ["c", "d"]);
    assert_eq!(
        second.metadata.resource_version.as_deref(),
        Some(rv.as_str())
    );
    let token = second.metadata.continue_.clone().unwrap();
    let third = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&third), ["e"]);
    assert!(third
        .metadata
        .continue_
        .as_deref()
        .unwrap_or_default()
        .is_empty());

    let fresh = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&fresh), ["a", "b", "bb", "d", "e"]);
    assert_eq!(server.list_count(Kind::Service), 4);
    assert_eq!(server.list_count(Kind::EndpointSlice), 0);
}

#[tokio::test]
async fn continue_token_expires_after_compaction() {
    let (server, api) = setup().await;
    for name in ["a", "b", "c"] {
        server.apply_service(svc("default", name, "web"));
    }
    let first = api.list(&ListParams::default().limit(1)).await.unwrap();
    server.apply_service(svc("default", "d", "web"));
    server.compact();
    let token = first.metadata.continue_.unwrap();
    let err = api
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected 410, got {other:?}"),
    }
    // Without compaction of the current version, an exact read works.
    let exact = ListParams::default()
        .at(&server.resource_version().to_string())
        .matching(kube::api::VersionMatch::Exact);
    assert_eq!(api.list(&exact).await.unwrap().items.len(), 4);
}

#[tokio::test]
async fn filters_by_label_selector_and_namespace() {
    let (server, api) = setup().await;
    server.apply_service(svc("default", "web", "web"));
    server.apply_service(svc("default", "db", "db"));
    server.apply_service(svc("other", "web", "web"));
    let unlabelled = svc_testkit::service("default", "plain").build();
    server.apply_service(unlabelled);

    let cases = [
        ("app=web", vec!["web"]),
        ("app!=web", vec!["db", "plain"]),
        ("app in (web,db)", vec!["db", "web"]),
        ("app notin (web)", vec!["db", "plain"]),
        ("app", vec!["db", "web"]),
        ("!app", vec!["plain"]),
        ("app=web,app!=db", vec!["web"]),
    ];
    for (selector, want) in cases {
        let list = api
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        assert_eq!(names(&list), want, "selector {selector:?}");
        assert_eq!(list.metadata.remaining_item_count, None);
    }

    let all: Api<Service> = Api::all(server.client());
    let list = all
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    let namespaces: Vec<_> = list
        .items
        .iter()
        .map(|s| s.metadata.namespace.clone().unwrap())
        .collect();
    assert_eq!(namespaces, ["default", "other"]);
    let by_field = all
        .list(&ListParams::default().fields("metadata.namespace=other"))
        .await
        .unwrap();
    assert_eq!(by_field.items.len(), 1);

    let bad = api
        .list(&ListParams::default().labels("app in web"))
        .await
        .unwrap_err();
    assert_eq!(api_code(bad), 400);
}

#[tokio::test]
async fn serves_endpoint_slices_and_metadata() {
    let (server, _) = setup().await;
    let rv = server.apply_slice(
        endpoint_slice("default", "web-1", "web")
            .port(Some("http"), 8080)
            .endpoint(EndpointSpec::new("127.0.0.11"))
            .build(),
    );
    let slices: Api<EndpointSlice> = Api::all(server.client());
    let list = slices
        .list(&ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}=web")))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    let meta = &list.items[0].metadata;
    assert_eq!(meta.resource_version, Some(rv.to_string()));
    assert!(meta.uid.as_deref().is_some_and(|u| !u.is_empty()));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(list.items[0].endpoints[0].addresses, ["127.0.0.11"]);
    assert_eq!(server.list_count(Kind::EndpointSlice), 1);
}

#[tokio::test]
async fn get_create_replace_delete() {
    let (server, api) = setup().await;
    assert_eq!(api_code(api.get("web").await.unwrap_err()), 404);

    let created = api
        .create(&PostParams::default(), &svc("default", "web", "web"))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.clone().unwrap();
    assert_eq!(rv, server.resource_version().to_string());
    assert_eq!(
        api_code(
            api.create(&PostParams::default(), &created)
                .await
                .unwrap_err()
        ),
        409
    );

    let fetched = api.get("web").await.unwrap();
    assert_eq!(fetched.metadata.uid, created.metadata.uid);
    assert!(server.get::<Service>("default", "web").is_some());

    let mut changed = fetched.clone();
    changed
        .metadata
        .labels
        .get_or_insert_default()
        .insert("v".into(), "2".into());
    let replaced = api
        .replace("web", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version,
        fetched.metadata.resource_version
    );
    // A stale resourceVersion conflicts.
    assert_eq!(
        api_code(
            api.replace("web", &PostParams::default(), &changed)
                .await
                .unwrap_err()
        ),
        409
    );

    api.delete("web", &DeleteParams::default()).await.unwrap();
    assert!(server.get::<Service>("default", "web").is_none());
    assert_eq!(
        api_code(
            api.delete("web", &DeleteParams::default())
                .await
                .unwrap_err()
        ),
        404
    );
}

#[tokio::test]
async fn answers_version_discovery() {
    let (server, _) = setup().await;
    let info = server.client().apiserver_version().await.unwrap();
    assert_eq!(info.major, "1");
    let groups = server.client().list_api_groups().await.unwrap();
    assert_eq!(groups.groups[0].name, "discovery.k8s.io");
}
