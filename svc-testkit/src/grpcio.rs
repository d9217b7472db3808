//! A real gRPC C-core peer (Python `grpcio`) for end-to-end tests.
//!
//! tonic accepts requests that the reference implementation rejects (it does not insist on
//! `te: trailers`), so tests of anything that forwards gRPC must also talk to grpcio. The
//! Python side is `python/grpc_echo.py`; it runs in a virtualenv that `scripts/test.sh`
//! creates (`target/test-venv`, with grpcio from PyPI).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The Python interpreter with grpcio: `$SVC_TEST_PYTHON`, else the workspace's
/// `target/test-venv/bin/python`.
///
/// # Panics
/// When neither exists: run `scripts/test.sh` (it creates the virtualenv), or set
/// `SVC_TEST_PYTHON` to a Python that can `import grpc`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SVC_TEST_PYTHON") {
        return p.into();
    }
    let venv = workspace_root().join("target/test-venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with grpcio at {}: run scripts/test.sh once (it creates the virtualenv), \
         or set SVC_TEST_PYTHON",
        venv.display()
    );
    venv
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("svc-testkit lives in the workspace")
        .to_path_buf()
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/grpc_echo.py")
}

/// A grpcio server answering `/svc.test.Echo/Say` with its own address. Killed on drop.
#[derive(Debug)]
pub struct GrpcioServer {
    addr: SocketAddr,
    _child: Child,
}

impl GrpcioServer {
    /// The address it serves on (and answers with).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Starts a grpcio server on `addr` (a fixed port: grpcio reports no bound port through the
/// script) and waits until it serves.
///
/// # Panics
/// When Python or grpcio is missing, or the server does not come up within 30 s.
pub async fn spawn_grpcio_server(addr: SocketAddr) -> GrpcioServer {
    let mut child = Command::new(python())
        .arg(script())
        .arg("serve")
        .arg(addr.to_string())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python starts");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("grpcio server starts within 30 s")
        .expect("reading the server's output");
    assert_eq!(
        first.as_deref(),
        Some("ready"),
        "grpcio server on {addr} did not start"
    );
    GrpcioServer {
        addr,
        _child: child,
    }
}

/// The outcome of one call made by the grpcio client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallResult {
    /// The server's reply (for [`GrpcioServer`]s: its address).
    Ok(String),
    /// The gRPC status code name and details.
    Err(String),
}

/// How the grpcio client connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channels {
    /// One channel (connection) for every call, as real clients keep it.
    One,
    /// A new channel per call.
    PerCall,
}

/// Makes `n` sequential unary calls to `/svc.test.Echo/Say` at `target` with grpcio's
/// client, and returns each call's outcome in order.
///
/// # Panics
/// When Python or grpcio is missing.
pub async fn grpcio_calls(target: SocketAddr, n: usize, channels: Channels) -> Vec<CallResult> {
    let mode = match channels {
        Channels::One => "call",
        Channels::PerCall => "call-fresh",
    };
    let out = Command::new(python())
        .arg(script())
        .arg(mode)
        .arg(target.to_string())
        .arg(n.to_string())
        .output()
        .await
        .expect("python runs");
    assert!(
        out.status.success(),
        "grpcio client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| match l.strip_prefix("ok ") {
            Some(reply) => CallResult::Ok(reply.to_string()),
            None => CallResult::Err(l.trim_start_matches("err ").to_string()),
        })
        .collect()
}
