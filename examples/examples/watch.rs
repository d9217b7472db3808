//! Prints the live *name → ClusterIP → endpoints* table, then every change as it happens.
//!
//! With a cluster (`KUBECONFIG`, `~/.kube/config` or in-cluster), it watches the API;
//! otherwise, or with `--manifests PATH`, it follows a manifests file or directory (by default
//! the bundled demo in `examples/demo`).
//!
//! ```text
//! cargo run -p examples --example watch                       # demo manifests or cluster
//! cargo run -p examples --example watch -- --manifests my.yaml
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use futures::FutureExt;
use svc_core::source;
use svc_core::store::ServiceSnapshot;
use svc_core::StoreConfig;
use tokio::sync::mpsc;

#[derive(Parser)]
struct Args {
    /// Follow this manifests file or directory instead of a cluster.
    #[arg(long, env = "SVC_MANIFESTS")]
    manifests: Option<PathBuf>,
    /// Watch only this namespace (cluster mode).
    #[arg(long, env = "SVC_NAMESPACE")]
    namespace: Option<String>,
    /// Exit after printing the initial table (for scripts and tests).
    #[arg(long)]
    once: bool,
}

fn in_a_cluster() -> bool {
    std::env::var_os("KUBECONFIG").is_some()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("HOME").is_some_and(|h| PathBuf::from(h).join(".kube/config").exists())
}

fn describe(s: &ServiceSnapshot) -> String {
    let svc = &s.service;
    let ips: Vec<String> = svc.cluster_ips.iter().map(ToString::to_string).collect();
    let head = match (&svc.external_name, svc.headless) {
        (Some(name), _) => format!("ExternalName → {name}"),
        (None, true) => "headless".to_string(),
        (None, false) => ips.join(","),
    };
    let mut out = format!("{}.{}  {head}", svc.key.name, svc.key.namespace);
    for p in &s.ports {
        let eps: Vec<String> = p
            .endpoints
            .iter()
            .map(|e| {
                let c = e.endpoint.conditions;
                let state = match (c.ready, c.serving, c.terminating) {
                    (true, _, _) => "",
                    (false, true, true) => " (terminating)",
                    _ => " (not ready)",
                };
                format!("{}{state}", e.addr)
            })
            .collect();
        let name = p.port.name.as_deref().unwrap_or("-");
        out.push_str(&format!(
            "\n    {name} {}/{} → [{}]",
            p.port.port,
            p.port.protocol.as_str(),
            eps.join(", ")
        ));
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let (store, writer) = svc_core::store::store(StoreConfig::default());
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(writer.run(rx));
    match (&args.manifests, in_a_cluster()) {
        (None, true) => {
            let client = kube::Client::try_default()
                .await
                .context("connecting to the cluster")?;
            let mut config = source::kube::Config::default();
            if let Some(namespace) = &args.namespace {
                config = config.namespace(namespace.clone());
            }
            eprintln!("watching the Kubernetes API");
            tokio::spawn(source::kube::run(client, config, store.clone(), tx));
        }
        (path, _) => {
            let path = path
                .clone()
                .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/demo")));
            eprintln!("following manifests at {}", path.display());
            tokio::spawn(async move {
                if let Err(error) = source::manifests::run(path, Duration::from_secs(1), tx).await {
                    tracing::error!(%error, "cannot load manifests");
                    std::process::exit(1);
                }
            });
        }
    }
    store.wait_until_ready().await;
    // Taken after the sync and drained at once: the table below shows what it starts with.
    let mut feed = store.changes();
    let _ = feed.changed().now_or_never();
    println!("== {} services ==", store.len());
    for s in store.services() {
        println!("{}", describe(&s));
    }
    if args.once {
        return Ok(());
    }
    loop {
        for key in feed.changed().await {
            match store.get(&key) {
                Some(s) => println!("~ {}", describe(&s)),
                None => println!("- {key} deleted"),
            }
        }
    }
}
