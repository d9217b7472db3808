//! Scoped, on-demand discovery against svc-testkit's fake API server holding many Services:
//! what an app that uses a handful of them holds and costs, compared with cluster-wide mode.
//!
//! ```text
//! cargo run --release -p examples --example scoped -- --services 10000 --used 5
//! ```
//!
//! Three processes, so that each figure is one side's alone: the fake API server (this binary
//! with `--serve`), then one client per mode (`--client on-demand|cluster`). A client measures
//! its resident memory before it creates the kube client and the store, and again once it is
//! ready (on demand: after the first resolution of `--used` names, each timed from the call
//! to `Store::ready_for` to its return; cluster-wide: after the initial sync); `rss_mib` is
//! the difference, i.e. the discovery state and its machinery. Open watches are counted by
//! the server while the client holds its state, once the count has held for 0.5 s (a watch
//! opens just after its list). Ends with exactly one line:
//! `scoped services=<n> used=<n> watches=<n> rss_mib=<f> first_resolve_ms_p50=<f> cluster_wide_rss_mib=<f> cluster_wide_watches=<n>`

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use svc_core::source::kube::{run, Config, OnDemand, Scope};
use svc_core::StoreConfig;
use svc_testkit::{endpoint_slice, service, EndpointSpec, FakeApiServer};
use tokio::sync::mpsc;

#[derive(Parser)]
struct Args {
    /// Number of Services in the fake cluster (each with one EndpointSlice).
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 10)]
    endpoints_per_service: usize,
    /// How many Services the app uses (resolves) in on-demand mode.
    #[arg(long, default_value_t = 5)]
    used: usize,
    /// Internal: serve the synthetic cluster, print the URL, answer `watches` on stdin.
    #[arg(long, hide = true)]
    serve: bool,
    /// Internal: run one client (`on-demand` or `cluster`) against this URL.
    #[arg(long, hide = true)]
    client: Option<String>,
    /// Internal: the server's URL for `--client`.
    #[arg(long, hide = true)]
    url: Option<String>,
}

fn ip(i: usize, j: usize) -> String {
    let n = i * 64 + j;
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

fn cluster_ip(i: usize) -> String {
    format!("172.{}.{}.{}", 16 + (i >> 16), (i >> 8) & 255, i & 255)
}

async fn serve(args: &Args) -> anyhow::Result<()> {
    let server = FakeApiServer::start().await;
    for i in 0..args.services {
        let ns = format!("ns-{}", i % 100);
        let name = format!("svc-{i}");
        server.apply_service(
            service(&ns, &name)
                .cluster_ip(&cluster_ip(i))
                .port("http", 80, 8080)
                .build(),
        );
        server.apply_slice(
            endpoint_slice(&ns, &format!("{name}-abcde"), &name)
                .port(Some("http"), 8080)
                .endpoints((0..args.endpoints_per_service).map(|j| {
                    EndpointSpec::new(&ip(i, j))
                        .zone(["a", "b", "c"][j % 3])
                        .node(&format!("node-{}", j % 50))
                        .target_pod(&format!("{name}-pod-{j}"))
                }))
                .build(),
        );
    }
    println!("{}", server.url());
    // Answer `watches` with the number of open watch streams until stdin closes.
    let lines = tokio::task::spawn_blocking(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            match line.as_deref() {
                Ok("watches") => {
                    println!("{}", server.open_watches());
                    let _ = std::io::stdout().flush();
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    lines.await?;
    Ok(())
}

fn rss_mib() -> f64 {
    examples::procfs::status_mib("self", "VmRSS")
}

/// One client: prints `ready <rss_mib> <p50_ms>` once it holds its state, then holds it until
/// stdin closes.
async fn client(args: &Args, mode: &str, url: &str) -> anyhow::Result<()> {
    let before = rss_mib();
    let client = kube::Client::try_from(kube::Config::new(url.parse()?))?;
    let (store, writer) = svc_core::store::store(StoreConfig::default());
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(writer.run(rx));
    let scope = match mode {
        "on-demand" => Scope::OnDemand(OnDemand::default()),
        "cluster" => Scope::Cluster,
        other => bail!("unknown mode {other}"),
    };
    tokio::spawn(run(
        client,
        Config::default().scope(scope),
        store.clone(),
        tx,
    ));
    let mut samples = Vec::new();
    if mode == "cluster" {
        store.wait_until_ready().await;
    } else {
        store.wait_until_ready().await;
        // Spread over namespaces, as an app's dependencies would be.
        for k in 0..args.used {
            let i = (k * 7919) % args.services;
            let host = format!("svc-{i}.ns-{}", i % 100);
            let start = Instant::now();
            store
                .ready_for(&host, Duration::from_secs(10))
                .await
                .with_context(|| format!("resolving {host}"))?;
            samples.push(start.elapsed().as_secs_f64() * 1e3);
            let snap = store.resolve_name(&host).context("resolved but absent")?;
            anyhow::ensure!(
                snap.ports[0].endpoints.len() == args.endpoints_per_service,
                "{host}: endpoints missing"
            );
        }
    }
    samples.sort_by(f64::total_cmp);
    let p50 = samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN);
    eprintln!(
        "{mode}: services held={} rss before={before:.1} MiB after={:.1} MiB; first resolutions (ms) {samples:.2?}",
        store.len(),
        rss_mib()
    );
    println!("ready {:.2} {p50:.3}", rss_mib() - before);
    let _ = std::io::stdout().flush();
    tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await??;
    Ok(())
}

struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Proc {
    fn spawn(args: &[String]) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("stdout")?);
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("child exited early");
        }
        Ok(line.trim().to_owned())
    }

    fn ask(&mut self, question: &str) -> anyhow::Result<String> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        writeln!(stdin, "{question}")?;
        stdin.flush()?;
        self.line()
    }

    fn finish(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        self.child.wait()?;
        Ok(())
    }
}

