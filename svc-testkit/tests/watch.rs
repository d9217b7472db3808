//! Watch semantics through a real `kube::Client`.

mod common;

use std::time::Duration;

use common::{next_change, setup, summary, svc, within};
use futures::StreamExt;
use kube::api::WatchParams;
use kube::core::WatchEvent;
use svc_testkit::Kind;

#[tokio::test]
async fn replays_history_after_the_given_version_then_streams_live() {
    let (server, api) = setup().await;
    let rv1 = server.apply_service(svc("default", "a", "web"));
    let rv2 = server.apply_service(svc("default", "b", "web"));
    let rv3 = server.apply_service(svc("default", "a", "web"));
    server.apply_service(svc("elsewhere", "x", "web"));

    let mut stream = api
        .watch(&WatchParams::default(), &rv1.to_string())
        .await
        .unwrap()
        .boxed();
    assert_eq!(
        summary(&next_change(&mut stream).await),
        ("ADDED", "b".into(), rv2.to_string())
    );
    assert_eq!(
        summary(&next_change(&mut stream).await),
        ("MODIFIED", "a".into(), rv3.to_string())
    );

    let rv5 = server.delete_service("default", "b").unwrap();
    assert_eq!(
        summary(&next_change(&mut stream).await),
        ("DELETED", "b".into(), rv5.to_string())
    );
    assert_eq!(server.watch_count(Kind::Service), 1);
    assert_eq!(server.open_watches(), 1);
}

#[tokio::test]
async fn watch_from_zero_sends_the_current_state_first() {
    let (server, api) = setup().await;
    server.apply_service(svc("default", "a", "web"));
    server.apply_service(svc("default", "a", "web"));
    let mut stream = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let (t, name, _) = summary(&next_change(&mut stream).await);
    assert_eq!((t, name.as_str()), ("ADDED", "a"));
}

#[tokio::test]
async fn compacted_version_gets_a_410_error_event() {
    let (server, api) = setup().await;
    let old = server.apply_service(svc("default", "a", "web"));
    server.apply_service(svc("default", "b", "web"));
    server.compact();
    let mut stream = api
        .watch(&WatchParams::default(), &old.to_string())
        .await
        .unwrap()
        .boxed();
    match within(stream.next()).await {
        Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected a 410 error event, got {other:?}"),
    }
    assert!(
        within(stream.next()).await.is_none(),
        "the stream ends after the error"
    );
    // The current version itself is still watchable.
    let current = server.resource_version().to_string();
    let mut ok = api
        .watch(&WatchParams::default(), &current)
        .await
        .unwrap()
        .boxed();
    server.apply_service(svc("default", "c", "web"));
    assert_eq!(summary(&next_change(&mut ok).await).0, "ADDED");
}

#[tokio::test]
async fn bookmarks_arrive_periodically_and_on_demand() {
    let (server, api) = setup().await;
    server.set_bookmark_interval(None);
    let rv = server.apply_service(svc("default", "a", "web")).to_string();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    within(server.wait_for_open_watches(1)).await;
    let later = server
        .apply_service(svc("elsewhere", "x", "web"))
        .to_string();
    server.send_bookmark_now();
    match within(stream.next()).await {
        Some(Ok(WatchEvent::Bookmark(b))) => assert_eq!(b.metadata.resource_version, later),
        other => panic!("expected a bookmark, got {other:?}"),
    }
    server.set_bookmark_interval(Some(Duration::from_millis(50)));
    for _ in 0..2 {
        assert!(matches!(
            within(stream.next()).await,
            Some(Ok(WatchEvent::Bookmark(_)))
        ));
    }
    // Watches without bookmarks get none.
    let mut quiet = api
        .watch(&WatchParams::default().disable_bookmarks(), &rv)
        .await
        .unwrap()
        .boxed();
    let waited = tokio::time::timeout(Duration::from_millis(300), quiet.next()).await;
    assert!(waited.is_err(), "got {waited:?}");
}

#[tokio::test]
async fn label_selector_turns_transitions_into_added_and_deleted() {
    let (server, api) = setup().await;
    let rv = server.resource_version().to_string();
    let mut stream = api
        .watch(&WatchParams::default().labels("app=web"), &rv)
        .await
        .unwrap()
        .boxed();
    server.apply_service(svc("default", "a", "db"));
    server.apply_service(svc("default", "a", "web"));
    server.apply_service(svc("default", "a", "web"));
    let left = server.apply_service(svc("default", "a", "db"));
    assert_eq!(summary(&next_change(&mut stream).await).0, "ADDED");
    assert_eq!(summary(&next_change(&mut stream).await).0, "MODIFIED");
    let deleted = next_change(&mut stream).await;
    assert_eq!(summary(&deleted), ("DELETED", "a".into(), left.to_string()));
}

#[tokio::test]
async fn streaming_list_sends_initial_events_then_a_marked_bookmark() {
    let (server, api) = setup().await;
    server.set_bookmark_interval(None);
    server.apply_service(svc("default", "b", "web"));
    server.apply_service(svc("default", "a", "web"));
    let rv = server.resource_version().to_string();
    let mut stream = api
        .watch(&WatchParams::streaming_lists(), "0")
        .await
        .unwrap()
        .boxed();
    assert_eq!(summary(&next_change(&mut stream).await).1, "a");
    assert_eq!(summary(&next_change(&mut stream).await).1, "b");
    match within(stream.next()).await {
        Some(Ok(WatchEvent::Bookmark(b))) => {
            assert_eq!(b.metadata.resource_version, rv);
            assert_eq!(
                b.metadata
                    .annotations
                    .get("k8s.io/initial-events-end")
                    .map(String::as_str),
                Some("true")
            );
        }
        other => panic!("expected the initial-events-end bookmark, got {other:?}"),
    }
    server.apply_service(svc("default", "c", "web"));
    assert_eq!(
        summary(&next_change(&mut stream).await),
        ("ADDED", "c".into(), server.resource_version().to_string())
    );
}

#[tokio::test]
async fn timeout_seconds_ends_the_stream_cleanly() {
    let (server, api) = setup().await;
    server.set_bookmark_interval(None);
    let rv = server.resource_version().to_string();
    let started = tokio::time::Instant::now();
    let mut stream = api
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap()
        .boxed();
    assert!(within(stream.next()).await.is_none());
    assert!(started.elapsed() >= Duration::from_millis(900));
    within(server.wait_for_open_watches(0)).await;
}

#[tokio::test]
async fn rejects_invalid_watch_parameters() {
    let (server, api) = setup().await;
    let rv = server.resource_version().to_string();
    match api
        .watch(&WatchParams::default().labels("a in b"), &rv)
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 400),
        Ok(_) => panic!("expected 400"),
        Err(other) => panic!("expected 400, got {other:?}"),
    }
}
