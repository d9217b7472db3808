//! How evenly each client path spreads requests over equal pods, how little a slow pod gets,
//! and how fast a rejoining pod gets traffic: the balancing issue's scenarios through
//! svc-proxy (TCP and HTTP mode), `SvcConnector` with hyper-util's default client,
//! svc-tower's layer and tonic over the layer.
//!
//! ```text
//! cargo run --release -p examples --example balance-spread
//! ```
//!
//! Runs standalone on loopback (127.120-124.0.x): 3 pods per path, svc-testkit's fake
//! Kubernetes API server, svc-proxy in-process. Prints a table per path, then one line with
//! the min/max shares over every path (the worst path for the slow and rejoining pod).

use examples::spread::{run_path, summary, Options, Path};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut reports = Vec::new();
    println!(
        "{:<44} {:>20} {:>20} {:>9} {:>9} {:>6} {:>7}",
        "path", "serial shares", "concurrent shares", "slow conc", "slow ser", "rejoin", "share"
    );
    // SPREAD_PATHS=0,2 runs only those paths (in Path::ALL's order).
    let only: Option<Vec<usize>> = std::env::var("SPREAD_PATHS")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect());
    for (i, path) in Path::ALL.into_iter().enumerate() {
        if only.as_ref().is_some_and(|o| !o.contains(&i)) {
            continue;
        }
        let opts = Options {
            net: [127, 120 + i as u8, 0],
            ..Options::default()
        };
        let r = run_path(path, &opts).await?;
        let fmt = |v: &[f64]| {
            v.iter()
                .map(|s| format!("{s:.2}"))
                .collect::<Vec<_>>()
                .join("/")
        };
        println!(
            "{:<44} {:>20} {:>20} {:>9.3} {:>9.3} {:>6} {:>7.3}",
            path.name(),
            fmt(&r.serial),
            fmt(&r.concurrent),
            r.slow_concurrent,
            r.slow_serial,
            r.rejoin_first_pick,
            r.rejoin_share
        );
        if std::env::var_os("SPREAD_VERBOSE").is_some() {
            println!(
                "    concurrent run: median latency {:?}, per pod {:?}",
                r.concurrent_latency, r.concurrent_pod_latency
            );
        }
        reports.push(r);
    }
    println!("{}", summary(&reports));
    Ok(())
}
