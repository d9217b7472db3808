//! The built binary with hundreds of Services: ready means programmed, listening sockets do not
//! multiply with `--threads`, and running out of file descriptors is loud and recovers.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::net::TcpStream;
use tokio::process::Child;

const PORT: u16 = 7000;

/// `n` Services in namespace `test` on ClusterIPs 127.`net`.x.y:7000, all in front of `echo`.
fn services(net: u8, n: usize, echo: SocketAddr) -> (String, Vec<SocketAddr>) {
    let mut yaml = String::new();
    let mut vips = Vec::new();
    for i in 0..n {
        let vip = SocketAddr::from(([127, net, (i / 200) as u8, (i % 200 + 1) as u8], PORT));
        let name = format!("svc-{i:03}");
        yaml.push_str(&service(
            &name,
            &vip.ip().to_string(),
            &[&format!(
                "{{name: tcp, port: {PORT}, targetPort: {}}}",
                echo.port()
            )],
            "",
        ));
        yaml.push_str("---\n");
        yaml.push_str(&slice(
            &format!("{name}-1"),
            &name,
            ("tcp", echo.port(), "TCP"),
            &[(&echo.ip().to_string(), true, "")],
        ));
        yaml.push_str("---\n");
        vips.push(vip);
    }
    (yaml, vips)
}

/// Polls `/readyz` as fast as it answers, until 200.
async fn wait_ready(admin: SocketAddr, child: &mut Child, log: &std::path::Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Some((200, _)) = http_get(admin, "/readyz").await {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the proxy exited ({status}):\n{}",
                std::fs::read_to_string(log).unwrap()
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {:?}",
            http_get(admin, "/readyz?verbose").await
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn all_accept(vips: &[SocketAddr]) -> Vec<SocketAddr> {
    let attempts = vips.iter().map(|vip| async move {
        let ok = matches!(
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(vip)).await,
            Ok(Ok(_))
        );
        (!ok).then_some(*vip)
    });
    futures::future::join_all(attempts)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Whether a connection through `vip` gets a byte echoed.
async fn echoes(vip: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = TcpStream::connect(vip).await?;
        s.write_all(b"x").await?;
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).await?;
        std::io::Result::Ok(byte == *b"x")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), exchange).await,
        Ok(Ok(true))
    )
}

struct Run {
    fds: usize,
    _child: Child,
    _manifests: Manifests,
}

