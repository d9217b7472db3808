//! The lab: pods on loopback, svc-testkit's fake Kubernetes API server holding one Service per
//! scenario (so that each scenario starts with a fresh balancer), and, per path, the client
//! side: svc-proxy in-process, or a store fed by svc-core's Kubernetes source for svc-tower.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use svc_core::model::Protocol;
use svc_core::store::{PortRef, StoreConfig};
use svc_core::{ServiceKey, Store};
use svc_testkit::{endpoint_slice, service, EndpointSpec, FakeApiServer, PortSpec};
use svc_tower::balance::{EndpointPool, Pools};
use svc_tower::policy::Scope;

use super::Path;

/// The namespace of the lab's Services.
pub const NAMESPACE: &str = "spread";
/// The port the pods listen on.
pub const POD_PORT: u16 = 8080;

/// A pod: an HTTP server (svc-testkit's) or a gRPC server, whose answers can be delayed.
pub enum Pod {
    Http(svc_testkit::Backend),
    Grpc(crate::grpc::GrpcServer),
}

impl Pod {
    pub fn addr(&self) -> SocketAddr {
        match self {
            Pod::Http(b) => b.addr(),
            Pod::Grpc(g) => g.addr,
        }
    }

    pub fn set_latency(&self, latency: Duration) {
        match self {
            Pod::Http(b) => b.set_latency(latency),
            Pod::Grpc(g) => g.set_latency(latency),
        }
    }
}

/// Everything a path's runs share.
pub struct Lab {
    pub path: Path,
    /// The first three octets of every address of this lab: pods are `.1`, `.2`, …, and the
    /// Service of scenario `k` is `.{100 + k}`.
    pub net: [u8; 3],
    pub pods: Vec<Pod>,
    pub api: FakeApiServer,
    /// svc-tower paths: the store and pools their clients use.
    pub store: Store,
    pub pools: Pools,
    /// svc-proxy paths: the proxy, running in this process.
    pub proxy: Option<super::proxy::ProxyHandle>,
}

impl Lab {
    /// Starts `pods` pods and the API server, and the path's client side.
    pub async fn start(path: Path, net: [u8; 3], pods: u8, seed: u64) -> anyhow::Result<Lab> {
        let mut started = Vec::new();
        for i in 1..=pods {
            let addr = SocketAddr::from(([net[0], net[1], net[2], i], POD_PORT));
            started.push(match path {
                Path::Tonic => Pod::Grpc(
                    crate::grpc::serve(addr)
                        .await
                        .with_context(|| format!("gRPC pod on {addr}"))?,
                ),
                _ => Pod::Http(
                    svc_testkit::spawn_http_backend(addr)
                        .await
                        .with_context(|| format!("HTTP pod on {addr}"))?,
                ),
            });
        }
        let api = FakeApiServer::try_start().await?;
        let (store, writer) = svc_core::store::store(StoreConfig::default());
        let proxy = if path.is_proxy() {
            let admin = SocketAddr::from(([net[0], net[1], net[2], 254], 0));
            Some(super::proxy::ProxyHandle::start(&api, admin).await?)
        } else {
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            tokio::spawn(writer.run(rx));
            tokio::spawn(svc_core::source::kube::run(
                api.try_client()?,
                Default::default(),
                store.clone(),
                tx,
            ));
            None
        };
        let pools = Pools::builder(store.clone()).seed(seed).build();
        Ok(Lab {
            path,
            net,
            pods: started,
            api,
            store,
            pools,
            proxy,
        })
    }

    pub fn key(scenario: u8) -> ServiceKey {
        ServiceKey::new(NAMESPACE, format!("s{scenario}"))
    }

    /// The cluster IP of scenario `scenario`'s Service.
    pub fn vip(&self, scenario: u8) -> SocketAddr {
        let [a, b, c] = self.net;
        SocketAddr::from(([a, b, c, 100 + scenario], 80))
    }

    /// Creates scenario `scenario`'s Service with every pod ready, and waits until the
    /// path's client side has it.
    pub async fn add_service(&self, scenario: u8) -> anyhow::Result<()> {
        let mut port = PortSpec::new(80)
            .name("http")
            .target_port(i32::from(POD_PORT));
        if self.path == Path::ProxyHttp {
            port = port.app_protocol("http");
        }
        let key = Self::key(scenario);
        self.api.apply_service(
            service(NAMESPACE, &key.name)
                .cluster_ip(&self.vip(scenario).ip().to_string())
                .port_spec(port)
                .build(),
        );
        let ready = vec![true; self.pods.len()];
        self.set_ready(scenario, &ready).await
    }

    /// Sets the pods' readiness in scenario `scenario`'s Service and waits until the path's
    /// balancer has seen it.
    pub async fn set_ready(&self, scenario: u8, ready: &[bool]) -> anyhow::Result<()> {
        let key = Self::key(scenario);
        let endpoints = self
            .pods
            .iter()
            .zip(ready)
            .map(|(p, r)| EndpointSpec::new(&p.addr().ip().to_string()).ready(*r));
        self.api.apply_slice(
            endpoint_slice(NAMESPACE, &format!("{}-1", key.name), &key.name)
                .port(Some("http"), i32::from(POD_PORT))
                .endpoints(endpoints)
                .build(),
        );
        let want: Vec<SocketAddr> = self
            .pods
            .iter()
            .zip(ready)
            .filter(|(_, r)| **r)
            .map(|(p, _)| p.addr())
            .collect();
        match &self.proxy {
            Some(proxy) => proxy.wait_for(&key, &want).await,
            None => {
                let pool = self.pool(scenario);
                let mut rx = pool.watch_endpoints();
                tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|a| **a == *want))
                    .await
                    .context("the pool never saw the change")??;
                Ok(())
            }
        }
    }

    /// svc-tower paths: the pool of scenario `scenario`'s Service port.
    pub fn pool(&self, scenario: u8) -> EndpointPool {
        self.pools.get(
            &Self::key(scenario),
            &PortRef::Number(80, Protocol::Tcp),
            Scope::Internal,
        )
    }

    /// Which pod answered, by its address.
    pub fn pod_index(&self, answer: &str) -> Option<usize> {
        self.pods
            .iter()
            .position(|p| p.addr().to_string() == answer)
    }
}