/// Runs one client mode; returns (rss_mib, p50_ms, open watches while it holds its state).
fn measure(
    args: &Args,
    server: &mut Proc,
    url: &str,
    mode: &str,
) -> anyhow::Result<(f64, f64, u64)> {
    let mut client = Proc::spawn(&[
        "--client".into(),
        mode.into(),
        "--url".into(),
        url.into(),
        "--services".into(),
        args.services.to_string(),
        "--used".into(),
        args.used.to_string(),
        "--endpoints-per-service".into(),
        args.endpoints_per_service.to_string(),
    ])?;
    let ready = client.line()?;
    let mut parts = ready.split_whitespace().skip(1);
    let rss: f64 = parts.next().context("rss")?.parse()?;
    let p50: f64 = parts.next().context("p50")?.parse()?;
    // A watch opens just after its list is applied: count once the number holds for 0.5 s.
    let mut watches: u64 = server.ask("watches")?.parse()?;
    let mut stable_since = Instant::now();
    let started = Instant::now();
    while stable_since.elapsed() < Duration::from_millis(500)
        && started.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(50));
        let now: u64 = server.ask("watches")?.parse()?;
        if now != watches {
            watches = now;
            stable_since = Instant::now();
        }
    }
    client.finish()?;
    // Let the server see the client's watches close before the next mode counts its own.
    for _ in 0..100 {
        if server.ask("watches")? == "0" {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((rss, p50, watches))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    if args.serve {
        return runtime.block_on(serve(&args));
    }
    if let Some(mode) = &args.client {
        let url = args.url.clone().context("--url")?;
        return runtime.block_on(client(&args, mode, &url));
    }
    let mut server = Proc::spawn(&[
        "--serve".into(),
        "--services".into(),
        args.services.to_string(),
        "--endpoints-per-service".into(),
        args.endpoints_per_service.to_string(),
    ])?;
    let url = server.line()?;
    let (rss, p50, watches) = measure(&args, &mut server, &url, "on-demand")?;
    let (cluster_rss, _, cluster_watches) = measure(&args, &mut server, &url, "cluster")?;
    server.finish()?;
    println!(
        "scoped services={} used={} watches={watches} rss_mib={rss:.2} first_resolve_ms_p50={p50:.3} cluster_wide_rss_mib={cluster_rss:.2} cluster_wide_watches={cluster_watches}",
        args.services, args.used
    );
    Ok(())
}
