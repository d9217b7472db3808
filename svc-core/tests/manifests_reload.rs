//! The manifests source follows edits to a file and a directory, and ignores bad edits.

use std::path::Path;
use std::time::Duration;

use svc_core::source::manifests;
use svc_core::store::Writer;
use svc_core::{Store, StoreConfig};
use tokio::sync::mpsc;

const PATIENCE: Duration = Duration::from_secs(20);

fn manifest(ip: &str, endpoint: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec: {{clusterIP: {ip}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints: [{{addresses: [{endpoint}]}}]
"#
    )
}

fn start(path: &Path) -> (Store, tokio::task::JoinHandle<()>) {
    let (writer, store) = Writer::new(StoreConfig::default());
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(writer.run(rx));
    let path = path.to_path_buf();
    let task = tokio::spawn(async move {
        manifests::run(path, Duration::from_millis(20), tx)
            .await
            .unwrap();
    });
    (store, task)
}

async fn endpoint_is(store: &Store, want: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let got = store
            .resolve_name("web.shop")
            .and_then(|s| s.ports[0].endpoints.first().map(|e| e.addr.to_string()));
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "wanted {want}, have {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn file_reload_and_bad_edits() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("svc.yaml");
    std::fs::write(&file, manifest("127.0.0.77", "127.0.0.11")).unwrap();
    let (store, task) = start(&file);
    tokio::time::timeout(PATIENCE, store.wait_synced())
        .await
        .unwrap();
    endpoint_is(&store, "127.0.0.11:8080").await;

    std::fs::write(&file, manifest("127.0.0.77", "127.0.0.12")).unwrap();
    endpoint_is(&store, "127.0.0.12:8080").await;

    // Broken YAML: the whole edit is ignored.
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata: {name: [oops\n",
    )
    .unwrap();
    // Valid YAML but an invalid object: that object keeps its last good version.
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::write(&file, manifest("127.0.0.77", "999.0.0.1")).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    endpoint_is(&store, "127.0.0.12:8080").await;
    assert!(
        !task.is_finished(),
        "the source keeps running after bad edits"
    );

    std::fs::write(&file, manifest("127.0.0.77", "127.0.0.13")).unwrap();
    endpoint_is(&store, "127.0.0.13:8080").await;
    task.abort();
}

#[tokio::test]
async fn directory_of_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let text = manifest("127.0.0.77", "127.0.0.11");
    let (svc, slice) = text.split_once("---\n").unwrap();
    std::fs::write(dir.path().join("a-service.yaml"), svc).unwrap();
    std::fs::write(dir.path().join("b-slice.yml"), slice).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
    let (store, task) = start(dir.path());
    tokio::time::timeout(PATIENCE, store.wait_synced())
        .await
        .unwrap();
    endpoint_is(&store, "127.0.0.11:8080").await;
    std::fs::remove_file(dir.path().join("b-slice.yml")).unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !store.resolve_name("web.shop").unwrap().ports[0]
        .endpoints
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "removed file's slice still applied"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort();
}

#[tokio::test]
async fn first_load_errors_are_reported() {
    let (tx, _rx) = mpsc::channel(1);
    let err = manifests::run("/nonexistent/svc.yaml".into(), Duration::from_secs(1), tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/svc.yaml"), "{err}");
    let err = manifests::parse_str("kind: [").unwrap_err();
    assert!(
        matches!(err, manifests::Error::Parse { document: 1, .. }),
        "{err}"
    );
}
