//! Prometheus metrics (prometheus-client, OpenMetrics text).
//!
//! Hot paths never build label sets: each listener gets a [`ServiceMetrics`] holding its
//! counters, and endpoint counters are cached per address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use svc_core::model::{Protocol, ServiceKey};
use svc_core::store::{ResourceKind, LAG_BUCKETS};
use svc_core::Store;

type Labels = Vec<(&'static str, String)>;

/// Every metric the proxy exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections: Family<Labels, Counter>,
    active: Family<Labels, Gauge>,
    bytes: Family<Labels, Counter>,
    requests: Family<Labels, Counter>,
    picks: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    dns: Family<Labels, Counter>,
    udp_drops: Family<Labels, Counter>,
    udp_evictions: Family<Labels, Counter>,
    refused: Family<Labels, Counter>,
}

impl Metrics {
    /// Registers every metric, including the store's freshness and propagation lag.
    pub fn new(store: Store) -> Self {
        let mut registry = Registry::with_prefix("svc_proxy");
        let m = Self {
            connections: Family::default(),
            active: Family::default(),
            bytes: Family::default(),
            requests: Family::default(),
            picks: Family::default(),
            errors: Family::default(),
            dns: Family::default(),
            udp_drops: Family::default(),
            udp_evictions: Family::default(),
            refused: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Connections (TCP) or flows (UDP) accepted, per Service port",
            m.connections.clone(),
        );
        registry.register(
            "active_connections",
            "Open TCP connections and UDP flows, per Service port",
            m.active.clone(),
        );
        registry.register(
            "bytes",
            "Bytes proxied per Service port; direction rx is client to endpoint, tx endpoint to client",
            m.bytes.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP-mode requests per Service port and status class",
            m.requests.clone(),
        );
        registry.register(
            "endpoint_picks",
            "Times an endpoint was picked",
            m.picks.clone(),
        );
        registry.register(
            "endpoint_errors",
            "Failures talking to an endpoint (connect errors and timeouts, HTTP errors)",
            m.errors.clone(),
        );
        registry.register(
            "dns_queries",
            "DNS queries answered, per response code",
            m.dns.clone(),
        );
        registry.register(
            "udp_datagrams_dropped",
            "UDP datagrams from clients that were not forwarded, per Service port and reason",
            m.udp_drops.clone(),
        );
        registry.register(
            "udp_flows_evicted",
            "UDP flows ended early to make room for new ones, per Service port and the limit reached",
            m.udp_evictions.clone(),
        );
        registry.register(
            "connections_refused",
            "TCP and HTTP connections closed as soon as accepted, per Service port and reason",
            m.refused.clone(),
        );
        registry.register_collector(Box::new(StoreCollector { store }));
        Self { registry, ..m }
    }

