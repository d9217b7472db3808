//! Rolling restart: zero failed requests through svc-tower, while a client that resolved the
//! Service once (as a DNS cache does) fails as the old pods go away.
//!
//! ```text
//! cargo run --release -p examples --example rolling-restart
//! ```
//!
//! Needs no cluster: 3 backends on 127.0.40.x are replaced one by one (new pod ready, old one
//! terminating, removed, stopped) in an in-process store, while both clients send a steady
//! stream of requests. Prints exactly one line:
//! `rolling-restart requests=<n> svc_failed=<n> dns_cached_failed=<n>` (requests per client).
//! Set `RUST_LOG=debug` to see each failure on stderr.

use std::time::Duration;

use clap::Parser;
use examples::rolling::{self, Options};
use svc_tower::layer::HttpVersion;

/// Rolling-restart scenario.
#[derive(Parser)]
struct Args {
    /// Milliseconds between two requests of each client.
    #[arg(long, env = "ROLLING_INTERVAL_MS", default_value_t = 2)]
    interval_ms: u64,
    /// Milliseconds each phase of a pod replacement lasts.
    #[arg(long, env = "ROLLING_PHASE_MS", default_value_t = 300)]
    phase_ms: u64,
    /// svc-tower's client speaks HTTP/2 (one multiplexed connection per pod) instead of
    /// HTTP/1.1.
    #[arg(long, env = "ROLLING_HTTP2")]
    http2: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()),
        )
        .init();
    let args = Args::parse();
    let summary = rolling::run(Options {
        interval: Duration::from_millis(args.interval_ms.max(1)),
        phase: Duration::from_millis(args.phase_ms),
        http_version: if args.http2 {
            HttpVersion::Http2
        } else {
            HttpVersion::Http1
        },
        ..Options::default()
    })
    .await?;
    println!("{summary}");
    Ok(())
}
