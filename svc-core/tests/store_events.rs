//! Event-level tests: events go straight into the Writer.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use svc_core::source::manifests;
use svc_core::store::{Event, PortRef, Update, VipKind};
use svc_core::{ServiceKey, StoreConfig};

fn load(yaml: &str) -> [Event; 2] {
    manifests::parse_str(yaml).unwrap().into_events()
}

const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: NodePort
  clusterIPs: [127.0.0.77, "::1"]
  externalIPs: [127.0.0.78]
  ports:
  - {name: http, port: 80, targetPort: web, nodePort: 30080}
  - {name: dns, port: 53, protocol: UDP}
"#;

fn slice(name: &str, port: u16, ips: &[&str], ready: bool) -> String {
    let eps: Vec<String> = ips
        .iter()
        .map(|ip| format!("{{addresses: [\"{ip}\"], conditions: {{ready: {ready}}}}}"))
        .collect();
    format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}, {{name: dns, port: 53, protocol: UDP}}]\nendpoints: [{}]\n",
        eps.join(", ")
    )
}

fn addrs(store: &svc_core::Store) -> Vec<String> {
    store.get(&ServiceKey::new("shop", "web")).unwrap().ports[0]
        .endpoints
        .iter()
        .map(|e| e.addr.to_string())
        .collect()
}

#[test]
fn three_slices_with_a_named_target_port_that_differs_per_slice() {
    let (store, mut w) = svc_core::store::store(StoreConfig::default());
    let yaml = format!(
        "{WEB}{}{}{}",
        slice("web-a", 8080, &["10.0.0.1", "10.0.0.2"], true),
        slice("web-b", 9090, &["10.0.0.3"], true),
        // A copy of 10.0.0.1:8080 in a later slice, not ready: the first slice's copy wins.
        slice("web-c", 8080, &["10.0.0.1", "10.0.0.4"], false),
    );
    for e in load(&yaml) {
        w.apply(e);
    }
    assert_eq!(
        addrs(&store),
        [
            "10.0.0.1:8080",
            "10.0.0.2:8080",
            "10.0.0.3:9090",
            "10.0.0.4:8080"
        ]
    );
    let web = store.get(&ServiceKey::new("shop", "web")).unwrap();
    let first = web.ports[0]
        .endpoint("10.0.0.1:8080".parse().unwrap())
        .unwrap();
    assert!(
        first.endpoint.conditions.ready,
        "web-a's copy (first by slice name) wins"
    );
    assert_eq!(
        web.ports[1].endpoints.len(),
        4,
        "the UDP port has its own endpoint set"
    );
    assert_eq!(web.endpoints.len(), 4, "DNS endpoints are unique per IP");
}

#[test]
fn lookups_by_name_vip_and_node_port() {
    let config = StoreConfig::default()
        .cluster_domain("corp.local")
        .default_namespace("shop");
    let (store, mut w) = svc_core::store::store(config);
    for e in load(&format!(
        "{WEB}{}",
        slice("web-a", 8080, &["10.0.0.1"], true)
    )) {
        w.apply(e);
    }
    for host in [
        "web",
        "web.shop",
        "web.shop.svc",
        "web.shop.svc.corp.local",
        "WEB.Shop.svc.corp.local.",
    ] {
        assert!(store.resolve_name(host).is_some(), "{host}");
    }
    assert!(
        store.resolve_name("web.shop.svc.cluster.local").is_none(),
        "other domain"
    );
    assert!(store.resolve_name("web.other").is_none());
    let tcp = svc_core::model::Protocol::Tcp;
    let udp = svc_core::model::Protocol::Udp;
    let m = store
        .lookup_vip("127.0.0.77".parse().unwrap(), 80, tcp)
        .unwrap();
    assert_eq!((m.port, m.kind), (0, VipKind::ClusterIp));
    assert_eq!(
        m.port().endpoints[0].addr,
        "10.0.0.1:8080".parse::<SocketAddr>().unwrap()
    );
    assert!(
        store.lookup_vip("::1".parse().unwrap(), 80, tcp).is_some(),
        "second cluster IP"
    );
    assert_eq!(
        store
            .lookup_vip("127.0.0.77".parse().unwrap(), 53, udp)
            .unwrap()
            .port,
        1
    );
    assert!(
        store
            .lookup_vip("127.0.0.77".parse().unwrap(), 53, tcp)
            .is_none(),
        "protocol matters"
    );
    assert_eq!(
        store
            .lookup_vip("127.0.0.78".parse().unwrap(), 80, tcp)
            .unwrap()
            .kind,
        VipKind::ExternalIp
    );
    assert_eq!(
        store.lookup_node_port(30080, tcp).unwrap().kind,
        VipKind::NodePort
    );
    w.apply(Event::DeleteService(ServiceKey::new("shop", "web")));
    assert!(store
        .lookup_vip("127.0.0.77".parse().unwrap(), 80, tcp)
        .is_none());
    assert!(store.lookup_node_port(30080, tcp).is_none());
    assert!(store.resolve_name("web").is_none());
}

