//! HTTP-level tests of scoped discovery, several sources on one store and typed source
//! errors: the kube source runs a real `kube::Client` against svc-testkit's fake API server.

mod common;

use std::time::Duration;

use k8s_openapi::api::rbac::v1::Role;
use svc_core::source::kube::{feed, run, Config, Error as KubeError, OnDemand, Scope};
use svc_core::source::manifests;
use svc_core::store::{NotSynced, Origin};
use svc_core::{ServiceKey, Store, StoreConfig};
use svc_testkit::{endpoint_slice, service, EndpointSpec, FakeApiServer, Rbac};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use common::{eventually, PATIENCE};

struct Harness {
    store: Store,
    tx: mpsc::Sender<svc_core::store::Event>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn start_with(server: &FakeApiServer, config: Config, store_config: StoreConfig) -> Harness {
    let (store, writer) = svc_core::store::store(store_config);
    let (tx, rx) = mpsc::channel(1024);
    let tasks = vec![
        tokio::spawn(writer.run(rx)),
        tokio::spawn(run(server.client(), config, store.clone(), tx.clone())),
    ];
    Harness { store, tx, tasks }
}

fn start(server: &FakeApiServer, config: Config) -> Harness {
    start_with(server, config, StoreConfig::default())
}

fn on_demand(idle: Duration) -> Config {
    scoped(Scope::OnDemand(OnDemand::default().idle_timeout(idle)))
}

fn scoped(scope: Scope) -> Config {
    Config::default().scope(scope)
}

/// `n` Services `svc-<i>` in `ns`, each with one ready endpoint.
fn populate(server: &FakeApiServer, ns: &str, n: usize) {
    for i in 0..n {
        let name = format!("svc-{i}");
        server.apply_service(
            service(ns, &name)
                .cluster_ip(&format!("10.96.{}.{}", i / 250, i % 250 + 1))
                .port("http", 80, 8080)
                .build(),
        );
        server.apply_slice(
            endpoint_slice(ns, &format!("{name}-a"), &name)
                .port(Some("http"), 8080)
                .endpoint(EndpointSpec::new(&format!(
                    "10.1.{}.{}",
                    i / 250,
                    i % 250 + 1
                )))
                .build(),
        );
    }
}

fn endpoint_count(store: &Store, host: &str) -> Option<usize> {
    store
        .resolve_name(host)
        .map(|s| s.ports.iter().map(|p| p.endpoints.len()).sum())
}

#[tokio::test]
async fn on_demand_watches_only_resolved_names_and_stops_when_idle() {
    let server = FakeApiServer::start().await;
    populate(&server, "shop", 40);
    let h = start(&server, on_demand(Duration::from_millis(300)));
    tokio::time::timeout(PATIENCE, h.store.wait_until_ready())
        .await
        .expect("an on-demand store is synced once its source runs");
    assert_eq!(h.store.len(), 0, "nothing is listed before a name is used");
    assert_eq!(server.open_watches(), 0);

    h.store
        .ready_for("svc-7.shop", PATIENCE)
        .await
        .expect("first resolution");
    // First try, right after the wait: the name's initial lists are applied.
    assert_eq!(endpoint_count(&h.store, "svc-7.shop"), Some(1));
    assert_eq!(h.store.len(), 1, "only the resolved Service is held");
    // Its two watches (Services by name, slices by label) are up.
    server.wait_for_open_watches(2).await;

    // Held by a subscriber (an endpoint pool): not idle, however long nobody resolves it.
    let follower = h.store.watch_service(&ServiceKey::new("shop", "svc-7"));
    h.store
        .ready_for("svc-9.shop.svc.cluster.local", PATIENCE)
        .await
        .expect("second name");
    assert_eq!(endpoint_count(&h.store, "svc-9.shop"), Some(1));
    assert_eq!(h.store.len(), 2);

    // svc-9 goes idle: its watches stop and its objects go; svc-7 stays.
    eventually("svc-9 released", || async {
        h.store.resolve_name("svc-9.shop").is_none()
    })
    .await;
    eventually("svc-9's watches closed", || async {
        server.open_watches() == 2
    })
    .await;
    assert!(h.store.resolve_name("svc-7.shop").is_some());

    // Changes to a watched name arrive; a used-again name is watched again from scratch.
    server.apply_slice(
        endpoint_slice("shop", "svc-7-b", "svc-7")
            .port(Some("http"), 8080)
            .endpoint(EndpointSpec::new("10.2.0.1"))
            .build(),
    );
    eventually("svc-7 change", || async {
        endpoint_count(&h.store, "svc-7.shop") == Some(2)
    })
    .await;
    h.store
        .ready_for("svc-9.shop", PATIENCE)
        .await
        .expect("resolved again");
    assert_eq!(endpoint_count(&h.store, "svc-9.shop"), Some(1));

    // A name that does not exist is ready (listed, empty) and absent.
    h.store
        .ready_for("nope.shop", PATIENCE)
        .await
        .expect("an empty list is an answer");
    assert!(h.store.resolve_name("nope.shop").is_none());
    drop(follower);
}

fn app_role() -> Role {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/app-rbac.yaml"
    ))
    .expect("deploy/app-rbac.yaml");
    let role = serde_yaml::Deserializer::from_str(&yaml)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("yaml"))
        .find(|v| v.get("kind").and_then(|k| k.as_str()) == Some("Role"))
        .map(|v| serde_yaml::from_value(v).expect("a Role"))
        .expect("a Role in deploy/app-rbac.yaml");
    role
}

