//! The manifests source follows edits to a file and a directory, and ignores bad edits.

use std::path::Path;
use std::time::Duration;

use svc_core::source::manifests;
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
    let (store, writer) = svc_core::store::store(StoreConfig::default());
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
    tokio::time::timeout(PATIENCE, store.wait_until_ready())
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
    tokio::time::timeout(PATIENCE, store.wait_until_ready())
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

/// A Service `name` in namespace `shop` on `ip`, with one slice of one endpoint.
fn named(name: &str, ip: &str, endpoint: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec: {{clusterIP: {ip}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: shop, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints: [{{addresses: [{endpoint}]}}]
"#
    )
}

fn start_with(
    path: &Path,
    interval: Duration,
) -> (
    Store,
    manifests::Status,
    svc_core::source::Reload,
    tokio::task::JoinHandle<()>,
) {
    let (store, writer) = svc_core::store::store(StoreConfig::default());
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(writer.run(rx));
    let options = manifests::Options::default().interval(interval);
    let (status, reload) = (options.status.clone(), options.reload.clone());
    let path = path.to_path_buf();
    let task = tokio::spawn(async move {
        manifests::run_with(path, options, tx).await.unwrap();
    });
    (store, status, reload, task)
}

/// Writes `text` to a hidden temporary file and renames it over `path`: the atomic write.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn endpoint_of(store: &Store, name: &str) -> Option<String> {
    store
        .resolve_name(&format!("{name}.shop"))
        .and_then(|s| s.ports[0].endpoints.first().map(|e| e.addr.to_string()))
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A marker file in the same directory: rewriting it and seeing its new endpoint proves that a
/// look at the whole directory happened after the rewrite.
async fn look_happened(store: &Store, dir: &Path, round: u8) {
    let endpoint = format!("127.0.1.{round}");
    replace(
        &dir.join("marker.yaml"),
        &named("marker", "127.0.0.99", &endpoint),
    );
    let want = format!("{endpoint}:8080");
    until("the marker edit is applied", || {
        endpoint_of(store, "marker").as_deref() == Some(want.as_str())
    })
    .await;
}

/// Item 8: a file whose writer has written half of it and keeps it open is not applied, however
/// long it waits (here: many polls), while the other files still reload; once the writer
/// finishes, the whole file is applied.
#[tokio::test]
async fn half_written_file_is_not_applied_while_its_writer_has_it_open() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apps.yaml");
    let whole = [
        named("a", "127.0.0.71", "127.0.0.11"),
        named("b", "127.0.0.72", "127.0.0.12"),
        named("c", "127.0.0.73", "127.0.0.13"),
    ]
    .join("---\n");
    std::fs::write(&file, &whole).unwrap();
    std::fs::write(
        dir.path().join("marker.yaml"),
        named("marker", "127.0.0.99", "127.0.1.0"),
    )
    .unwrap();
    let (store, task) = start(dir.path());
    tokio::time::timeout(PATIENCE, store.wait_until_ready())
        .await
        .unwrap();
    until("all three loaded", || store.services().len() == 4).await;

    // Rewrite in place, as `open(O_TRUNC)` + `write` does, and stop halfway: the half parses
    // (it is the first Service and its slice) and would drop b and c.
    let mut writer = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&file)
        .unwrap();
    let half = named("a", "127.0.0.71", "127.0.0.21");
    writer.write_all(half.as_bytes()).unwrap();
    writer.flush().unwrap();
    // The test's poll interval is 20 ms: wait for many polls, proven by edits of another file
    // being applied meanwhile.
    for round in 1..=5 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        look_happened(&store, dir.path(), round).await;
    }
    assert!(
        store.resolve_name("b.shop").is_some() && store.resolve_name("c.shop").is_some(),
        "a half-written file must not be applied while its writer has it open"
    );
    assert_eq!(endpoint_of(&store, "a").as_deref(), Some("127.0.0.11:8080"));

    let rest = [
        named("b", "127.0.0.72", "127.0.0.22"),
        named("c", "127.0.0.73", "127.0.0.23"),
    ]
    .join("---\n");
    writer.write_all(format!("---\n{rest}").as_bytes()).unwrap();
    drop(writer);
    until("the finished file is applied", || {
        endpoint_of(&store, "a").as_deref() == Some("127.0.0.21:8080")
            && endpoint_of(&store, "c").as_deref() == Some("127.0.0.23:8080")
    })
    .await;
    assert!(store.resolve_name("b.shop").is_some());
    task.abort();
}

