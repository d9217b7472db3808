//! Scale test: initial sync of a large cluster from svc-testkit's fake API server over HTTP,
//! then the cost of one EndpointSlice change at two cluster sizes.
//!
//! ```text
//! cargo run --release -p examples --example scale -- --services 10000 --endpoints-per-service 10
//! ```
//!
//! The fake API server runs in a child process (this same binary with `--serve`), so that the
//! peak RSS we report is the client's alone: the kube source, the conversion and the store.
//! Ends with exactly one summary line:
//! `scale services=.. endpoints=.. sync_s=.. peak_rss_mib=.. update_p50_us_at_100=.. update_p50_us_at_10000=.. ratio=..`

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use k8s_openapi::api::discovery::v1 as discoveryv1;
use svc_core::model::EndpointSlice;
use svc_core::source;
use svc_core::store::{Event, Writer};
use svc_core::{ServiceKey, Store, StoreConfig};
use svc_testkit::{endpoint_slice, service, EndpointSpec, FakeApiServer};
use tokio::sync::mpsc;

#[derive(Parser)]
struct Args {
    /// Number of Services (each with one EndpointSlice).
    #[arg(long, default_value_t = 10_000)]
    services: usize,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 10)]
    endpoints_per_service: usize,
    /// Slice changes to time at each size.
    #[arg(long, default_value_t = 2_000)]
    updates: usize,
    /// Internal: serve the synthetic cluster and print the URL.
    #[arg(long, hide = true)]
    serve: bool,
}

fn ip(i: usize, j: usize) -> String {
    let n = i * 64 + j;
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

fn slice_object(i: usize, endpoints: usize, flip: bool) -> discoveryv1::EndpointSlice {
    endpoint_slice(
        &format!("ns-{}", i % 100),
        &format!("svc-{i}-abcde"),
        &format!("svc-{i}"),
    )
    .port(Some("http"), 8080)
    .endpoints((0..endpoints).map(|j| {
        EndpointSpec::new(&ip(i, j))
            .ready(!(flip && j == 0))
            .zone(["a", "b", "c"][j % 3])
            .node(&format!("node-{}", j % 50))
            .target_pod(&format!("svc-{i}-pod-{j}"))
    }))
    .build()
}

fn cluster_ip(i: usize) -> String {
    format!("172.{}.{}.{}", 16 + (i >> 16), (i >> 8) & 255, i & 255)
}

async fn serve(args: &Args) -> anyhow::Result<()> {
    let server = FakeApiServer::start().await;
    for i in 0..args.services {
        server.apply_service(
            service(&format!("ns-{}", i % 100), &format!("svc-{i}"))
                .cluster_ip(&cluster_ip(i))
                .port("http", 80, 8080)
                .build(),
        );
        server.apply_slice(slice_object(i, args.endpoints_per_service, false));
    }
    println!("{}", server.url());
    // Serve until the parent closes our stdin.
    tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await??;
    Ok(())
}

fn peak_rss_mib() -> f64 {
    examples::procfs::status_mib("self", "VmHWM")
}

/// Syncs from the API server at `url`; returns the writer (still ours) and its store.
async fn sync(url: &str) -> anyhow::Result<(Writer, Store, Duration)> {
    let config = kube::Config::new(url.parse()?);
    let client = kube::Client::try_from(config)?;
    let (store, mut writer) = svc_core::store::store(StoreConfig::default());
    let (tx, mut rx) = mpsc::channel(64);
    let start = Instant::now();
    let source = tokio::spawn(source::kube::run(
        client,
        Default::default(),
        store.clone(),
        tx,
    ));
    while !store.is_synced() {
        let event = rx.recv().await.context("source ended")?;
        writer.apply(event);
    }
    let took = start.elapsed();
    source.abort();
    Ok((writer, store, took))
}

/// p50 of the time from applying one slice change to its subscriber holding the new state.
fn update_p50(
    writer: &mut Writer,
    store: &Store,
    services: usize,
    args: &Args,
) -> anyhow::Result<f64> {
    let slices: Vec<[EndpointSlice; 2]> = (0..services.min(64))
        .map(|i| {
            let a = EndpointSlice::try_from(&slice_object(i, args.endpoints_per_service, false))?;
            let b = EndpointSlice::try_from(&slice_object(i, args.endpoints_per_service, true))?;
            Ok([a, b])
        })
        .collect::<Result<_, svc_core::ModelError>>()?;
    let mut watches: Vec<_> = (0..slices.len())
        .map(|i| {
            store.watch_service(&ServiceKey::new(
                format!("ns-{}", i % 100),
                format!("svc-{i}"),
            ))
        })
        .collect();
    let mut samples = Vec::with_capacity(args.updates);
    for n in 0..args.updates {
        let i = n % slices.len();
        let slice = slices[i][(n / slices.len() + 1) % 2].clone();
        let start = Instant::now();
        writer.apply(Event::ApplySlice(slice));
        let rx = &mut watches[i];
        if !rx.has_changed()? {
            bail!("subscriber was not notified");
        }
        let ready = rx
            .borrow_and_update()
            .as_ref()
            .map(|s| s.ports[0].endpoints[0].endpoint.conditions.ready);
        samples.push(start.elapsed());
        if ready.is_none() {
            bail!("service vanished");
        }
    }
    samples.sort_unstable();
    Ok(samples[samples.len() / 2].as_secs_f64() * 1e6)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.serve {
        return serve(&args).await;
    }
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--serve", "--services", &args.services.to_string()])
        .args([
            "--endpoints-per-service",
            &args.endpoints_per_service.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut url = String::new();
    BufReader::new(child.stdout.take().context("child stdout")?).read_line(&mut url)?;
    let url = url.trim().to_string();
    if url.is_empty() {
        bail!("the API server child did not start");
    }
    eprintln!("fake API server with {} services at {url}", args.services);

    let (mut writer, store, took) = sync(&url).await?;
    let rss = peak_rss_mib();
    let endpoints: usize = store
        .services()
        .iter()
        .map(|s| s.ports[0].endpoints.len())
        .sum();
    eprintln!(
        "synced {} services / {endpoints} endpoints in {:.3}s, peak RSS {rss:.1} MiB",
        store.len(),
        took.as_secs_f64()
    );
    drop(child.stdin.take());
    let _ = child.wait();

    let at_large = update_p50(&mut writer, &store, args.services, &args)?;
    // The same measurement on a store holding only the first 100 Services.
    let (small_store, mut small_writer) = svc_core::store::store(StoreConfig::default());
    let keep = |key: &ServiceKey| {
        key.name
            .strip_prefix("svc-")
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n < 100)
    };
    let services: Vec<_> = store
        .services()
        .iter()
        .filter(|s| keep(&s.service.key))
        .map(|s| (*s.service).clone())
        .collect();
    let slices: Vec<_> = (0..100.min(args.services))
        .map(|i| EndpointSlice::try_from(&slice_object(i, args.endpoints_per_service, false)))
        .collect::<Result<_, _>>()?;
    small_writer.apply(Event::ReplaceServices {
        services,
        retain: vec![],
    });
    small_writer.apply(Event::ReplaceSlices {
        slices,
        retain: vec![],
    });
    let at_small = update_p50(&mut small_writer, &small_store, 100, &args)?;
    println!(
        "scale services={} endpoints={endpoints} sync_s={:.3} peak_rss_mib={rss:.1} update_p50_us_at_100={at_small:.2} update_p50_us_at_{}={at_large:.2} ratio={:.2}",
        store.len(),
        took.as_secs_f64(),
        args.services,
        at_large / at_small
    );
    Ok(())
}
