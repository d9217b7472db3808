//! Shared pieces of the integration tests: real hyper backends on 127.0.0.x and a store
//! fed with model events.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use svc_core::model::{
    AddressType, Conditions, Endpoint, EndpointPort, EndpointSlice, Protocol, Service, ServicePort,
    TargetPort,
};
use svc_core::store::{Event, PortRef, StoreConfig, Writer};
use svc_core::{ServiceKey, Store};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

pub type Body = Empty<Bytes>;

#[derive(Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub accepted: AtomicU64,
    /// Connections that carried at least one request.
    pub used: AtomicU64,
    pub open: AtomicU64,
}

/// A real HTTP/1.1 + HTTP/2 (h2c prior knowledge) server. Answers with its address. A request
/// to `/hold` waits until [`Backend::release`]. Shutdown is graceful: it stops accepting, lets
/// requests in flight finish and closes idle connections.
pub struct Backend {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    gate: Arc<Notify>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    pub async fn start(ip: [u8; 4]) -> Backend {
        Self::start_on(SocketAddr::from((ip, 0))).await
    }

    pub async fn start_on(addr: SocketAddr) -> Backend {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let gate = Arc::new(Notify::new());
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(serve(listener, stats.clone(), gate.clone(), stop_rx));
        Backend {
            addr,
            stats,
            gate,
            stop,
            task,
        }
    }

    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::SeqCst)
    }

    pub fn accepted(&self) -> u64 {
        self.stats.accepted.load(Ordering::SeqCst)
    }

    /// Connections that carried at least one request (not, say, an HTTP/2 probe).
    pub fn used(&self) -> u64 {
        self.stats.used.load(Ordering::SeqCst)
    }

    pub fn open(&self) -> u64 {
        self.stats.open.load(Ordering::SeqCst)
    }

    /// Lets every held request answer.
    pub fn release(&self) {
        self.gate.notify_waiters();
    }

    /// Lets one held request answer: one waiting now, or else the next to arrive.
    pub fn release_one(&self) {
        self.gate.notify_one();
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn serve(
    listener: TcpListener,
    stats: Arc<Stats>,
    gate: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let addr = listener.local_addr().unwrap();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (io, _) = tokio::select! {
            accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
            _ = stop.changed() => break,
        };
        stats.accepted.fetch_add(1, Ordering::SeqCst);
        stats.open.fetch_add(1, Ordering::SeqCst);
        let (stats, gate, mut stop) = (stats.clone(), gate.clone(), stop.clone());
        conns.spawn(async move {
            let counters = stats.clone();
            let first = Arc::new(std::sync::Once::new());
            let svc = service_fn(move |req: http::Request<Incoming>| {
                let (stats, gate) = (stats.clone(), gate.clone());
                first.call_once(|| {
                    stats.used.fetch_add(1, Ordering::SeqCst);
                });
                async move {
                    stats.requests.fetch_add(1, Ordering::SeqCst);
                    if req.uri().path() == "/hold" {
                        gate.notified().await;
                    }
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(
                        addr.to_string(),
                    ))))
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(io), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            counters.open.fetch_sub(1, Ordering::SeqCst);
        });
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// An address where nothing listens.
pub async fn dead_addr(ip: [u8; 4]) -> SocketAddr {
    let l = TcpListener::bind(SocketAddr::from((ip, 0))).await.unwrap();
    l.local_addr().unwrap()
}

pub fn key() -> ServiceKey {
    ServiceKey::new("shop", "web")
}

pub fn http_port() -> PortRef {
    PortRef::Number(80, Protocol::Tcp)
}

/// `shop/web` on cluster IP `vip`, port 80 (named `http`, target port named `web` so that each
/// slice carries its own number), with an optional appProtocol.
pub fn service(vip: [u8; 4], app_protocol: Option<&str>) -> Service {
    Service {
        cluster_ips: vec![IpAddr::from(vip)],
        ports: vec![ServicePort {
            name: Some("http".into()),
            protocol: Protocol::Tcp,
            port: 80,
            target_port: TargetPort::Name("web".into()),
            node_port: None,
            app_protocol: app_protocol.map(Into::into),
        }],
        ..Service::new(key())
    }
}

pub const READY: Conditions = Conditions {
    ready: true,
    serving: true,
    terminating: false,
};
pub const NOT_READY: Conditions = Conditions {
    ready: false,
    serving: false,
    terminating: false,
};
pub const TERMINATING: Conditions = Conditions {
    ready: false,
    serving: true,
    terminating: true,
};

/// One slice per endpoint (each backend listens on its own port), named after the address.
pub fn slice(addr: SocketAddr, conditions: Conditions) -> EndpointSlice {
    EndpointSlice {
        key: ServiceKey::new(
            "shop",
            format!("web-{}", addr.to_string().replace([':', '.'], "-")),
        ),
        service: key(),
        address_type: AddressType::IPv4,
        ports: vec![EndpointPort {
            name: Some("http".into()),
            port: addr.port(),
            protocol: Protocol::Tcp,
            app_protocol: None,
        }],
        endpoints: vec![Arc::new(Endpoint {
            address: addr.ip(),
            conditions,
            zone: None,
            node_name: None,
            hints: None,
            target_ref: None,
            hostname: None,
        })],
        last_change_trigger_time: None,
    }
}

/// A synced store with `svc` and one ready slice per address.
pub fn store(svc: Service, addrs: &[SocketAddr]) -> (Writer, Store) {
    let config = StoreConfig::default().default_namespace("shop");
    let (store, mut writer) = svc_core::store::store(config);
    writer.apply(Event::ReplaceServices {
        services: vec![svc],
        retain: vec![],
    });
    writer.apply(Event::ReplaceSlices {
        slices: addrs.iter().map(|a| slice(*a, READY)).collect(),
        retain: vec![],
    });
    (writer, store)
}

/// Waits until `pool`'s eligible set satisfies `f` (the follower task runs asynchronously).
pub async fn until_endpoints(pool: &svc_tower::EndpointPool, f: impl Fn(&[SocketAddr]) -> bool) {
    let mut rx = pool.watch_endpoints();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|a| f(a)))
        .await
        .expect("endpoint change did not propagate")
        .unwrap();
}

/// Polls `f` until it holds (for effects on the server side, such as connections closing).
pub async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

pub fn get(uri: &str) -> http::Request<Body> {
    http::Request::get(uri).body(Empty::new()).unwrap()
}

pub fn get_h2(uri: &str) -> http::Request<Body> {
    http::Request::get(uri)
        .version(http::Version::HTTP_2)
        .body(Empty::new())
        .unwrap()
}

/// The body of a response (an endpoint's `Incoming`, or the layer's `ResponseBody`), as text.
pub async fn text<B>(response: http::Response<B>) -> String
where
    B: hyper::body::Body,
    B::Error: std::fmt::Debug,
{
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Follows a hyper-util client error's sources down to one of ours.
pub fn cause<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut e: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cur) = e {
        if let Some(t) = cur.downcast_ref::<T>() {
            return Some(t);
        }
        e = cur.source();
    }
    None
}