/// Item 8: truncating a file to empty does not delete its Services at once; only a file that
/// stays empty for two polls is applied as empty.
#[tokio::test]
async fn truncated_file_keeps_its_services_until_it_stays_empty() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apps.yaml");
    std::fs::write(
        &file,
        [
            named("a", "127.0.0.71", "127.0.0.11"),
            named("b", "127.0.0.72", "127.0.0.12"),
        ]
        .join("---\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("marker.yaml"),
        named("marker", "127.0.0.99", "127.0.1.0"),
    )
    .unwrap();
    // Polls every 500 ms: the second look at the empty file is at least a second away.
    let (store, status, _reload, task) = start_with(dir.path(), Duration::from_millis(500));
    tokio::time::timeout(PATIENCE, store.wait_until_ready())
        .await
        .unwrap();
    assert_eq!(store.services().len(), 3);

    std::fs::write(&file, "").unwrap();
    // The look that applies the marker edit sees the empty file too.
    look_happened(&store, dir.path(), 1).await;
    assert!(
        store.resolve_name("a.shop").is_some() && store.resolve_name("b.shop").is_some(),
        "one look at an emptied file must not delete its Services"
    );
    assert_eq!(
        status.files()[&file].pending,
        Some("empty; applied only if it stays empty for two polls")
    );
    // It stays empty: then it means it.
    until("an file that stays empty is applied", || {
        store.resolve_name("a.shop").is_none() && store.resolve_name("b.shop").is_none()
    })
    .await;
    assert!(store.resolve_name("marker.shop").is_some());
    task.abort();
}

/// Item 9: one file that stops parsing keeps serving its last good version, the other files
/// (changed and new) still reload, and the status names the failing file until it is fixed.
#[tokio::test]
async fn one_bad_file_does_not_freeze_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a.yaml"),
        dir.path().join("b.yaml"),
        dir.path().join("c.yaml"),
    );
    std::fs::write(&a, named("a", "127.0.0.71", "127.0.0.11")).unwrap();
    std::fs::write(&b, named("b", "127.0.0.72", "127.0.0.12")).unwrap();
    let (store, status, _reload, task) = start_with(dir.path(), Duration::from_millis(20));
    tokio::time::timeout(PATIENCE, store.wait_until_ready())
        .await
        .unwrap();
    assert!(status.failing().is_empty());

    replace(
        &a,
        "apiVersion: v1\nkind: Service\nmetadata: {name: [oops\n",
    );
    replace(&b, &named("b", "127.0.0.72", "127.0.0.22"));
    replace(&c, &named("c", "127.0.0.73", "127.0.0.13"));
    until("the good files reload beside the bad one", || {
        endpoint_of(&store, "b").as_deref() == Some("127.0.0.22:8080")
            && endpoint_of(&store, "c").as_deref() == Some("127.0.0.13:8080")
    })
    .await;
    assert_eq!(
        endpoint_of(&store, "a").as_deref(),
        Some("127.0.0.11:8080"),
        "the bad file keeps its last good version"
    );
    until("the status names the bad file", || {
        status
            .failing()
            .iter()
            .any(|(p, e)| *p == a && e.contains("document 1"))
    })
    .await;
    assert_eq!(status.failing().len(), 1, "{:?}", status.failing());

    replace(&a, &named("a", "127.0.0.71", "127.0.0.21"));
    until("the fixed file is applied", || {
        endpoint_of(&store, "a").as_deref() == Some("127.0.0.21:8080")
    })
    .await;
    until("the status clears", || status.failing().is_empty()).await;
    task.abort();
}

