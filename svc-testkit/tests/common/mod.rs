//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::core::WatchEvent;
use kube::Api;
use svc_testkit::{service, FakeApiServer};

/// Generous bound for anything that should happen "now".
pub const WAIT: Duration = Duration::from_secs(5);

/// Runs `fut` with the [`WAIT`] timeout.
pub async fn within<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(WAIT, fut).await.expect("timed out")
}

/// A labelled Service in `ns`.
pub fn svc(ns: &str, name: &str, app: &str) -> Service {
    service(ns, name)
        .label("app", app)
        .cluster_ip("10.0.0.1")
        .port("http", 80, 8080)
        .build()
}

/// A started server and a namespaced `Api<Service>` for `default`.
pub async fn setup() -> (FakeApiServer, Api<Service>) {
    let server = FakeApiServer::start().await;
    let api = Api::default_namespaced(server.client());
    (server, api)
}

/// The next event that is not a bookmark.
pub async fn next_change<S>(stream: &mut S) -> WatchEvent<Service>
where
    S: Stream<Item = kube::Result<WatchEvent<Service>>> + Unpin,
{
    loop {
        match within(stream.next()).await {
            Some(Ok(WatchEvent::Bookmark(_))) => continue,
            Some(Ok(event)) => return event,
            other => panic!("unexpected watch item: {other:?}"),
        }
    }
}

/// `(type, name, resourceVersion)` of a watch event.
pub fn summary(event: &WatchEvent<Service>) -> (&'static str, String, String) {
    let (t, obj) = match event {
        WatchEvent::Added(o) => ("ADDED", o),
        WatchEvent::Modified(o) => ("MODIFIED", o),
        WatchEvent::Deleted(o) => ("DELETED", o),
        other => panic!("not an object event: {other:?}"),
    };
    let meta = &obj.metadata;
    (
        t,
        meta.name.clone().unwrap_or_default(),
        meta.resource_version.clone().unwrap_or_default(),
    )
}