#[test]
fn slices_before_their_service_are_staged() {
    let (store, mut w) = svc_core::store::store(StoreConfig::default());
    let parsed = manifests::parse_str(&format!(
        "{WEB}{}",
        slice("web-a", 8080, &["10.0.0.1"], true)
    ))
    .unwrap();
    for s in parsed.slices {
        w.apply(Event::ApplySlice(s));
    }
    assert!(store.is_empty());
    for s in parsed.services {
        w.apply(Event::ApplyService(s));
    }
    assert_eq!(addrs(&store), ["10.0.0.1:8080"]);
}

#[test]
fn invalid_objects_keep_their_last_good_version() {
    let (store, mut w) = svc_core::store::store(StoreConfig::default());
    for e in load(&format!(
        "{WEB}{}",
        slice("web-a", 8080, &["10.0.0.1"], true)
    )) {
        w.apply(e);
    }
    let broken = format!(
        "{}{}",
        WEB.replace("127.0.0.77", "127.0.0.777"),
        slice("web-a", 8080, &["10.0.0.999"], true)
    );
    let parsed = manifests::parse_str(&broken).unwrap();
    assert!(parsed.services.is_empty() && parsed.slices.is_empty());
    assert_eq!(parsed.bad_services, [ServiceKey::new("shop", "web")]);
    for e in parsed.into_events() {
        w.apply(e);
    }
    assert_eq!(addrs(&store), ["10.0.0.1:8080"], "last good state kept");
}

#[tokio::test]
async fn subscribers_get_reset_then_diffs_and_coalesce() {
    let (store, mut w) = svc_core::store::store(StoreConfig::default());
    let key = ServiceKey::new("shop", "web");
    let mut sub = store.subscribe(&key, PortRef::Name(Some("http".into())));
    assert_eq!(sub.next().await, Some(Update::DoesNotExist));
    for e in load(&format!(
        "{WEB}{}",
        slice("web-a", 8080, &["10.0.0.1", "10.0.0.2"], true)
    )) {
        w.apply(e);
    }
    match sub.next().await {
        Some(Update::Reset(eps)) => assert_eq!(eps.len(), 2),
        other => panic!("expected Reset, got {other:?}"),
    }
    // Three changes while the subscriber is not looking: it sees one diff to the latest.
    for ips in [
        &["10.0.0.1"][..],
        &["10.0.0.1", "10.0.0.3"],
        &["10.0.0.3", "10.0.0.4"],
    ] {
        for e in load(&format!("{WEB}{}", slice("web-a", 8080, ips, true))) {
            w.apply(e);
        }
    }
    assert_eq!(
        sub.next().await,
        Some(Update::Remove(vec![
            "10.0.0.1:8080".parse().unwrap(),
            "10.0.0.2:8080".parse().unwrap()
        ]))
    );
    match sub.next().await {
        Some(Update::Add(eps)) => assert_eq!(
            eps.iter().map(|e| e.addr.to_string()).collect::<Vec<_>>(),
            ["10.0.0.3:8080", "10.0.0.4:8080"]
        ),
        other => panic!("expected Add, got {other:?}"),
    }
    assert!(sub.next().now_or_never().is_none(), "nothing more pending");
    // A readiness flip is an Add of the same address with new conditions.
    for e in load(&format!(
        "{WEB}{}",
        slice("web-a", 8080, &["10.0.0.3", "10.0.0.4"], false)
    )) {
        w.apply(e);
    }
    match sub.next().await {
        Some(Update::Add(eps)) => {
            assert!(eps.iter().all(|e| !e.endpoint.conditions.ready) && eps.len() == 2)
        }
        other => panic!("expected Add, got {other:?}"),
    }
    w.apply(Event::DeleteService(key));
    assert_eq!(sub.next().await, Some(Update::DoesNotExist));
}

