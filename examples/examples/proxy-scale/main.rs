//! Scale test of svc-proxy: the release binary, in a process of its own, against svc-testkit's
//! fake API server holding N Services × M endpoints on loopback ClusterIPs.
//!
//! ```text
//! cargo run --release -p examples --example proxy-scale -- --services 10000 --endpoints-per-service 10 --threads 4
//! ```
//!
//! It builds `svc-proxy` first (`cargo build --release -p svc-proxy`), so the binary measured is
//! the current one. No root is needed: every address is on 127.0.0.0/8 (ClusterIPs from
//! 127.200.0.0, endpoints from 127.220.0.0, nothing beyond 127.250.255.255).
//!
//! Measured:
//! - `ready_s`: from spawning the proxy to `/readyz` answering 200 (includes the list of N
//!   Services and N EndpointSlices over HTTP). At that moment a sample of 300 ClusterIPs must
//!   accept connections; after the run, every one of the N is checked as well.
//! - `fds`: descriptors the proxy holds at idle.
//! - `peak_rss_mib`: the proxy's VmHWM after the start, the adds, and scrapes of `/metrics` and
//!   the unfiltered `/debug/services`. Then every ClusterIP gets a connection, which builds
//!   every Service port's balancer (they are built on first use); the VmHWM after that goes
//!   to stderr.
//! - `metrics_bytes`: `/metrics` after the sample above and the adds (a few hundred Service
//!   ports have had traffic); the size once every Service had a connection goes to stderr.
//! - `add_ms_p50_*`: a Service created through the API (its EndpointSlice first) → the first
//!   connection to its ClusterIP echoed by the backend, p50, on a proxy serving 10 Services and
//!   one serving N. Both proxies run side by side and the adds alternate between them, after
//!   one untimed add each. `ratio` = N ÷ small.
//! - Then the same N Services from a manifests file: time to ready, and the sample (stderr).
//!
//! Ends with exactly one summary line:
//! `proxy-scale services=.. endpoints=.. ready_s=.. fds=.. peak_rss_mib=.. metrics_bytes=.. add_ms_p50_small=.. add_ms_p50_n=.. ratio=..`

mod cluster;
mod probe;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

use cluster::{Cluster, Range};
use probe::ProxyProcess;

#[derive(Parser, Clone)]
struct Args {
    /// Services in the large cluster (one port each, one EndpointSlice each).
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 10)]
    endpoints_per_service: usize,
    /// The proxy's `--threads`.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Services in the small cluster the add cost is compared with.
    #[arg(long, default_value_t = 10)]
    small: usize,
    /// Services added (and timed) on each proxy.
    #[arg(long, default_value_t = 40)]
    adds: usize,
    /// The Service port every ClusterIP listens on.
    #[arg(long, default_value_t = 18080)]
    port: u16,
    /// Use this svc-proxy binary instead of building one.
    #[arg(long)]
    proxy_bin: Option<std::path::PathBuf>,
}

/// ClusterIPs sampled at the moment `/readyz` turns 200.
const SAMPLE: usize = 300;

