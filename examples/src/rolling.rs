//! The rolling-restart scenario: a steady stream of requests while a Service's 3 backends are
//! replaced one by one, sent both through svc-tower's request layer and through a client that
//! resolved the Service once and kept the answer (as a DNS cache does).
//!
//! Each step does what a Deployment rollout does to a pod:
//! 1. a new backend starts and its endpoint is added, ready;
//! 2. the old endpoint is marked terminating (`ready: false, serving: true,
//!    terminating: true`), and the old backend keeps serving for a grace period;
//! 3. the old endpoint is removed;
//! 4. the old backend stops: it refuses new connections, closes idle kept-alive ones, and
//!    finishes what is in flight (hyper's graceful shutdown, as on SIGTERM).
//!
//! No cluster is needed: endpoints change by applying events to an in-process store.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use svc_core::model::{EndpointSlice, Service};
use svc_core::store::{Event, StoreConfig};
use svc_core::ServiceKey;
use svc_testkit::{endpoint_slice, service, EndpointSpec};
use svc_tower::balance::Pools;
use svc_tower::layer::{BalanceLayer, HttpVersion, NoFallback};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::{Layer, ServiceExt};

/// The scenario's timing.
#[derive(Clone, Debug)]
pub struct Options {
    /// Time between two requests of each client.
    pub interval: Duration,
    /// Each phase of a replacement (new pod ready, old one terminating, removed, stopped)
    /// lasts this long.
    pub phase: Duration,
    /// The Service's cluster IP, and the first octets of the backends' loopback addresses
    /// (`a.b.c.1`, `a.b.c.2`, …), so that concurrent runs can use different ones.
    pub net: [u8; 3],
    /// The protocol svc-tower's client speaks (the resolve-once client always uses
    /// HTTP/1.1).
    pub http_version: HttpVersion,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(2),
            phase: Duration::from_millis(300),
            net: [127, 0, 40],
            http_version: HttpVersion::Http1,
        }
    }
}

/// What happened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Requests each client sent.
    pub requests: u64,
    /// Requests through svc-tower's layer that failed (an error or a non-200 status).
    pub svc_failed: u64,
    /// Requests through the resolve-once client that failed.
    pub dns_cached_failed: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rolling-restart requests={} svc_failed={} dns_cached_failed={}",
            self.requests, self.svc_failed, self.dns_cached_failed
        )
    }
}