/// Item 20: an unchanged file is not read again, only `stat`ed; a changed one is read once.
#[tokio::test]
async fn unchanged_files_are_not_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apps.yaml");
    std::fs::write(&file, named("a", "127.0.0.71", "127.0.0.11")).unwrap();
    let (store, status, _reload, task) = start_with(dir.path(), Duration::from_millis(20));
    tokio::time::timeout(PATIENCE, store.wait_until_ready())
        .await
        .unwrap();
    let (reads, polls) = (status.reads(), status.polls());
    assert_eq!(reads, 1);
    until("ten more polls", || status.polls() >= polls + 10).await;
    assert_eq!(status.reads(), reads, "an unchanged file is not read again");

    replace(&file, &named("a", "127.0.0.71", "127.0.0.12"));
    until("the edit is applied", || {
        endpoint_of(&store, "a").as_deref() == Some("127.0.0.12:8080")
    })
    .await;
    let polls = status.polls();
    until("ten more polls", || status.polls() >= polls + 10).await;
    assert_eq!(status.reads(), reads + 1, "a changed file is read once");
    task.abort();
}

/// Kubernetes updates a mounted ConfigMap by swapping the `..data` symlink to a new directory;
/// the files are symlinks through it. The swap is seen and applied.
#[tokio::test]
async fn configmap_symlink_swap_is_applied() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("..2026_01")).unwrap();
    std::fs::write(
        d.join("..2026_01/apps.yaml"),
        named("a", "127.0.0.71", "127.0.0.11"),
    )
    .unwrap();
    symlink("..2026_01", d.join("..data")).unwrap();
    symlink("..data/apps.yaml", d.join("apps.yaml")).unwrap();
    let (store, _status, _reload, task) = start_with(d, Duration::from_millis(20));
    tokio::time::timeout(PATIENCE, store.wait_until_ready())
        .await
        .unwrap();
    assert_eq!(endpoint_of(&store, "a").as_deref(), Some("127.0.0.11:8080"));

    std::fs::create_dir(d.join("..2026_02")).unwrap();
    std::fs::write(
        d.join("..2026_02/apps.yaml"),
        named("a", "127.0.0.71", "127.0.0.12"),
    )
    .unwrap();
    symlink("..2026_02", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    until("the swapped version is applied", || {
        endpoint_of(&store, "a").as_deref() == Some("127.0.0.12:8080")
    })
    .await;
    task.abort();
}

/// A reload (SIGHUP in the proxy) applies a changed file at once, even one its writer still
/// has open, which otherwise waits.
#[tokio::test]
async fn reload_applies_at_once() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apps.yaml");
    std::fs::write(&file, named("a", "127.0.0.71", "127.0.0.11")).unwrap();
    std::fs::write(
        dir.path().join("marker.yaml"),
        named("marker", "127.0.0.99", "127.0.1.0"),
    )
    .unwrap();
    let (store, _status, reload, task) = start_with(dir.path(), Duration::from_millis(20));
    tokio::time::timeout(PATIENCE, store.wait_until_ready())
        .await
        .unwrap();
    let mut writer = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&file)
        .unwrap();
    writer
        .write_all(named("a", "127.0.0.71", "127.0.0.12").as_bytes())
        .unwrap();
    writer.flush().unwrap();
    look_happened(&store, dir.path(), 1).await;
    assert_eq!(
        endpoint_of(&store, "a").as_deref(),
        Some("127.0.0.11:8080"),
        "held while its writer has it open"
    );
    reload.trigger();
    until("the reload applies it", || {
        endpoint_of(&store, "a").as_deref() == Some("127.0.0.12:8080")
    })
    .await;
    drop(writer);
    task.abort();
}
