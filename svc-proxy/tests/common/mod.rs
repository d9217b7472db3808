//! Helpers shared by the end-to-end tests: manifests on disk, an in-process proxy, polling,
//! and real `curl`/`dig` clients.
//!
//! Every test uses its own loopback addresses (127.N.x.y with N unique per test), so tests run
//! in parallel without colliding.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::oneshot;

mod child;
// Each test binary uses a part of this module (as `dead_code` above says for the rest).
#[allow(unused_imports)]
pub use child::*;

/// How long any "eventually" condition may take: generous, since the machine may be loaded.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A directory of manifests that the proxy follows (it re-reads them every second).
pub struct Manifests {
    pub dir: PathBuf,
}

impl Manifests {
    pub fn new(test: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("svc-proxy-test-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    /// Writes (or replaces) one file, atomically.
    pub fn write(&self, name: &str, yaml: &str) {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.dir.join(name)).unwrap();
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir.join(name)).unwrap();
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Manifests {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Service YAML. `ports` is a list of flow-style port entries (`{name: http, port: 80}`).
pub fn service(name: &str, cluster_ip: &str, ports: &[&str], extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: test}}\nspec:\n  clusterIP: {cluster_ip}\n{extra_spec}  ports:\n{}\n",
        ports.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
    )
}

/// An EndpointSlice YAML for Service `svc` with one port and `(address, ready, extra)` endpoints.
pub fn slice(
    name: &str,
    svc: &str,
    port: (&str, u16, &str),
    endpoints: &[(&str, bool, &str)],
) -> String {
    let (pname, pnum, proto) = port;
    let eps: Vec<String> = endpoints
        .iter()
        .map(|(a, ready, extra)| {
            format!("- {{addresses: [\"{a}\"], conditions: {{ready: {ready}}}{extra}}}")
        })
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: test, labels: {{kubernetes.io/service-name: {svc}}}}}\naddressType: IPv4\nports: [{{name: {pname}, port: {pnum}, protocol: {proto}}}]\nendpoints:\n{}\n",
        eps.join("\n")
    )
}

/// A proxy running in this process; stopped (and drained) on [`Proxy::stop`] or drop.
pub struct Proxy {
    pub admin: SocketAddr,
    pub dns: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<svc_proxy::Result<()>>>,
}

impl Proxy {
    pub async fn start(flags: &[&str]) -> Self {
        let args = svc_proxy::Args::try_from_flags(flags.iter().copied()).expect("valid flags");
        Self::from(svc_proxy::start(args).await.expect("proxy starts"))
    }

    pub async fn start_kube(flags: &[&str], client: kube::Client) -> Self {
        let args = svc_proxy::Args::try_from_flags(flags.iter().copied()).expect("valid flags");
        Self::from(
            svc_proxy::start_with_client(args, client)
                .await
                .expect("proxy starts"),
        )
    }

    fn from(running: svc_proxy::Running) -> Self {
        let (admin, dns) = (running.admin_addr(), running.dns_addr());
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(running.run_until(async move {
            let _ = rx.await;
        }));
        Self {
            admin,
            dns,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) -> svc_proxy::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap()
    }

    /// GETs an admin path: (status, body).
    pub async fn admin(&self, path: &str) -> (u16, String) {
        let out = run(
            "curl",
            &[
                "-s",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                &format!("http://{}{path}", self.admin),
            ],
        )
        .await;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The status curl got for `url` (0 when it got none), with `extra` flags before the URL.
pub async fn curl_status(url: &str, extra: &[&str]) -> u16 {
    let mut args = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}"];
    args.extend_from_slice(extra);
    args.push(url);
    let out = run("curl", &args).await;
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `addr` accepts TCP connections.
pub async fn wait_listening(addr: SocketAddr) {
    eventually(&format!("{addr} listening"), || async move {
        TcpStream::connect(addr).await.ok().map(|_| ())
    })
    .await
}

/// Waits until `addr` refuses TCP connections.
pub async fn wait_refused(addr: SocketAddr) {
    eventually(&format!("{addr} refusing"), || async move {
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        }
    })
    .await
}

/// Runs a command to completion (without blocking the runtime).
pub async fn run(cmd: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(cmd)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {cmd}: {e} (is it installed?)"))
}

/// `curl -s URL`'s body, or `None` when curl failed.
pub async fn curl(url: &str) -> Option<String> {
    let out = run("curl", &["-s", "--max-time", "10", url]).await;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The value of one metric sample (`name{labels}`) in an OpenMetrics text, if present.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
}

/// A GET over a fresh connection without spawning a client (for tight polling loops):
/// `(status, body)`, or `None` when the server did not answer.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .ok()
        .flatten()
}

/// The IPv4 TCP sockets listening in this network namespace now, from `/proc/net/tcp`.
pub fn listening_sockets() -> std::collections::HashSet<SocketAddr> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            if state != "0A" {
                return None;
            }
            let (ip, port) = local.split_once(':')?;
            // The address is the kernel's u32 in host (little-endian) order, the port big-endian.
            let ip = u32::from_str_radix(ip, 16).ok()?;
            let ip = std::net::Ipv4Addr::from(ip.to_le_bytes());
            let port = u16::from_str_radix(port, 16).ok()?;
            Some(SocketAddr::from((ip, port)))
        })
        .collect()
}

/// Descriptors process `pid` has open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// `text` without ANSI colour sequences (the proxy's log colours its fields).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (0x40..=0x7e).
            for c in chars.by_ref() {
                if ('\u{40}'..='\u{7e}').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Polls `/readyz` every millisecond until it answers 200, so that the caller sees the state
/// at (nearly) the moment readiness was first reported.
pub async fn first_ready(admin: SocketAddr) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !matches!(http_get(admin, "/readyz").await, Some((200, _))) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {:?}",
            http_get(admin, "/readyz?verbose").await
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