#[tokio::test]
async fn change_feed_and_sync() {
    let (store, mut w) = svc_core::store::store(StoreConfig::default());
    assert!(!store.is_synced());
    let waiter = tokio::spawn({
        let store = store.clone();
        async move { store.wait_until_ready().await }
    });
    let mut feed = store.changes();
    let [services, slices] = load(&format!(
        "{WEB}{}",
        slice("web-a", 8080, &["10.0.0.1"], true)
    ));
    w.apply(services);
    assert!(!store.is_synced(), "slices not listed yet");
    w.apply(slices);
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(store.is_synced());
    assert_eq!(feed.changed().await, [ServiceKey::new("shop", "web")]);
    // Coalescing: many changes to one Service are reported once.
    for ip in ["10.0.0.2", "10.0.0.3", "10.0.0.4"] {
        for e in load(&format!("{WEB}{}", slice("web-a", 8080, &[ip], true))) {
            w.apply(e);
        }
    }
    assert_eq!(feed.changed().await, [ServiceKey::new("shop", "web")]);
    assert!(feed.changed().now_or_never().is_none());
    // A feed made now starts with what exists.
    let mut late = store.changes();
    assert_eq!(late.changed().await, [ServiceKey::new("shop", "web")]);
}

#[test]
fn lag_counts_changes_not_relisted_copies() {
    let (store, mut w) = svc_core::store::store(StoreConfig::default());
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let annotated = slice("web-a", 8080, &["10.0.0.1"], true).replace(
        "labels: {kubernetes.io/service-name: web}}",
        &format!("labels: {{kubernetes.io/service-name: web}}, annotations: {{endpoints.kubernetes.io/last-change-trigger-time: \"{now}\"}}}}"),
    );
    let yaml = format!("{WEB}{annotated}");
    for e in load(&yaml) {
        w.apply(e);
    }
    assert_eq!(store.freshness().lag.snapshot().count(), 1);
    // The same objects again, as a relist delivers them: no new observation.
    for e in load(&yaml) {
        w.apply(e);
    }
    let parsed = manifests::parse_str(&yaml).unwrap();
    w.apply(Event::ApplySlice(parsed.slices[0].clone()));
    assert_eq!(store.freshness().lag.snapshot().count(), 1);
}

#[tokio::test]
async fn the_change_feed_is_a_stream() {
    let (store, mut w) = svc_core::store::store(StoreConfig::default());
    let mut changes = Box::pin(store.changes().into_stream());
    for e in load(&format!(
        "{WEB}{}",
        slice("web-a", 8080, &["10.0.0.1"], true)
    )) {
        w.apply(e);
    }
    let first = tokio::time::timeout(Duration::from_secs(5), changes.next()).await;
    assert_eq!(first.unwrap(), Some(vec![ServiceKey::new("shop", "web")]));
    // Nothing more until something changes.
    assert!(changes.next().now_or_never().is_none());
    w.apply(Event::DeleteService(ServiceKey::new("shop", "web")));
    let deleted = tokio::time::timeout(Duration::from_secs(5), changes.next()).await;
    assert_eq!(deleted.unwrap(), Some(vec![ServiceKey::new("shop", "web")]));
    assert!(store.get(&ServiceKey::new("shop", "web")).is_none());
}