fn p50(mut samples: Vec<Duration>) -> f64 {
    samples.sort_unstable();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

/// A proxy started on its own cluster, measured until ready.
struct Started {
    cluster: Cluster,
    proxy: ProxyProcess,
    ready_s: f64,
    fds: usize,
}

async fn start(
    args: &Args,
    bin: &std::path::Path,
    services: usize,
    range: Range,
) -> anyhow::Result<Started> {
    let cluster = Cluster::start(services, args.endpoints_per_service, args.port, range).await;
    eprintln!(
        "[{}] fake API server with {services} Services × {} endpoints at {}",
        range.name,
        args.endpoints_per_service,
        cluster.server.url()
    );
    let started = Instant::now();
    let mut proxy = ProxyProcess::spawn(bin, &cluster, args.threads, range)?;
    proxy.wait_ready(Duration::from_secs(120)).await?;
    let ready_s = started.elapsed().as_secs_f64();
    let sample: Vec<SocketAddr> = (0..SAMPLE.min(services))
        .map(|k| cluster.vip(k * services / SAMPLE.min(services)))
        .collect();
    let accepting = probe::count_accepting(&sample).await;
    let fds = proxy.fds();
    eprintln!(
        "[{}] ready after {ready_s:.3}s; {accepting}/{} sampled ClusterIPs accepted at that moment; {fds} fds; RSS {:.1} MiB (peak {:.1})",
        range.name,
        sample.len(),
        proxy.rss_mib(),
        proxy.peak_rss_mib()
    );
    if accepting != sample.len() {
        eprintln!(
            "[{}] WARNING: /readyz was 200 while some ClusterIPs refused connections",
            range.name
        );
    }
    Ok(Started {
        cluster,
        proxy,
        ready_s,
        fds,
    })
}

/// Times `--adds` Service adds on each proxy, alternating between them (so that the machine's
/// load drifts over both alike), after one untimed add each.
async fn time_adds(
    args: &Args,
    small: &Started,
    large: &Started,
    echo: SocketAddr,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let (mut on_small, mut on_large) = (Vec::new(), Vec::new());
    for k in 0..=args.adds {
        let s = small.cluster.time_add(k, echo).await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
        let l = large.cluster.time_add(k, echo).await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
        if k > 0 {
            on_small.push(s);
            on_large.push(l);
        }
    }
    eprintln!(
        "add → first echoed connection, p50 over {} adds each: {:.2} ms with {} Services, {:.2} ms with {}",
        args.adds,
        p50(on_small.clone()),
        args.small,
        p50(on_large.clone()),
        args.services
    );
    Ok((on_small, on_large))
}

/// `/metrics` (bytes, slowest of 3 scrapes), `/debug/services` (endpoints listed), then every
/// ClusterIP once.
async fn scrape(large: &Started, services: usize) -> anyhow::Result<(usize, usize, f64)> {
    let proxy = &large.proxy;
    let mut metrics_bytes = 0;
    let mut scrape_ms = 0f64;
    for _ in 0..3 {
        let t = Instant::now();
        let (status, body) = proxy.get("/metrics").await?;
        scrape_ms = scrape_ms.max(t.elapsed().as_secs_f64() * 1e3);
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        metrics_bytes = body.len();
    }
    let t = Instant::now();
    let (_, dump) = proxy.get("/debug/services").await?;
    let endpoints = String::from_utf8_lossy(&dump)
        .matches("\"address\":")
        .count();
    eprintln!(
        "[n] /metrics {metrics_bytes} bytes (slowest of 3 scrapes {scrape_ms:.1} ms); /debug/services {} bytes in {:.1} ms, {endpoints} endpoints",
        dump.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    drop(dump);
    let peak_rss_mib = proxy.peak_rss_mib();
    eprintln!("[n] peak RSS {peak_rss_mib:.1} MiB");
    let all: Vec<SocketAddr> = (0..services).map(|i| large.cluster.vip(i)).collect();
    let accepting = probe::count_accepting(&all).await;
    // The proxy works through the accepted connections after the clients are done: wait
    // until every Service port's series is there (or the count stops growing).
    let (mut last, mut still) = (0, 0);
    let (bytes, ms, ports) = loop {
        let t = Instant::now();
        let (_, body) = proxy.get("/metrics").await?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let text = String::from_utf8_lossy(&body);
        let ports = text
            .lines()
            .filter(|l| l.starts_with("svc_proxy_connections_total{"))
            .count();
        still = if ports == last { still + 1 } else { 0 };
        if ports >= services || still >= 6 {
            break (body.len(), ms, ports);
        }
        last = ports;
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "[n] every ClusterIP: {accepting}/{services} accepted; /metrics once {ports} Service ports had a connection: {bytes} bytes in {ms:.1} ms; peak RSS {:.1} MiB",
        proxy.peak_rss_mib()
    );
    Ok((metrics_bytes, endpoints, peak_rss_mib))
}

/// The same N Services from a manifests file: time to `/readyz` 200, and the ClusterIP sample
/// at that moment.
async fn manifests_ready(args: &Args, bin: &std::path::Path) -> anyhow::Result<()> {
    let range = Range::LARGE;
    let yaml = cluster::manifests(args.services, args.endpoints_per_service, args.port, range);
    let started = Instant::now();
    let mut proxy = ProxyProcess::spawn_manifests(bin, &yaml, args.threads, range)?;
    proxy.wait_ready(Duration::from_secs(120)).await?;
    let ready_s = started.elapsed().as_secs_f64();
    let sample: Vec<SocketAddr> = (0..SAMPLE.min(args.services))
        .map(|k| {
            cluster::vip(
                range,
                args.port,
                k * args.services / SAMPLE.min(args.services),
            )
        })
        .collect();
    let accepting = probe::count_accepting(&sample).await;
    eprintln!(
        "[manifests] ready after {ready_s:.3}s; {accepting}/{} sampled ClusterIPs accepted at that moment; {} fds; peak RSS {:.1} MiB",
        sample.len(),
        proxy.fds(),
        proxy.peak_rss_mib()
    );
    proxy.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.services == 0 || args.small == 0 || args.adds == 0 {
        bail!("--services, --small and --adds must be at least 1");
    }
    let bin = match &args.proxy_bin {
        Some(p) => p.clone(),
        None => probe::build_proxy()?,
    };
    let echo = svc_testkit::spawn_tcp_echo("127.240.0.1:0".parse()?)
        .await
        .context("starting the echo backend")?;
    let small = start(&args, &bin, args.small, Range::SMALL).await?;
    let large = start(&args, &bin, args.services, Range::LARGE).await?;
    let (add_small, add_n) = time_adds(&args, &small, &large, echo.addr()).await?;
    let (metrics_bytes, endpoints, peak_rss_mib) = scrape(&large, args.services).await?;
    small.proxy.stop().await;
    large.proxy.stop().await;
    manifests_ready(&args, &bin).await?;
    let (add_small, add_n) = (p50(add_small), p50(add_n));
    println!(
        "proxy-scale services={} endpoints={endpoints} ready_s={:.3} fds={} peak_rss_mib={peak_rss_mib:.1} metrics_bytes={metrics_bytes} add_ms_p50_small={add_small:.2} add_ms_p50_n={add_n:.2} ratio={:.2}",
        args.services,
        large.ready_s,
        large.fds,
        add_n / add_small
    );
    Ok(())
}
