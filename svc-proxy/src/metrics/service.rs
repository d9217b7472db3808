//! Per Service port counters, and per endpoint ones when `--metrics-endpoints` asks for them.
//!
//! The counters are plain atomics owned by the listeners' [`ServiceMetrics`]; a collector
//! reads the live ones at scrape time. So a Service port's series exist exactly while it has a
//! listener (or a flow still open on it) and disappear with the Service, and they appear on its
//! first connection, not before (Envoy's deferred stat creation): at 10,000 Services a node's
//! clients reach a few hundred, and idle ports would otherwise fill `/metrics` with zeros.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use svc_core::model::{Protocol, ServiceKey};
use svc_core::store::PortRef;
use svc_core::Store;

type SeriesKey = (ServiceKey, u16, Protocol);

/// The live [`ServiceMetrics`], by Service port.
#[derive(Debug, Default)]
pub(super) struct ServiceSeries {
    live: Mutex<BTreeMap<SeriesKey, Weak<ServiceMetrics>>>,
}

impl ServiceSeries {
    /// The counters of one Service port: the live ones, or new ones.
    pub(super) fn get(self: &Arc<Self>, key: SeriesKey, endpoints: bool) -> Arc<ServiceMetrics> {
        let mut live = self.live.lock();
        if let Some(m) = live.get(&key).and_then(Weak::upgrade) {
            return m;
        }
        let m = Arc::new(ServiceMetrics {
            service: key.0.to_string(),
            key: key.clone(),
            connections: Counter::default(),
            active: Gauge::default(),
            rx: Counter::default(),
            tx: Counter::default(),
            requests: OnceLock::new(),
            refused: Counter::default(),
            udp_drops: Default::default(),
            udp_evictions: Default::default(),
            endpoints: endpoints.then(Mutex::default),
            sink: OnceLock::new(),
            generation: AtomicU64::new(0),
            series: Arc::downgrade(self),
        });
        live.insert(key, Arc::downgrade(&m));
        m
    }

    fn used(&self) -> Vec<Arc<ServiceMetrics>> {
        self.live
            .lock()
            .values()
            .filter_map(Weak::upgrade)
            .filter(|m| m.is_used())
            .collect()
    }
}

/// The counters of one Service port.
#[derive(Debug)]
pub struct ServiceMetrics {
    service: String,
    key: SeriesKey,
    /// Connections or flows accepted.
    pub connections: Counter,
    /// Open connections or flows.
    pub active: Gauge,
    /// Bytes from clients to endpoints.
    pub rx: Counter,
    /// Bytes from endpoints to clients.
    pub tx: Counter,
    requests: OnceLock<[Counter; 5]>,
    /// Connections reset at accept above `--memory-ceiling`.
    refused: Counter,
    /// UDP datagrams not forwarded, by [`UdpDrop`].
    udp_drops: [Counter; UDP_DROPS.len()],
    /// UDP flows evicted, by [`UdpEviction`].
    udp_evictions: [Counter; UDP_EVICTIONS.len()],
    /// Per endpoint counters (`--metrics-endpoints` only).
    endpoints: Option<Mutex<HashMap<SocketAddr, Arc<EndpointMetrics>>>>,
    /// What [`Self::endpoint`] hands out without `--metrics-endpoints`: counted, never shown.
    sink: OnceLock<Arc<EndpointMetrics>>,
    /// Bumped when endpoints' series are dropped, so that worker caches let go of them too.
    generation: AtomicU64,
    series: Weak<ServiceSeries>,
}

impl Drop for ServiceMetrics {
    fn drop(&mut self) {
        let Some(series) = self.series.upgrade() else {
            return;
        };
        let mut live = series.live.lock();
        // A new one for the same port may have taken the slot since the last strong reference
        // went.
        if live
            .get(&self.key)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), self))
        {
            live.remove(&self.key);
        }
    }
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

/// The counters of one endpoint of one Service port.
#[derive(Debug, Default)]
pub struct EndpointMetrics {
    /// Times it was picked.
    pub picks: Counter,
    /// Connect or request failures.
    pub errors: Counter,
}