/// Starts the proxy on `n` Services with `threads`; at the first 200 from `/readyz`, every
/// ClusterIP must already listen and accept.
async fn ready_means_listening(net: u8, n: usize, threads: &str, echo: SocketAddr) -> Run {
    let m = Manifests::new(&format!("scale-{net}"));
    let (yaml, vips) = services(net, n, echo);
    m.write("services.yaml", &yaml);
    let log = m.dir.join("proxy.log");
    let admin: SocketAddr = format!("127.{net}.255.1:9901").parse().unwrap();
    let mut child = spawn_proxy(
        &[],
        &[
            "--manifests",
            m.path().to_str().unwrap(),
            "--admin-addr",
            &admin.to_string(),
            "--threads",
            threads,
        ],
        &log,
    );
    wait_ready(admin, &mut child, &log).await;
    // Right away: the kernel's socket table, then real connections.
    let listening = listening_sockets();
    let fds = open_fds(child.id().unwrap());
    let missing: Vec<_> = vips.iter().filter(|v| !listening.contains(v)).collect();
    assert!(
        missing.is_empty(),
        "/readyz was 200 with {} of {n} ClusterIPs not listening (--threads {threads}), e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let refused = all_accept(&vips).await;
    assert!(refused.is_empty(), "refused: {refused:?}");
    Run {
        fds,
        _child: child,
        _manifests: m,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_every_listener_and_sockets_do_not_multiply_with_threads() {
    let echo = svc_testkit::spawn_tcp_echo("127.130.250.1:7001".parse().unwrap())
        .await
        .unwrap();
    let n = 400;
    let (four, one) = tokio::join!(
        ready_means_listening(130, n, "4", echo.addr()),
        ready_means_listening(131, n, "1", echo.addr()),
    );
    eprintln!(
        "open fds with {n} Services: --threads 4: {}, --threads 1: {}",
        four.fds, one.fds
    );
    // One socket per listener whatever the threads; each worker runtime adds its own epoll
    // and wake-up descriptors (2; 8 allowed).
    assert!(
        four.fds <= one.fds + 4 * 8,
        "--threads 4 holds {} fds against {} with --threads 1",
        four.fds,
        one.fds
    );
    assert!(one.fds < n + 64, "{} fds for {n} listeners", one.fds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_for_listeners_is_loud_and_recovers() {
    let echo = svc_testkit::spawn_tcp_echo("127.132.250.1:7001".parse().unwrap())
        .await
        .unwrap();
    let n = 80;
    let m = Manifests::new("scale-fds");
    let (yaml, vips) = services(132, n, echo.addr());
    m.write("services.yaml", &yaml);
    let log = m.dir.join("proxy.log");
    let admin: SocketAddr = "127.132.255.1:9901".parse().unwrap();
    // 100 descriptors: the 32 kept in reserve and the proxy's own dozen leave room for about
    // 55 of the 80 listeners.
    let mut child = spawn_proxy(
        &["prlimit", "--nofile=100:100"],
        &[
            "--manifests",
            m.path().to_str().unwrap(),
            "--admin-addr",
            &admin.to_string(),
            "--threads",
            "2",
        ],
        &log,
    );

    // Loud readiness: programmed, yet not ready, naming the Services that fail and why.
    let verbose = eventually("/readyz reports the failing listeners", || async {
        let (status, body) = http_get(admin, "/readyz?verbose").await?;
        (status == 503 && body.contains("[+]dataplane-programmed ok")).then_some(body)
    })
    .await;
    let failing: Vec<String> = verbose
        .lines()
        .filter_map(|l| l.strip_prefix("[-]service/test/"))
        .map(|l| {
            assert!(l.contains("fd_limit"), "{l}");
            l.split_whitespace().next().unwrap().to_string()
        })
        .collect();
    assert!(
        !failing.is_empty() && failing.len() < n,
        "{} of {n} failing:\n{verbose}",
        failing.len()
    );
    assert!(
        verbose.contains(&format!(
            "[-]listeners failed: {} listeners of {} Services failing",
            failing.len(),
            failing.len()
        )),
        "{verbose}"
    );
    assert!(verbose.ends_with("readyz check failed\n"), "{verbose}");

    // The metrics: every failed attempt is counted, the failing listeners are a gauge.
    let (_, metrics) = http_get(admin, "/metrics").await.unwrap();
    let errors = metric(
        &metrics,
        r#"svc_proxy_listener_errors_total{cause="fd_limit"}"#,
    )
    .unwrap_or(0.0);
    assert!(errors >= failing.len() as f64, "{metrics}");
    assert_eq!(
        metric(&metrics, r#"svc_proxy_listeners{state="failing"}"#),
        Some(failing.len() as f64),
        "{metrics}"
    );

    // The log: one line for the cause with the count, not one line per Service.
    let text = strip_ansi(&std::fs::read_to_string(&log).unwrap());
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("cannot listen"))
        .collect();
    assert!(
        !lines.is_empty() && lines.len() <= 2,
        "expected one line for the cause, got {}:\n{text}",
        lines.len()
    );
    assert!(lines.iter().all(|l| l.contains("fd_limit")), "{text}");
    assert!(
        lines
            .last()
            .unwrap()
            .contains(&format!("failing={}", failing.len())),
        "{text}"
    );

    // Recovery: free descriptors by deleting as many of the listening Services as fail (and
    // a few more). The failing Services themselves never change: the retries bring them up.
    let listening: Vec<usize> = (0..n)
        .filter(|i| !failing.contains(&format!("svc-{i:03}")))
        .collect();
    let removed: Vec<usize> = listening.iter().copied().take(failing.len() + 5).collect();
    let kept: Vec<usize> = (0..n).filter(|i| !removed.contains(i)).collect();
    let (all_yaml, _) = services(132, n, echo.addr());
    let docs: Vec<&str> = all_yaml.split("---\n").filter(|d| !d.is_empty()).collect();
    let kept_yaml: String = kept
        .iter()
        .flat_map(|&i| [docs[2 * i], "---\n", docs[2 * i + 1], "---\n"])
        .collect();
    m.write("services.yaml", &kept_yaml);
    eventually(
        "/readyz turns 200 once the retries get descriptors",
        || async {
            let (status, _) = http_get(admin, "/readyz").await?;
            (status == 200).then_some(())
        },
    )
    .await;
    // One flow at a time: the descriptors left over serve only a few at once.
    let mut refused = Vec::new();
    for &i in &kept {
        if !echoes(vips[i]).await {
            refused.push(vips[i]);
        }
    }
    assert!(
        refused.is_empty(),
        "refused after recovery: {refused:?}\n{}\n{}",
        http_get(admin, "/readyz?verbose")
            .await
            .unwrap_or_default()
            .1,
        strip_ansi(&std::fs::read_to_string(&log).unwrap())
    );
    let (_, metrics) = http_get(admin, "/metrics").await.unwrap();
    assert_eq!(
        metric(&metrics, r#"svc_proxy_listeners{state="failing"}"#),
        Some(0.0)
    );
    assert_eq!(
        metric(&metrics, r#"svc_proxy_listeners{state="listening"}"#),
        Some(kept.len() as f64)
    );
    let text = strip_ansi(&std::fs::read_to_string(&log).unwrap());
    assert!(text.contains("are all up now"), "{text}");
    assert!(child.try_wait().unwrap().is_none(), "still running");
}