    /// Adds a collector read at scrape time (the source's health, see [`crate::health`]).
    pub fn register_collector(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    /// The counters of one Service port, for a listener (with request counters when `http`).
    pub fn service(
        &self,
        key: &ServiceKey,
        port: u16,
        protocol: Protocol,
        http: bool,
    ) -> Arc<ServiceMetrics> {
        let labels: Labels = vec![
            ("service", key.to_string()),
            ("port", port.to_string()),
            ("protocol", protocol.as_str().to_string()),
        ];
        let with = |extra: (&'static str, &str)| {
            let mut l = labels.clone();
            l.push((extra.0, extra.1.to_string()));
            l
        };
        // Each `get_or_create` returns a read guard on its family: take one at a time (a
        // second insert into the same family while a guard is alive would deadlock).
        let counter = |family: &Family<Labels, Counter>, labels: &Labels| {
            family.get_or_create(labels).clone()
        };
        let connections = counter(&self.connections, &labels);
        let active = self.active.get_or_create(&labels).clone();
        let rx = counter(&self.bytes, &with(("direction", "rx")));
        let tx = counter(&self.bytes, &with(("direction", "tx")));
        let requests = http.then(|| {
            ["1xx", "2xx", "3xx", "4xx", "5xx"]
                .map(|class| counter(&self.requests, &with(("code", class))))
        });
        Arc::new(ServiceMetrics {
            connections,
            active,
            rx,
            tx,
            requests,
            labels,
            picks: self.picks.clone(),
            errors: self.errors.clone(),
            endpoints: Mutex::default(),
            udp: UdpCounters {
                drops: self.udp_drops.clone(),
                evictions: self.udp_evictions.clone(),
                cached: Default::default(),
            },
            refused: self.refused.clone(),
            refused_memory: std::sync::OnceLock::new(),
        })
    }

    /// Counts one DNS answer with this response code.
    pub fn dns_answered(&self, rcode: &'static str) {
        self.dns
            .get_or_create(&vec![("rcode", rcode.to_string())])
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

/// The counters of one Service port.
#[derive(Debug)]
pub struct ServiceMetrics {
    labels: Labels,
    /// Connections or flows accepted.
    pub connections: Counter,
    /// Open connections or flows.
    pub active: Gauge,
    /// Bytes from clients to endpoints.
    pub rx: Counter,
    /// Bytes from endpoints to clients.
    pub tx: Counter,
    requests: Option<[Counter; 5]>,
    picks: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    endpoints: Mutex<HashMap<SocketAddr, Arc<EndpointMetrics>>>,
    udp: UdpCounters,
    refused: Family<Labels, Counter>,
    /// Created on first use: most Services never refuse a connection.
    refused_memory: std::sync::OnceLock<Counter>,
}

/// Why a UDP datagram from a client was not forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpDrop {
    /// No endpoint is eligible.
    NoEndpoints,
    /// The proxy is above `--memory-ceiling`.
    MemoryCeiling,
    /// Every flow slot is taken and none of this listener's flows could make room.
    FlowLimit,
    /// A socket for the flow could not be opened (e.g. out of file descriptors).
    Socket,
    /// The endpoint socket's send buffer was full, or sending failed.
    Send,
}

/// Which ceiling made a UDP flow end early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpEviction {
    /// `--udp-max-flows-per-client` for the new flow's client IP.
    ClientLimit,
    /// `--udp-max-flows` for the whole proxy.
    GlobalLimit,
}

const UDP_DROPS: [(UdpDrop, &str); 5] = [
    (UdpDrop::NoEndpoints, "no_endpoints"),
    (UdpDrop::MemoryCeiling, "memory_ceiling"),
    (UdpDrop::FlowLimit, "flow_limit"),
    (UdpDrop::Socket, "socket_error"),
    (UdpDrop::Send, "send_failed"),
];
const UDP_EVICTIONS: [(UdpEviction, &str); 2] = [
    (UdpEviction::ClientLimit, "client_limit"),
    (UdpEviction::GlobalLimit, "global_limit"),
];

/// UDP drop and eviction counters, created on first use (most Services never drop), then
/// cached, so that a flood of drops costs no label building.
#[derive(Debug)]
struct UdpCounters {
    drops: Family<Labels, Counter>,
    evictions: Family<Labels, Counter>,
    cached: [std::sync::OnceLock<Counter>; UDP_DROPS.len() + UDP_EVICTIONS.len()],
}

/// The counters of one endpoint of one Service port.
#[derive(Debug)]
pub struct EndpointMetrics {
    /// Times it was picked.
    pub picks: Counter,
    /// Connect or request failures.
    pub errors: Counter,
}

impl ServiceMetrics {
    /// The counters of one endpoint (cached).
    pub fn endpoint(&self, addr: SocketAddr) -> Arc<EndpointMetrics> {
        let mut cache = self.endpoints.lock();
        if let Some(m) = cache.get(&addr) {
            return m.clone();
        }
        // Bound the cache by the endpoints a Service has had; a Service churning through many
        // pods drops its cache now and then (the families keep the series).
        if cache.len() > 4096 {
            cache.clear();
        }
        let mut labels = self.labels.clone();
        labels.push(("endpoint", addr.to_string()));
        let picks = self.picks.get_or_create(&labels).clone();
        let errors = self.errors.get_or_create(&labels).clone();
        let m = Arc::new(EndpointMetrics { picks, errors });
        cache.insert(addr, m.clone());
        m
    }

    /// Counts a client datagram that was not forwarded.
    pub fn udp_dropped(&self, why: UdpDrop) {
        let i = UDP_DROPS.iter().position(|(d, _)| *d == why).unwrap_or(0);
        self.udp_counter(i, &self.udp.drops, ("reason", UDP_DROPS[i].1))
            .inc();
    }

    /// Counts a UDP flow evicted to make room.
    pub fn udp_evicted(&self, why: UdpEviction) {
        let i = UDP_EVICTIONS
            .iter()
            .position(|(e, _)| *e == why)
            .unwrap_or(0);
        self.udp_counter(
            UDP_DROPS.len() + i,
            &self.udp.evictions,
            ("limit", UDP_EVICTIONS[i].1),
        )
        .inc();
    }

