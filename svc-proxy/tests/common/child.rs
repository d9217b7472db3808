//! The built binary as a child process, for tests that need a real process (signals, fd
//! limits, stderr that is not a terminal), and the echo Service they run it with.

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::{service, slice, Manifests};

/// The svc-proxy binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_svc-proxy");

/// Runs the binary with `flags`, behind `prefix` if any (e.g. `prlimit --nofile=…`), with
/// stderr into `log` (a file: not a terminal) and without the caller's `RUST_LOG`.
pub fn spawn_proxy(prefix: &[&str], flags: &[&str], log: &Path) -> Child {
    let mut args: Vec<&str> = prefix.to_vec();
    args.push(BIN);
    args.extend(flags);
    Command::new(args[0])
        .args(&args[1..])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Sends SIGTERM to `child`.
pub fn sigterm(child: &Child) {
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
}

/// Service `echo` on 127.`net`.0.1:7000 → one endpoint, 127.`net`.0.11:7001.
pub fn echo_manifests(test: &str, net: u8) -> Manifests {
    let m = Manifests::new(test);
    m.write(
        "svc.yaml",
        &service(
            "echo",
            &format!("127.{net}.0.1"),
            &["{name: tcp, port: 7000, targetPort: 7001}"],
            "",
        ),
    );
    let ip = format!("127.{net}.0.11");
    m.write(
        "slice.yaml",
        &slice("echo-1", "echo", ("tcp", 7001, "TCP"), &[(&ip, true, "")]),
    );
    m
}

/// Writes `msg` and reads it back from an echo: whether the flow still carries data.
pub async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> bool {
    if s.write_all(msg).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).await.is_ok() && buf == msg
}