use serde::Deserialize;

fn forbidden(error: &NotSynced) -> (&'static str, &'static str, Option<String>) {
    let source = error
        .source_error()
        .expect("the source's error, not a timeout");
    assert!(source.is_permanent(), "403 is permanent: {source}");
    match source.error().downcast_ref::<KubeError>() {
        Some(KubeError::Forbidden {
            verb,
            resource,
            namespace,
            ..
        }) => (verb, resource, namespace.clone()),
        other => panic!("expected Forbidden, got {other:?}"),
    }
}

#[tokio::test]
async fn namespaced_role_from_deploy_is_enough_for_on_demand_and_namespaces() {
    let server = FakeApiServer::start().await;
    populate(&server, "shop", 3);
    populate(&server, "other", 3);
    server.set_rbac(Some(
        Rbac::new("system:serviceaccount:shop:app").bind_role(&app_role()),
    ));

    // On demand: names in the Role's namespace resolve; another namespace fails with a 403
    // that names the missing verb, within the wait.
    let h = start(&server, on_demand(Duration::from_secs(300)));
    h.store
        .ready_for("svc-1.shop", PATIENCE)
        .await
        .expect("allowed by the Role");
    assert_eq!(endpoint_count(&h.store, "svc-1.shop"), Some(1));
    let denied = h
        .store
        .ready_for("svc-1.other", PATIENCE)
        .await
        .expect_err("not allowed in namespace other");
    assert_eq!(
        forbidden(&denied),
        ("list", "services", Some("other".into()))
    );
    assert!(h.store.resolve_name("svc-1.other").is_none());
    drop(h);

    // Namespaces scope with the same Role.
    let h = start(&server, scoped(Scope::Namespaces(vec!["shop".into()])));
    tokio::time::timeout(PATIENCE, h.store.wait_until_ready())
        .await
        .expect("namespace scope syncs with a Role");
    assert_eq!(h.store.len(), 3);
    drop(h);

    // The cluster scope needs a ClusterRole: the Role is not enough, and the wait says why.
    let h = start(&server, Config::default());
    let denied = h
        .store
        .ready_for("svc-1.shop.svc.cluster.local", PATIENCE)
        .await
        .expect_err("a Role does not grant a cluster-wide list");
    let (verb, _resource, namespace) = forbidden(&denied);
    assert_eq!((verb, namespace), ("list", None));
    assert!(!h.store.is_synced());
}

#[tokio::test]
async fn permanent_errors_fail_the_wait_and_transient_ones_back_off() {
    let server = FakeApiServer::start().await;
    populate(&server, "shop", 2);
    // No grants at all: every list is 403.
    server.set_rbac(Some(Rbac::new("nobody")));
    let h = start(&server, Config::default());
    let denied = h
        .store
        .ready_for("svc-0.shop", PATIENCE)
        .await
        .expect_err("403");
    let (verb, _, namespace) = forbidden(&denied);
    assert_eq!((verb, namespace), ("list", None));
    assert!(h.store.source_error().is_some_and(|e| e.is_permanent()));
    // Once RBAC is granted, the source (still retrying) syncs.
    server.set_rbac(None);
    tokio::time::timeout(PATIENCE, h.store.wait_until_ready())
        .await
        .expect("synced once allowed");
    assert!(h.store.source_error().is_none());
    drop(h);

    // 500s are transient: reported as such, retried until the list succeeds.
    server.fail_next(2, 500);
    let h = start_with(
        &server,
        Config::default(),
        StoreConfig::default().error_grace(Duration::ZERO),
    );
    let failed = h
        .store
        .ready_for("svc-0.shop", PATIENCE)
        .await
        .expect_err("the first list fails");
    let source = failed.source_error().expect("a source error");
    assert!(!source.is_permanent());
    assert!(matches!(
        source.error().downcast_ref::<KubeError>(),
        Some(KubeError::Transient { .. })
    ));
    tokio::time::timeout(PATIENCE, h.store.wait_until_ready())
        .await
        .expect("synced after backing off");
    assert_eq!(endpoint_count(&h.store, "svc-0.shop"), Some(1));
}