    fn udp_counter(
        &self,
        slot: usize,
        family: &Family<Labels, Counter>,
        label: (&'static str, &str),
    ) -> &Counter {
        self.udp.cached[slot].get_or_init(|| {
            let mut labels = self.labels.clone();
            labels.push((label.0, label.1.to_string()));
            family.get_or_create(&labels).clone()
        })
    }

    /// Counts a TCP or HTTP connection closed at accept because the proxy is above
    /// `--memory-ceiling`.
    pub fn refused_above_memory_ceiling(&self) {
        self.refused_memory
            .get_or_init(|| {
                let mut labels = self.labels.clone();
                labels.push(("reason", "memory_ceiling".to_string()));
                self.refused.get_or_create(&labels).clone()
            })
            .inc();
    }

    /// Counts one HTTP response by status class.
    pub fn request(&self, status: http::StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        if let Some(requests) = &self.requests {
            requests[class].inc();
        }
    }
}

/// One accept loop's view of a Service port's endpoint counters: HTTP mode's observer of
/// svc-tower's picks and failures.
///
/// Each worker thread has its own, so the per-request lookup takes a lock and a map that no
/// other thread touches: with the shared [`ServiceMetrics::endpoint`] cache, its lock word and
/// `Arc` counts move between the workers' cores on every request. (At `--threads 2`, taking
/// the observer out altogether saved ~2 µs of ~20 per request; see BENCHMARKS.md.)
#[derive(Debug)]
pub struct WorkerEndpointMetrics {
    service: Arc<ServiceMetrics>,
    cache: Mutex<HashMap<SocketAddr, Arc<EndpointMetrics>>>,
}

impl WorkerEndpointMetrics {
    /// A cache of `service`'s endpoint counters for one accept loop.
    pub fn new(service: Arc<ServiceMetrics>) -> Self {
        Self {
            service,
            cache: Mutex::default(),
        }
    }

    fn with(&self, addr: SocketAddr, count: impl FnOnce(&EndpointMetrics)) {
        let mut cache = self.cache.lock();
        if let Some(m) = cache.get(&addr) {
            return count(m);
        }
        // Bounded as the shared cache is.
        if cache.len() > 4096 {
            cache.clear();
        }
        count(cache.entry(addr).or_insert(self.service.endpoint(addr)));
    }
}

impl svc_tower::layer::EndpointObserver for WorkerEndpointMetrics {
    fn picked(&self, endpoint: SocketAddr) {
        self.with(endpoint, |m| {
            m.picks.inc();
        });
    }

    fn failed(&self, endpoint: SocketAddr) {
        self.with(endpoint, |m| {
            m.errors.inc();
        });
    }
}

/// Reads the store's freshness at scrape time.
#[derive(Debug)]
struct StoreCollector {
    store: Store,
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let fresh = self.store.freshness();
        let kinds = [ResourceKind::Service, ResourceKind::EndpointSlice];
        let stats: Vec<_> = kinds
            .iter()
            .map(|k| (k.as_str(), fresh.watch(*k).stats()))
            .collect();

        let mut g = encoder.encode_descriptor(
            "watch_seconds_since_activity",
            "Seconds since the watch's last event or bookmark (NaN before the first)",
            None,
            MetricType::Gauge,
        )?;
        for (kind, s) in &stats {
            let v = s.since_last_activity.map_or(f64::NAN, |d| d.as_secs_f64());
            ConstGauge::new(v).encode(g.encode_family(&[("resource", *kind)])?)?;
        }
        type Field = fn(&svc_core::store::WatchStats) -> u64;
        let counters: [(&str, &str, Field); 5] = [
            ("watch_events", "Objects received by the watch", |s| {
                s.events
            }),
            ("watch_bookmarks", "Bookmarks received by the watch", |s| {
                s.bookmarks
            }),
            (
                "watch_relists",
                "Full lists (the first one included)",
                |s| s.relists,
            ),
            (
                "watch_stall_restarts",
                "Watches restarted after going silent",
                |s| s.stall_restarts,
            ),
            ("watch_errors", "Failed watch or list requests", |s| {
                s.errors
            }),
        ];
        for (name, help, field) in counters {
            let mut e = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (kind, s) in &stats {
                ConstCounter::new(field(s)).encode(e.encode_family(&[("resource", *kind)])?)?;
            }
        }

        let lag = fresh.lag.snapshot();
        let buckets: Vec<(f64, u64)> = LAG_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(lag.counts.iter().copied())
            .collect();
        let mut e = encoder.encode_descriptor(
            "propagation_lag_seconds",
            "Time from an endpoint change (last-change-trigger-time) to its arrival in the store",
            None,
            MetricType::Histogram,
        )?;
        e.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            lag.sum_seconds,
            lag.count(),
            &buckets,
            None,
        )?;

        let e = encoder.encode_descriptor(
            "services",
            "Services in the store",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.store.len() as i64).encode(e)?;
        let e = encoder.encode_descriptor(
            "synced",
            "1 once the initial lists are applied",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(self.store.is_synced())).encode(e)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use svc_core::store::{StoreConfig, Writer};
    use svc_tower::layer::EndpointObserver;

    #[test]
    fn worker_observers_count_into_the_shared_series() {
        let (_writer, store) = Writer::new(StoreConfig::default());
        let metrics = Metrics::new(store);
        let service = metrics.service(&ServiceKey::new("shop", "web"), 80, Protocol::Tcp, true);
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
        let text = metrics.encode();
        let picks = text
            .lines()
            .find(|l| l.contains("picks") && l.contains("10.0.0.1:8080") && !l.starts_with('#'))
            .expect("a picks series for the endpoint");
        assert!(picks.ends_with(" 3"), "{picks}");
    }
}
