//! `svc-proxy`: see the library docs, or `svc-proxy --help`.
#![deny(unsafe_code)]

use std::io::IsTerminal;

use anyhow::Context as _;
use clap::Parser;
use svc_proxy::Args;
use tracing_subscriber::EnvFilter;

// Every proxied request allocates (hyper's buffers, header maps, futures); glibc's malloc
// showed up at ~10 % of the proxy's CPU in `perf` under HTTP load, mimalloc's thread-local
// free lists make those allocations much cheaper.
#[global_allocator]
static ALLOCATOR: allocator::MiMalloc = allocator::MiMalloc;

#[allow(unsafe_code)]
mod allocator;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&args.log));
    // Colour codes only for a person at a terminal: in a file or a log collector they are
    // noise that breaks searching.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    // The control plane; connections are served on `--threads` worker runtimes of their own
    // (see `svc_proxy::workers`), or here when there is one thread.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime
        .block_on(svc_proxy::run(args))
        .context("svc-proxy")?;
    Ok(())
}