impl ServiceMetrics {
    /// The counters of one endpoint. Without `--metrics-endpoints` they are counted into a
    /// sink that is never exported, so the call is cheap and keeps no per-endpoint state.
    pub fn endpoint(&self, addr: SocketAddr) -> Arc<EndpointMetrics> {
        let Some(endpoints) = &self.endpoints else {
            return self.sink.get_or_init(Arc::default).clone();
        };
        let mut cache = endpoints.lock();
        cache.entry(addr).or_default().clone()
    }

    /// Whether per-endpoint series are kept.
    pub fn per_endpoint(&self) -> bool {
        self.endpoints.is_some()
    }

    /// Counts a connection reset at accept because the proxy is above `--memory-ceiling`.
    pub fn refused_above_memory_ceiling(&self) {
        self.refused.inc();
    }

    /// Counts a client datagram that was not forwarded.
    pub fn udp_dropped(&self, why: UdpDrop) {
        if let Some(i) = UDP_DROPS.iter().position(|(d, _)| *d == why) {
            self.udp_drops[i].inc();
        }
    }

    /// Counts a UDP flow evicted to make room.
    pub fn udp_evicted(&self, why: UdpEviction) {
        if let Some(i) = UDP_EVICTIONS.iter().position(|(e, _)| *e == why) {
            self.udp_evictions[i].inc();
        }
    }

    /// Whether the port's series are exported: once it has seen a connection, or refused or
    /// dropped one (a port that only ever refused must still say so).
    fn is_used(&self) -> bool {
        self.connections.get() > 0
            || self.refused.get() > 0
            || self.udp_drops.iter().any(|c| c.get() > 0)
    }

    /// Counts one HTTP response by status class.
    pub fn request(&self, status: http::StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.requests.get_or_init(Default::default)[class].inc();
    }

    /// Drops the series of endpoints the Service port no longer lists.
    fn prune_endpoints(&self, store: &Store) {
        let Some(endpoints) = &self.endpoints else {
            return;
        };
        let (key, port, protocol) = &self.key;
        let listed: HashSet<SocketAddr> = store
            .get(key)
            .and_then(|s| {
                PortRef::Number(*port, *protocol)
                    .find(&s)
                    .map(|p| p.endpoints.iter().map(|e| e.addr).collect())
            })
            .unwrap_or_default();
        let mut map = endpoints.lock();
        let before = map.len();
        map.retain(|addr, _| listed.contains(addr));
        if map.len() != before {
            self.generation.fetch_add(1, Relaxed);
        }
    }
}

/// One worker's view of a Service port's endpoint counters: HTTP mode's observer of
/// svc-tower's picks and failures.
///
/// Each worker has its own, so the per-request lookup takes a lock and a map that no other
/// thread touches: with the shared [`ServiceMetrics::endpoint`] cache, its lock word and `Arc`
/// counts move between the workers' cores on every request. (At `--threads 2`, taking the
/// observer out altogether saved ~2 µs of ~20 per request; see BENCHMARKS.md.) Without
/// `--metrics-endpoints` it does nothing at all.
#[derive(Debug)]
pub struct WorkerEndpointMetrics {
    service: Arc<ServiceMetrics>,
    cache: Mutex<(u64, HashMap<SocketAddr, Arc<EndpointMetrics>>)>,
}

impl WorkerEndpointMetrics {
    /// A cache of `service`'s endpoint counters for one worker.
    pub fn new(service: Arc<ServiceMetrics>) -> Self {
        Self {
            service,
            cache: Mutex::default(),
        }
    }