const EXTRA: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: extra, namespace: shop}
spec: {clusterIP: 10.97.0.1, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: extra-1, namespace: shop, labels: {kubernetes.io/service-name: extra}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.3.0.1], conditions: {ready: true}}]
"#;

#[tokio::test]
async fn api_and_manifests_dir_share_one_store() {
    let server = FakeApiServer::start().await;
    populate(&server, "shop", 2);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("extra.yaml"), EXTRA).unwrap();

    let h = start(&server, Config::default());
    let tx = h.tx.clone();
    let path = dir.path().to_path_buf();
    let manifests = tokio::spawn(async move {
        let options = manifests::Options::default().interval(Duration::from_millis(50));
        manifests::run_with(path, options, tx).await
    });
    tokio::time::timeout(PATIENCE, h.store.wait_until_ready())
        .await
        .expect("synced");
    eventually("both sources applied", || async {
        h.store.len() == 3 && endpoint_count(&h.store, "extra.shop") == Some(1)
    })
    .await;

    // A relist of the API (watch resumed past a compaction: 410 Gone) keeps the manifests'
    // Service.
    let relists = h.store.freshness().services.stats().relists;
    server.apply_service(
        service("shop", "svc-0")
            .cluster_ip("10.96.0.1")
            .port("http", 81, 8080)
            .build(),
    );
    server.compact();
    server.drop_watches();
    eventually("relisted", || async {
        h.store.freshness().services.stats().relists > relists
            && h.store.freshness().slices.stats().relists > relists
    })
    .await;
    eventually("the API's change applied", || async {
        h.store
            .resolve_name("svc-0.shop")
            .is_some_and(|s| s.ports[0].port.port == 81)
    })
    .await;
    assert_eq!(endpoint_count(&h.store, "extra.shop"), Some(1));
    assert_eq!(h.store.len(), 3);

    // A full replace from the manifests (the file changed) keeps the API's Services.
    std::fs::write(
        dir.path().join("extra.yaml"),
        EXTRA.replace("10.3.0.1", "10.3.0.2"),
    )
    .unwrap();
    eventually("manifests reloaded", || async {
        h.store.resolve_name("extra.shop").is_some_and(|s| {
            s.ports[0]
                .endpoints
                .first()
                .is_some_and(|e| e.addr.ip().to_string() == "10.3.0.2")
        })
    })
    .await;
    assert_eq!(endpoint_count(&h.store, "svc-0.shop"), Some(1));
    assert_eq!(endpoint_count(&h.store, "svc-1.shop"), Some(1));
    manifests.abort();
}

#[tokio::test]
async fn feeds_from_an_existing_kube_watcher() {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::runtime::watcher;

    let server = FakeApiServer::start().await;
    populate(&server, "shop", 2);
    let (store, writer) = svc_core::store::store(StoreConfig::default());
    let (tx, rx) = mpsc::channel(64);
    let origin = Origin::new("app-watcher");
    let services = watcher(
        kube::Api::<Service>::all(server.client()),
        watcher::Config::default(),
    );
    let slices = watcher(
        kube::Api::<EndpointSlice>::all(server.client()),
        watcher::Config::default(),
    );
    let tasks = [
        tokio::spawn(writer.run(rx)),
        tokio::spawn(feed::services(services, origin.clone(), tx.clone())),
        tokio::spawn(feed::endpoint_slices(slices, origin, tx)),
    ];
    tokio::time::timeout(PATIENCE, store.wait_until_ready())
        .await
        .expect("the watcher's initial lists sync the store");
    assert_eq!(store.len(), 2);
    assert_eq!(endpoint_count(&store, "svc-1.shop"), Some(1));
    server.delete_slice("shop", "svc-1-a");
    eventually("the watcher's delete applied", || async {
        endpoint_count(&store, "svc-1.shop") == Some(0)
    })
    .await;
    for t in tasks {
        t.abort();
    }
}
