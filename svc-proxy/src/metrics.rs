//! Prometheus metrics (prometheus-client, OpenMetrics text).
//!
//! Cardinality is bounded by what a node serves, not by the cluster: series are per Service
//! port (as Envoy's are per cluster), appear on the port's first connection and go with the
//! Service (`metrics::service`); per endpoint series only with `--metrics-endpoints`. Hot paths never
//! build label sets: each listener holds its [`ServiceMetrics`].

mod service;
mod store;

pub use service::{EndpointMetrics, ServiceMetrics, UdpDrop, UdpEviction, WorkerEndpointMetrics};

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use svc_core::model::{Protocol, ServiceKey};
use svc_core::Store;

use crate::listeners::{Cause, Status};
use service::{ServiceCollector, ServiceSeries};
use store::StoreCollector;

type Labels = [(&'static str, &'static str); 1];

/// Every metric the proxy exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    services: Arc<ServiceSeries>,
    per_endpoint: bool,
    dns: Family<Labels, Counter>,
    listener_errors: Family<Labels, Counter>,
}

impl Metrics {
    /// Registers every metric: the store's freshness and propagation lag, the dataplane's state
    /// from `dataplane`, and per endpoint series when `per_endpoint`.
    pub fn new(store: Store, dataplane: Arc<Status>, per_endpoint: bool) -> Self {
        let mut registry = Registry::with_prefix("svc_proxy");
        let services = Arc::new(ServiceSeries::default());
        let dns = Family::default();
        let listener_errors = Family::default();
        registry.register(
            "dns_queries",
            "DNS queries answered, per response code",
            dns.clone(),
        );
        registry.register(
            "listener_errors",
            "Failed attempts to create a listener, per cause (each is retried with backoff)",
            listener_errors.clone(),
        );
        registry.register_collector(Box::new(ServiceCollector {
            series: services.clone(),
            store: store.clone(),
        }));
        registry.register_collector(Box::new(StoreCollector { store, dataplane }));
        Self {
            registry,
            services,
            per_endpoint,
            dns,
            listener_errors,
        }
    }

    /// The counters of one Service port, shared by every listener of the port (its cluster IPs
    /// and NodePort alike). `_http` is kept for callers; request counters appear on first use.
    pub fn service(
        &self,
        key: &ServiceKey,
        port: u16,
        protocol: Protocol,
        _http: bool,
    ) -> Arc<ServiceMetrics> {
        self.services
            .get((key.clone(), port, protocol), self.per_endpoint)
    }

    /// Adds a collector read at scrape time (the source's health, see [`crate::health`]).
    pub fn register_collector(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    /// Counts one DNS answer with this response code.
    pub fn dns_answered(&self, rcode: &'static str) {
        self.dns.get_or_create(&[("rcode", rcode)]).inc();
    }

    /// Counts one failed attempt to create a listener.
    pub fn listener_error(&self, cause: Cause) {
        self.listener_errors
            .get_or_create(&[("cause", cause.as_str())])
            .inc();
    }

    /// Encodes everything in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use svc_core::store::StoreConfig;
    use svc_tower::layer::EndpointObserver;

    fn metrics(per_endpoint: bool) -> Metrics {
        let (store, _writer) = svc_core::store::store(StoreConfig::default());
        Metrics::new(store, Arc::default(), per_endpoint)
    }

    fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .collect()
    }

    #[test]
    fn worker_observers_count_into_the_shared_series() {
        let metrics = metrics(true);
        let service = metrics.service(&ServiceKey::new("shop", "web"), 80, Protocol::Tcp, true);
        service.connections.inc();
        let (a, b) = (
            WorkerEndpointMetrics::new(service.clone()),
            WorkerEndpointMetrics::new(service.clone()),
        );
        let pod: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        a.picked(pod);
        b.picked(pod);
        b.picked(pod);
        a.failed(pod);
        assert_eq!(service.endpoint(pod).picks.get(), 3);
        assert_eq!(service.endpoint(pod).errors.get(), 1);
        // The store does not list the pod, so the scrape drops its series; the counts were
        // there until then.
        assert!(metrics
            .encode()
            .lines()
            .all(|l| !l.contains("10.0.0.1:8080")));
    }

    #[test]
    fn series_appear_on_first_use_and_go_with_their_listeners() {
        let metrics = metrics(false);
        let key = ServiceKey::new("shop", "web");
        let internal = metrics.service(&key, 80, Protocol::Tcp, false);
        let external = metrics.service(&key, 80, Protocol::Tcp, false);
        assert!(
            Arc::ptr_eq(&internal, &external),
            "one set of series per port"
        );
        assert!(samples(&metrics.encode(), "svc_proxy_connections_total").is_empty());
        internal.connections.inc();
        internal.rx.inc_by(10);
        internal.request(http::StatusCode::OK);
        let text = metrics.encode();
        assert_eq!(
            samples(&text, "svc_proxy_connections_total"),
            [r#"svc_proxy_connections_total{service="shop/web",port="80",protocol="TCP"} 1"#]
        );
        assert_eq!(samples(&text, "svc_proxy_bytes_total").len(), 2);
        assert_eq!(
            samples(&text, "svc_proxy_http_requests_total"),
            [
                r#"svc_proxy_http_requests_total{service="shop/web",port="80",protocol="TCP",code="2xx"} 1"#
            ]
        );
        // Without --metrics-endpoints, picks are counted into nothing that is exported.
        internal
            .endpoint("10.0.0.1:8080".parse().unwrap())
            .picks
            .inc();
        assert!(samples(&text, "svc_proxy_endpoint").is_empty());
        drop(internal);
        assert_eq!(
            samples(&metrics.encode(), "svc_proxy_connections_total").len(),
            1
        );
        drop(external);
        let text = metrics.encode();
        assert!(
            samples(&text, "svc_proxy_connections_total").is_empty(),
            "{text}"
        );
        assert!(samples(&text, "svc_proxy_bytes_total").is_empty(), "{text}");
        // A new Service on the same port starts from zero.
        let again = metrics.service(&key, 80, Protocol::Tcp, false);
        assert_eq!(again.connections.get(), 0);
    }
}