    fn with(&self, addr: SocketAddr, count: impl FnOnce(&EndpointMetrics)) {
        if !self.service.per_endpoint() {
            return;
        }
        let generation = self.service.generation.load(Relaxed);
        let mut cache = self.cache.lock();
        if cache.0 != generation {
            *cache = (generation, HashMap::new());
        }
        if let Some(m) = cache.1.get(&addr) {
            return count(m);
        }
        count(cache.1.entry(addr).or_insert(self.service.endpoint(addr)));
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

/// Encodes the used Service ports' series at scrape time.
#[derive(Debug)]
pub(super) struct ServiceCollector {
    pub(super) series: Arc<ServiceSeries>,
    pub(super) store: Store,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

type PortLabels<'a> = (
    [(&'static str, &'a str); 1],
    ([(&'static str, u16); 1], [(&'static str, &'static str); 1]),
);

fn labels(m: &ServiceMetrics) -> PortLabels<'_> {
    (
        [("service", m.service.as_str())],
        ([("port", m.key.1)], [("protocol", m.key.2.as_str())]),
    )
}

impl Collector for ServiceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let used = self.series.used();
        let mut e = encoder.encode_descriptor(
            "connections",
            "Connections (TCP) or flows (UDP) accepted, per Service port (from its first)",
            None,
            MetricType::Counter,
        )?;
        for m in &used {
            m.connections.encode(e.encode_family(&labels(m))?)?;
        }
        let mut e = encoder.encode_descriptor(
            "active_connections",
            "Open TCP connections and UDP flows, per Service port",
            None,
            MetricType::Gauge,
        )?;
        for m in &used {
            m.active.encode(e.encode_family(&labels(m))?)?;
        }
        let mut e = encoder.encode_descriptor(
            "bytes",
            "Bytes proxied per Service port; direction rx is client to endpoint, tx endpoint to client",
            None,
            MetricType::Counter,
        )?;
        for m in &used {
            for (direction, counter) in [("rx", &m.rx), ("tx", &m.tx)] {
                counter.encode(e.encode_family(&(labels(m), [("direction", direction)]))?)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            "http_requests",
            "HTTP-mode requests per Service port and status class",
            None,
            MetricType::Counter,
        )?;
        for m in &used {
            let Some(requests) = m.requests.get() else {
                continue;
            };
            for (class, counter) in CLASSES.iter().zip(requests) {
                if counter.get() > 0 {
                    counter.encode(e.encode_family(&(labels(m), [("code", *class)]))?)?;
                }
            }
        }
        let mut e = encoder.encode_descriptor(
            "connections_refused",
            "TCP and HTTP connections reset as soon as accepted, per Service port and reason",
            None,
            MetricType::Counter,
        )?;
        for m in used.iter().filter(|m| m.refused.get() > 0) {
            m.refused
                .encode(e.encode_family(&(labels(m), [("reason", "memory_ceiling")]))?)?;
        }
        type Reasons<'a> = (
            &'a str,
            &'a str,
            &'a str,
            fn(&ServiceMetrics) -> Vec<(&'static str, &Counter)>,
        );
        let udp: [Reasons<'_>; 2] = [
            (
                "udp_datagrams_dropped",
                "UDP datagrams from clients that were not forwarded, per Service port and reason",
                "reason",
                |m| UDP_DROPS.iter().map(|(_, r)| *r).zip(&m.udp_drops).collect(),
            ),
            (
                "udp_flows_evicted",
                "UDP flows ended early to make room for new ones, per Service port and the limit reached",
                "limit",
                |m| UDP_EVICTIONS.iter().map(|(_, r)| *r).zip(&m.udp_evictions).collect(),
            ),
        ];
        for (name, help, label, counters) in udp {
            let mut e = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for m in &used {
                for (reason, counter) in counters(m) {
                    if counter.get() > 0 {
                        counter.encode(e.encode_family(&(labels(m), [(label, reason)]))?)?;
                    }
                }
            }
        }
        if used.iter().any(|m| m.per_endpoint()) {
            for m in &used {
                m.prune_endpoints(&self.store);
            }
            type Field = fn(&EndpointMetrics) -> &Counter;
            let families: [(&str, &str, Field); 2] = [
                ("endpoint_picks", "Times an endpoint was picked (--metrics-endpoints)", |m| &m.picks),
                (
                    "endpoint_errors",
                    "Failures talking to an endpoint: connect errors and timeouts, HTTP errors (--metrics-endpoints)",
                    |m| &m.errors,
                ),
            ];
            for (name, help, field) in families {
                let mut e = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
                for m in &used {
                    let Some(endpoints) = &m.endpoints else {
                        continue;
                    };
                    let mut endpoints: Vec<_> = endpoints
                        .lock()
                        .iter()
                        .map(|(a, c)| (a.to_string(), c.clone()))
                        .collect();
                    endpoints.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                    for (addr, c) in endpoints {
                        field(&c).encode(
                            e.encode_family(&(labels(m), [("endpoint", addr.as_str())]))?,
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}
