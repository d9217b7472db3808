//! Resident memory per idle TCP flow: opens N connections through a running svc-proxy binary,
//! passes `--burst` bytes each way on each (at least one, so that every flow is connected end
//! to end and both copy directions have run), leaves them idle, and reads the proxy's `VmRSS`
//! before and after.
//!
//! ```text
//! cargo build --release -p svc-proxy --bins --example idle-flows
//! target/release/examples/idle-flows --proxy target/release/svc-proxy --flows 5000
//! target/release/examples/idle-flows --proxy target/release/svc-proxy --flows 5000 --burst 65536
//! ```
//!
//! The backend (an echo server) and the clients run in this process; the proxy runs as a child
//! under `prlimit --nofile=20000:20000` on 127.169.0.1:7000, with the given extra flags after
//! `--`. Clients come from 127.169.1.1 upwards (1,000 per source address).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

#[derive(Parser)]
struct Args {
    /// The svc-proxy binary.
    #[arg(long, default_value = "target/release/svc-proxy")]
    proxy: PathBuf,
    /// Idle flows to open.
    #[arg(long, default_value_t = 5000)]
    flows: usize,
    /// Bytes each flow echoes through the proxy before going idle (a burst fills the copy
    /// buffers, as a flow that once carried data has had them filled).
    #[arg(long, default_value_t = 1)]
    burst: usize,
    /// How long to wait after opening them before reading the RSS (allocators return freed
    /// memory lazily).
    #[arg(long, default_value_t = 3)]
    settle_secs: u64,
    /// Extra flags for the proxy.
    #[arg(last = true)]
    extra: Vec<String>,
}

const VIP: &str = "127.169.0.1:7000";
const BACKEND: &str = "127.169.0.11:7001";
const ADMIN: &str = "127.169.0.1:9901";

fn manifests() -> String {
    "apiVersion: v1\nkind: Service\nmetadata: {name: idle, namespace: bench}\nspec:\n  clusterIP: 127.169.0.1\n  ports:\n  - {name: tcp, port: 7000, targetPort: 7001}\n---\n\
     apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: idle-1, namespace: bench, labels: {kubernetes.io/service-name: idle}}\naddressType: IPv4\nports: [{name: tcp, port: 7001, protocol: TCP}]\nendpoints:\n- {addresses: [\"127.169.0.11\"], conditions: {ready: true}}\n"
        .to_string()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn echo_backend() {
    let listener = TcpListener::bind(BACKEND).await.expect("bind the backend");
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn open_flow(i: usize, burst: usize) -> std::io::Result<TcpStream> {
    let source = Ipv4Addr::new(127, 169, 1 + (i / 1000) as u8, 1);
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let mut s = socket.connect(VIP.parse().unwrap()).await?;
    let data = vec![b'x'; burst.max(1)];
    let (mut r, mut w) = s.split();
    let mut back = vec![0u8; data.len()];
    tokio::try_join!(w.write_all(&data), r.read_exact(&mut back))?;
    Ok(s)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)?;

    let dir = std::env::temp_dir().join(format!("svc-idle-flows-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("idle.yaml"), manifests())?;
    tokio::spawn(echo_backend());

    let mut child = tokio::process::Command::new("prlimit")
        .arg("--nofile=20000:20000")
        .arg(&args.proxy)
        .args(["--manifests", dir.to_str().unwrap(), "--admin-addr", ADMIN])
        .args(&args.extra)
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().expect("the proxy runs");
    // prlimit execs the proxy in place, so the pid is the proxy's.
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(mut s) = open_flow(0, 1).await {
            let _ = s.shutdown().await;
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(ready, "the proxy never served {VIP}");
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let before = rss_kib(pid);

    let mut flows = Vec::with_capacity(args.flows);
    for i in 0..args.flows {
        flows.push(open_flow(i, args.burst).await?);
    }
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let after = rss_kib(pid);
    println!(
        "idle-flows flows={} burst={} rss_before_kib={before} rss_after_kib={after} per_flow_kib={:.1}",
        flows.len(),
        args.burst,
        (after.saturating_sub(before)) as f64 / flows.len() as f64
    );
    drop(flows);
    child.kill().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
