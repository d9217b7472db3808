//! The demo's backends: three HTTP servers on 127.0.0.11-13:8080 that answer with their own
//! address, and UDP echo servers on 127.0.0.11-12:9053.
//!
//! - `--flip DIR` copies the demo manifests (`examples/demo`) into DIR and flips 127.0.0.13's
//!   readiness there every `--every` seconds, so that a proxy serving DIR shows readiness
//!   changes taking effect.
//! - `--traffic URL` sends a request to URL every 100 ms (a new connection each time) and
//!   prints, every two seconds, which backends answered.
//! - Anything after `--` is a command to run once the manifests are in place (the proxy),
//!   stopped with the demo.
//!
//! The whole demo in one command:
//!
//! ```text
//! cargo run -p examples --example demo-backends -- --flip target/demo --traffic http://127.0.0.77:8000/ \
//!     -- cargo run -q -p svc-proxy -- --manifests target/demo --dns-addr 127.0.0.1:5353 --nodeport-addr 127.0.0.1
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Copy the demo manifests into this directory and flip 127.0.0.13's readiness there.
    #[arg(long, env = "SVC_DEMO_FLIP")]
    flip: Option<PathBuf>,
    /// The demo manifests to copy.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/demo"))]
    manifests: PathBuf,
    /// Seconds between readiness flips.
    #[arg(long, default_value_t = 10)]
    every: u64,
    /// Send requests to this URL (`http://host:port/`) and print who answered.
    #[arg(long)]
    traffic: Option<String>,
    /// A command to run once the manifests are in place (e.g. the proxy).
    #[arg(last = true)]
    command: Vec<String>,
}

const NOT_READY: &str = r#"{addresses: ["127.0.0.13"], conditions: {ready: false}}"#;
const READY: &str = r#"{addresses: ["127.0.0.13"], conditions: {ready: true}}"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut backends = Vec::new();
    for i in 11..=13 {
        let addr: SocketAddr = format!("127.0.0.{i}:8080").parse()?;
        backends.push(
            svc_testkit::spawn_http_backend(addr)
                .await
                .with_context(|| format!("http backend on {addr}"))?,
        );
        println!("http backend on {addr}");
    }
    for i in 11..=12 {
        let addr: SocketAddr = format!("127.0.0.{i}:9053").parse()?;
        backends.push(
            svc_testkit::spawn_udp_echo(addr)
                .await
                .with_context(|| format!("udp echo on {addr}"))?,
        );
        println!("udp echo on {addr}");
    }
    if let Some(dir) = &args.flip {
        copy_manifests(&args.manifests, dir)?;
        println!(
            "demo manifests copied to {}; flipping 127.0.0.13's readiness every {}s",
            dir.display(),
            args.every
        );
    }
    let _child = match args.command.split_first() {
        Some((cmd, rest)) => {
            println!("running: {}", args.command.join(" "));
            let child = tokio::process::Command::new(cmd)
                .args(rest)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("running {cmd}"))?;
            Some(child)
        }
        None => None,
    };
    if let Some(url) = args.traffic.clone() {
        tokio::spawn(traffic(url));
    }
    let Some(dir) = args.flip else {
        println!("serving; Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
        return Ok(());
    };
    let mut ready = false;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(args.every)) => {}
        }
        ready = !ready;
        let (from, to) = if ready {
            (NOT_READY, READY)
        } else {
            (READY, NOT_READY)
        };
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let text = std::fs::read_to_string(&path)?;
            if text.contains(from) {
                // Write then rename, so that the proxy never reads half a file.
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, text.replace(from, to))?;
                std::fs::rename(&tmp, &path)?;
            }
        }
        println!(
            "127.0.0.13 is now {}",
            if ready { "ready" } else { "not ready" }
        );
    }
}

fn copy_manifests(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = path.file_name().context("file name")?;
            std::fs::copy(&path, to.join(name))?;
        }
    }
    Ok(())
}

/// Requests `url` every 100 ms over a fresh connection and prints who answered, every 2 s.
async fn traffic(url: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(authority) = url
        .strip_prefix("http://")
        .map(|u| u.split('/').next().unwrap_or(u).to_string())
    else {
        eprintln!("--traffic needs an http:// URL");
        return;
    };
    let mut counts: std::collections::BTreeMap<String, u32> = Default::default();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for i in 1u64.. {
        tick.tick().await;
        let answer = async {
            let mut s = tokio::net::TcpStream::connect(&authority).await.ok()?;
            s.write_all(format!("GET / HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes())
                .await
                .ok()?;
            let mut resp = String::new();
            s.read_to_string(&mut resp).await.ok()?;
            resp.split_once("\r\n\r\n")
                .map(|(_, body)| body.to_string())
        };
        let who = match tokio::time::timeout(Duration::from_secs(2), answer).await {
            Ok(Some(body)) => body,
            _ => "(failed)".to_string(),
        };
        *counts.entry(who).or_default() += 1;
        if i % 20 == 0 {
            let line: Vec<String> = counts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            println!("{url} answered by  {}", line.join("  "));
            counts.clear();
        }
    }
}