/// A backend that answers with its address and shuts down gracefully.
struct Backend {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start(ip: [u8; 4]) -> anyhow::Result<Backend> {
        let listener = TcpListener::bind(SocketAddr::from((ip, 0)))
            .await
            .with_context(|| format!("binding {ip:?}"))?;
        let addr = listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(serve(listener, stop_rx));
        Ok(Backend { addr, stop, task })
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn serve(listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    let body = Bytes::from(addr.to_string());
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let io = tokio::select! {
            accepted = listener.accept() => match accepted { Ok((io, _)) => io, Err(_) => continue },
            _ = stop.changed() => break,
        };
        let (body, mut stop) = (body.clone(), stop.clone());
        conns.spawn(async move {
            let svc = service_fn(move |_req: http::Request<Incoming>| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(http::Response::new(Full::new(body))) }
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
        });
        while conns.try_join_next().is_some() {}
    }
    // Refuse new connections at once, then let open ones finish.
    drop(listener);
    while conns.join_next().await.is_some() {}
}

fn web_service(vip: [u8; 4]) -> anyhow::Result<Service> {
    let ip = std::net::Ipv4Addr::from(vip).to_string();
    let svc = service("shop", "web")
        .cluster_ip(&ip)
        .port_named_target("http", 80, "web")
        .build();
    Ok(Service::try_from(&svc)?)
}

/// One slice per pod, as each backend listens on its own port.
fn pod_slice(pod: usize, addr: SocketAddr, state: PodState) -> anyhow::Result<EndpointSlice> {
    let spec = EndpointSpec::new(&addr.ip().to_string());
    let spec = match state {
        PodState::Ready => spec,
        PodState::Terminating => spec.ready(false).serving(true).terminating(true),
    };
    let slice = endpoint_slice("shop", &format!("web-{pod}"), "web")
        .port(Some("http"), i32::from(addr.port()))
        .endpoint(spec)
        .build();
    Ok(EndpointSlice::try_from(&slice)?)
}

#[derive(Clone, Copy)]
enum PodState {
    Ready,
    Terminating,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    svc_failed: AtomicU64,
    dns_failed: AtomicU64,
}

/// Whether a request succeeded: a 200 whose body arrived whole.
async fn succeeded<B>(
    client: &str,
    result: Result<http::Response<B>, impl std::fmt::Display>,
) -> bool
where
    B: hyper::body::Body,
    B::Error: std::fmt::Display,
{
    match result {
        Ok(r) if r.status() == http::StatusCode::OK => match r.into_body().collect().await {
            Ok(_) => true,
            Err(error) => {
                tracing::debug!(client, %error, "response body failed");
                false
            }
        },
        Ok(r) => {
            tracing::debug!(client, status = %r.status(), "request failed");
            false
        }
        Err(error) => {
            tracing::debug!(client, %error, "request failed");
            false
        }
    }
}

/// Runs the scenario and counts failures.
///
/// # Errors
///
/// When a backend cannot bind its address or the objects do not convert (setup errors, not
/// request failures).
pub async fn run(options: Options) -> anyhow::Result<Summary> {
    let [a, b, c] = options.net;
    let (store, mut writer) = svc_core::store::store(StoreConfig::default());
    let mut pods = Vec::new();
    let mut slices = Vec::new();
    for i in 0..3 {
        let backend = Backend::start([a, b, c, 1 + i as u8]).await?;
        slices.push(pod_slice(i, backend.addr, PodState::Ready)?);
        pods.push((i, backend));
    }
    writer.apply(Event::ReplaceServices {
        services: vec![web_service([a, b, c, 100])?],
        retain: vec![],
    });
    writer.apply(Event::ReplaceSlices {
        slices,
        retain: vec![],
    });

    // svc-tower: per-request balancing over the live endpoints.
    let pools = Pools::new(store.clone());
    let svc_client = BalanceLayer::<Empty<Bytes>>::new(pools)
        .http_version(options.http_version)
        .layer(NoFallback);
    // The resolve-once client: the endpoint list captured now, round-robin, kept-alive
    // connections (hyper-util's pooled client).
    let snapshot = store
        .get(&ServiceKey::new("shop", "web"))
        .context("the service is in the store")?;
    let cached: Arc<[SocketAddr]> = snapshot.ports[0].endpoints.iter().map(|e| e.addr).collect();
    let dns_client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();

    let counters = Arc::new(Counters::default());
    let (done_tx, done) = watch::channel(false);
    let traffic = tokio::spawn({
        let counters = counters.clone();
        async move {
            let next = AtomicUsize::new(0);
            let mut tick = tokio::time::interval(options.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut in_flight = tokio::task::JoinSet::new();
            while !*done.borrow() {
                tick.tick().await;
                counters.sent.fetch_add(1, Ordering::Relaxed);
                let req = http::Request::get("http://web.shop/").body(Empty::new());
                let svc = svc_client.clone();
                let c = counters.clone();
                in_flight.spawn(async move {
                    let Ok(req) = req else { return };
                    if !succeeded("svc", svc.oneshot(req).await).await {
                        c.svc_failed.fetch_add(1, Ordering::Relaxed);
                    }
                });
                let addr = cached[next.fetch_add(1, Ordering::Relaxed) % cached.len()];
                let (dns, c) = (dns_client.clone(), counters.clone());
                in_flight.spawn(async move {
                    let Ok(uri) = format!("http://{addr}/").parse() else {
                        return;
                    };
                    if !succeeded("dns-cached", dns.get(uri).await).await {
                        c.dns_failed.fetch_add(1, Ordering::Relaxed);
                    }
                });
                while in_flight.try_join_next().is_some() {}
            }
            while in_flight.join_next().await.is_some() {}
        }
    });

    // The rollout.
    let phase = options.phase;
    tokio::time::sleep(phase).await;
    for (n, (old_pod, old)) in std::mem::take(&mut pods).into_iter().enumerate() {
        let new = Backend::start([a, b, c, 11 + n as u8]).await?;
        writer.apply(Event::ApplySlice(pod_slice(
            3 + n,
            new.addr,
            PodState::Ready,
        )?));
        tokio::time::sleep(phase).await;
        writer.apply(Event::ApplySlice(pod_slice(
            old_pod,
            old.addr,
            PodState::Terminating,
        )?));
        tokio::time::sleep(phase).await;
        let gone = pod_slice(old_pod, old.addr, PodState::Terminating)?.key;
        writer.apply(Event::DeleteSlice(gone));
        tokio::time::sleep(phase).await;
        old.stop().await;
        tokio::time::sleep(phase).await;
        pods.push((3 + n, new));
    }
    let _ = done_tx.send(true);
    traffic.await?;
    for (_, pod) in pods {
        pod.stop().await;
    }
    Ok(Summary {
        requests: counters.sent.load(Ordering::Relaxed),
        svc_failed: counters.svc_failed.load(Ordering::Relaxed),
        dns_cached_failed: counters.dns_failed.load(Ordering::Relaxed),
    })
}
