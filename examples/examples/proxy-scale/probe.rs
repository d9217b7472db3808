//! The proxy process and the probes run against it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::cluster::{Cluster, Range};

/// Builds the release `svc-proxy` binary and returns its path (beside this example's
/// `target/release/examples/` directory).
pub fn build_proxy() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "-p", "svc-proxy"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p svc-proxy failed");
    }
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .context("no target directory")?
        .join("svc-proxy");
    if !bin.exists() {
        bail!("{} is missing after the build", bin.display());
    }
    Ok(bin)
}

/// A running `svc-proxy`, watching the fake API server through a kubeconfig.
pub struct ProxyProcess {
    child: Child,
    pid: u32,
    admin: SocketAddr,
    dir: PathBuf,
}

impl ProxyProcess {
    /// A proxy watching `cluster`'s API server.
    pub fn spawn(
        bin: &Path,
        cluster: &Cluster,
        threads: usize,
        range: Range,
    ) -> anyhow::Result<Self> {
        let dir = Self::dir(range)?;
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\n\
                 users: [{{name: fake, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\n\
                 current-context: fake\n",
                cluster.server.url()
            ),
        )?;
        Self::start(bin, dir, threads, range, &[], Some(&kubeconfig))
    }

    /// A proxy serving `yaml` from a manifests file.
    pub fn spawn_manifests(
        bin: &Path,
        yaml: &str,
        threads: usize,
        range: Range,
    ) -> anyhow::Result<Self> {
        let dir = Self::dir(range)?;
        let file = dir.join("services.yaml");
        std::fs::write(&file, yaml)?;
        let file = file.to_string_lossy().into_owned();
        Self::start(bin, dir, threads, range, &["--manifests", &file], None)
    }

    fn dir(range: Range) -> anyhow::Result<PathBuf> {
        let dir =
            std::env::temp_dir().join(format!("proxy-scale-{}-{}", std::process::id(), range.name));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn start(
        bin: &Path,
        dir: PathBuf,
        threads: usize,
        range: Range,
        flags: &[&str],
        kubeconfig: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let log = std::fs::File::create(dir.join("proxy.log"))?;
        let mut command = Command::new(bin);
        if let Some(k) = kubeconfig {
            command.env("KUBECONFIG", k);
        }
        let child = command
            .args(["--threads", &threads.to_string()])
            .args(["--admin-addr", &range.admin.to_string()])
            .args(flags)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let pid = child.id().context("the proxy exited at once")?;
        Ok(Self {
            child,
            pid,
            admin: range.admin,
            dir,
        })
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Polls `/readyz` every 5 ms until it answers 200.
    pub async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the proxy exited ({status}):\n{}", self.log_tail());
            }
            if let Ok((200, _)) = self.get("/readyz").await {
                return Ok(());
            }
            if start.elapsed() > limit {
                let (_, body) = self.get("/readyz?verbose").await.unwrap_or_default();
                bail!(
                    "not ready after {limit:?}:\n{}\n{}",
                    String::from_utf8_lossy(&body),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// GETs an admin path over HTTP/1.0: (status, body).
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let fetch = async {
            let mut s = TcpStream::connect(self.admin).await?;
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").as_bytes())
                .await?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).await?;
            anyhow::Ok(out)
        };
        let out = tokio::time::timeout(Duration::from_secs(60), fetch).await??;
        let split = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("no end of headers")?;
        let head = String::from_utf8_lossy(&out[..split]);
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no status")?;
        Ok((status, out[split + 4..].to_vec()))
    }

    /// Open descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid)).map_or(0, |d| d.count())
    }

    /// VmHWM, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        examples::procfs::status_mib(&self.pid.to_string(), "VmHWM")
    }

    /// VmRSS, in MiB.
    pub fn rss_mib(&self) -> f64 {
        examples::procfs::status_mib(&self.pid.to_string(), "VmRSS")
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How many of `addrs` accept a TCP connection (256 at a time, 2 s each). A reset counts as
/// accepted: the endpoints of the synthetic Services refuse connections, so the proxy accepts,
/// finds no endpoint that answers and resets the client, sometimes before its connect returns.
/// Only a refusal (nothing listening) or a timeout counts against.
pub async fn count_accepting(addrs: &[SocketAddr]) -> usize {
    futures::stream::iter(addrs.iter().copied())
        .map(|addr| async move {
            match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
                Ok(Ok(_)) => true,
                Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionReset,
                Err(_) => false,
            }
        })
        .buffer_unordered(256)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await
}

/// Retries until a connection to `vip` echoes a byte back (every 50 µs), or `limit` passes.
/// Blocking sockets on a thread of their own: tokio's timer would round the pause between
/// attempts up to a millisecond, more than the latency being measured.
pub async fn wait_echo(vip: SocketAddr, limit: Duration) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let start = Instant::now();
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(vip) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut byte = [0u8; 1];
                if s.write_all(b"x").is_ok() && s.read_exact(&mut byte).is_ok() {
                    return Ok(());
                }
            }
            if start.elapsed() > limit {
                bail!("{vip} never echoed within {limit:?}");
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    })
    .await?
}
