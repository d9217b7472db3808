//! Throughput and latency through svc-tower's request layer against a plain hyper client to a
//! fixed address, on the same backends in the same run; and the cost of one connect through
//! svc-tower's connector against hickory-resolver's resolve-then-connect.
//!
//! ```text
//! cargo run --release -p examples --example tower-bench -- --seconds 5 --concurrency 32 --rounds 3
//! ```
//!
//! Backends are in-process hyper servers on 127.0.62.1-3 (HTTP/1.1 and HTTP/2), so client
//! and servers share the machine's cores: compare the ratios, not the absolute numbers.
//! The plain client sends to 127.0.62.1 only; the layer balances over all three.
//! For connects, hickory answers `localhost` from its hosts table (no network), and both
//! connect to the same backend on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use svc_core::source::manifests;
use svc_core::store::StoreConfig;
use svc_testkit::{spawn_http_backend, Backend};
use svc_tower::balance::Pools;
use svc_tower::connect::SvcConnector;
use svc_tower::layer::{BalanceLayer, HttpVersion, NoFallback};
use tower::{Layer, Service, ServiceExt};

type Body = Empty<Bytes>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
struct Args {
    /// Seconds each measurement runs.
    #[arg(long, env = "BENCH_SECONDS", default_value_t = 5)]
    seconds: u64,
    /// Concurrent requests.
    #[arg(long, env = "BENCH_CONCURRENCY", default_value_t = 32)]
    concurrency: usize,
    /// Rounds; each client's median round is reported.
    #[arg(long, env = "BENCH_ROUNDS", default_value_t = 3)]
    rounds: usize,
    /// Connects measured for the connect-cost comparison.
    #[arg(long, env = "BENCH_CONNECTS", default_value_t = 2000)]
    connects: usize,
}

fn manifests(backends: &[SocketAddr], name: &str, vip: &str) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: bench}}\n\
         spec: {{clusterIP: {vip}, ports: [{{name: http, port: 80, targetPort: http}}]}}\n"
    );
    for (i, a) in backends.iter().enumerate() {
        yaml += &format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}-{i}, namespace: bench, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: ['{}']}}]\n",
            a.port(),
            a.ip()
        );
    }
    yaml
}

struct Result {
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
}

/// Runs `concurrency` loops of requests for `seconds`.
async fn load<S, B>(client: S, uri: &str, h2: bool, args: &Args) -> Result
where
    S: Service<http::Request<Body>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: hyper::body::Body + Send,
    B::Data: Send,
{
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let uri: Arc<str> = uri.into();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (client, uri) = (client.clone(), uri.clone());
        tasks.spawn(async move {
            let (mut lat, mut errors) = (Vec::with_capacity(100_000), 0u64);
            while Instant::now() < deadline {
                let mut req = http::Request::get(&*uri).body(Body::new()).expect("valid");
                if h2 {
                    *req.version_mut() = http::Version::HTTP_2;
                }
                let start = Instant::now();
                let response = client.clone().oneshot(req).await.ok();
                let ok = match response {
                    Some(r) => r.into_body().collect().await.is_ok(),
                    None => false,
                };
                if ok {
                    lat.push(start.elapsed());
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        });
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    while let Some(Ok((lat, e))) = tasks.join_next().await {
        all.extend(lat);
        errors += e;
    }
    all.sort_unstable();
    let q = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Result {
        rps: all.len() as f64 / args.seconds as f64,
        p50: q(0.50),
        p99: q(0.99),
        errors,
    }
}

/// The run with the median throughput.
fn median(mut runs: Vec<Result>) -> Result {
    runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    runs.swap_remove(runs.len() / 2)
}

fn report(proto: &str, client: &str, r: &Result) {
    println!(
        "layer-bench proto={proto} client={client} rps={:.0} p50_us={} p99_us={} errors={}",
        r.rps,
        r.p50.as_micros(),
        r.p99.as_micros(),
        r.errors
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut backends: Vec<Backend> = Vec::new();
    for i in 1..=3u8 {
        backends.push(spawn_http_backend(([127, 0, 62, i], 0).into()).await?);
    }
    let local = spawn_http_backend(([127, 0, 0, 1], 0).into()).await?;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr()).collect();
    let (store, mut writer) = svc_core::store::store(StoreConfig::default());
    // One document set: the manifests source replaces the whole store with each load.
    let yaml = manifests(&addrs, "web", "127.0.62.100")
        + "---\n"
        + &manifests(&[local.addr()], "local", "127.0.62.101");
    for event in manifests::parse_str(&yaml)?.into_events() {
        writer.apply(event);
    }
    let pools = Pools::new(store.clone());

    for (proto, h2) in [("http1", false), ("http2", true)] {
        let plain: Client<_, Body> = Client::builder(TokioExecutor::new())
            .http2_only(h2)
            .build_http();
        let fixed = format!("http://{}/", addrs[0]);
        // The same fan-out as the layer, without it: round-robin over the three backends.
        let rr: Client<_, Body> = Client::builder(TokioExecutor::new())
            .http2_only(h2)
            .build_http();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let targets: Arc<[SocketAddr]> = addrs.clone().into();
        let round_robin = tower::service_fn(move |mut req: http::Request<Body>| {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % targets.len();
            *req.uri_mut() = format!("http://{}/", targets[i]).parse().expect("valid");
            rr.request(req)
        });
        let version = if h2 {
            HttpVersion::Http2
        } else {
            HttpVersion::Http1
        };
        let layer = BalanceLayer::<Body>::new(pools.clone())
            .http_version(version)
            .layer(NoFallback);
        // Interleave the clients over several rounds and keep the median of each, so that
        // noise from other work on the machine hits them alike.
        let (mut p, mut r, mut l) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.rounds.max(1) {
            p.push(load(plain.clone(), &fixed, h2, &args).await);
            r.push(load(round_robin.clone(), "http://unused/", h2, &args).await);
            l.push(load(layer.clone(), "http://web.bench/", h2, &args).await);
        }
        let (p, r, l) = (median(p), median(r), median(l));
        let shares: Vec<u64> = pools
            .all()
            .iter()
            .filter(|pool| pool.service().name.as_ref() == "web")
            .flat_map(|pool| pool.stats())
            .map(|s| s.requests)
            .collect();
        println!("layer-bench proto={proto} layer_requests_per_endpoint_cumulative={shares:?}");
        report(proto, "plain-hyper-fixed-address", &p);
        report(proto, "plain-hyper-round-robin-3", &r);
        report(proto, "svc-tower-layer", &l);
        println!(
            "layer-bench proto={proto} throughput_ratio_vs_fixed={:.2} p99_ratio_vs_fixed={:.2} \
             throughput_ratio_vs_round_robin={:.2}",
            l.rps / p.rps,
            l.p99.as_secs_f64() / p.p99.as_secs_f64(),
            l.rps / r.rps,
        );
    }

    // Connect cost.
    let port = local.addr().port();
    let mut connector = SvcConnector::with_pools(pools);
    let uri: http::Uri = "http://local.bench/".parse()?;
    connector.ready().await.map_err(|e| anyhow::anyhow!(e))?;
    let measure = |d: Duration| d.as_nanos() as f64 / args.connects as f64 / 1000.0;
    let resolver = hickory_resolver::TokioResolver::builder_tokio()?.build()?;
    let (mut ours, mut hickory) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds.max(1) {
        let start = Instant::now();
        for _ in 0..args.connects {
            let io = connector
                .call(uri.clone())
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            drop(io);
        }
        ours.push(measure(start.elapsed()));
        let start = Instant::now();
        for _ in 0..args.connects {
            let ip = resolver
                .lookup_ip("localhost.")
                .await?
                .iter()
                .find(|ip| ip.is_ipv4())
                .ok_or_else(|| anyhow::anyhow!("no IPv4 for localhost"))?;
            let io = tokio::net::TcpStream::connect((ip, port)).await?;
            drop(io);
        }
        hickory.push(measure(start.elapsed()));
    }
    ours.sort_by(f64::total_cmp);
    hickory.sort_by(f64::total_cmp);
    let (ours, hickory) = (ours[ours.len() / 2], hickory[hickory.len() / 2]);
    println!("connect-bench svc_tower_us={ours:.1} hickory_resolve_then_connect_us={hickory:.1} ratio={:.2}", ours / hickory);
    for b in backends.iter().chain([&local]) {
        b.shutdown().await;
    }
    Ok(())
}
