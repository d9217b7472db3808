//! The built binary: SIGTERM drain, and surviving file-descriptor exhaustion.

mod common;

use std::net::SocketAddr;

use common::*;
use tokio::net::TcpStream;

async fn admin_status(admin: &str, path: &str) -> u16 {
    curl_status(&format!("http://{admin}{path}"), &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_drains_open_flows_then_exits() {
    let _echo = svc_testkit::spawn_tcp_echo("127.71.0.11:7001".parse().unwrap())
        .await
        .unwrap();
    let m = echo_manifests("sigterm", 71);
    let log = m.dir.join("proxy.log");
    let admin = "127.71.0.1:9901";
    let mut child = spawn_proxy(
        &[],
        &[
            "--manifests",
            m.path().to_str().unwrap(),
            "--admin-addr",
            admin,
            "--drain-timeout",
            "120s",
        ],
        &log,
    );
    let vip: SocketAddr = "127.71.0.1:7000".parse().unwrap();
    wait_listening(vip).await;
    let mut flow = TcpStream::connect(vip).await.unwrap();
    assert!(roundtrip(&mut flow, b"before").await);

    sigterm(&child);
    // New connections are refused at once (the listener is closed)...
    wait_refused(vip).await;
    eventually("readyz reports draining", || async {
        (admin_status(admin, "/readyz").await == 503).then_some(())
    })
    .await;
    // ...while the open flow keeps working, and the process waits for it.
    assert!(roundtrip(&mut flow, b"during the drain").await);
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited before its flow finished"
    );
    drop(flow);
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("exits once drained")
        .unwrap();
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("drained"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_deadline_bounds_shutdown() {
    let _echo = svc_testkit::spawn_tcp_echo("127.72.0.11:7001".parse().unwrap())
        .await
        .unwrap();
    let m = echo_manifests("deadline", 72);
    let log = m.dir.join("proxy.log");
    let mut child = spawn_proxy(
        &[],
        &[
            "--manifests",
            m.path().to_str().unwrap(),
            "--admin-addr",
            "127.72.0.1:9901",
            "--drain-timeout",
            "1s",
        ],
        &log,
    );
    let vip: SocketAddr = "127.72.0.1:7000".parse().unwrap();
    wait_listening(vip).await;
    let mut flow = TcpStream::connect(vip).await.unwrap();
    assert!(roundtrip(&mut flow, b"hi").await);
    sigterm(&child);
    // The flow never ends by itself; the deadline ends the process anyway.
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("exits at the deadline")
        .unwrap();
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("drain deadline passed"), "{log}");
    drop(flow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_backs_off_and_recovers() {
    let _echo = svc_testkit::spawn_tcp_echo("127.73.0.11:7001".parse().unwrap())
        .await
        .unwrap();
    let m = echo_manifests("emfile", 73);
    let log = m.dir.join("proxy.log");
    // 64 descriptors: enough to start, far too few for 100 proxied connections (2 each).
    let mut child = spawn_proxy(
        &["prlimit", "--nofile=64:64"],
        &[
            "--manifests",
            m.path().to_str().unwrap(),
            "--admin-addr",
            "127.73.0.1:9901",
            "--threads",
            "1",
        ],
        &log,
    );
    let vip: SocketAddr = "127.73.0.1:7000".parse().unwrap();
    wait_listening(vip).await;
    let mut flows = Vec::new();
    for _ in 0..100 {
        // Connects complete in the kernel's backlog whether or not the proxy can accept.
        if let Ok(s) = TcpStream::connect(vip).await {
            flows.push(s);
        }
    }
    eventually("the proxy reports running out of descriptors", || async {
        let log = std::fs::read_to_string(&log).unwrap();
        (log.contains("out of file descriptors") || log.contains("cannot open a socket"))
            .then_some(())
    })
    .await;
    drop(flows);
    // It recovers: new connections are proxied again.
    eventually("proxying works again", || async {
        let mut s = TcpStream::connect(vip).await.ok()?;
        tokio::time::timeout(
            std::time::Duration::from_secs(2),
            roundtrip(&mut s, b"alive?"),
        )
        .await
        .ok()?
        .then_some(())
    })
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the proxy is still running"
    );
    sigterm(&child);
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

/// A metric's value from the admin server of a child process.
async fn child_metric(admin: &str, sample: &str) -> Option<f64> {
    let out = run("curl", &["-s", &format!("http://{admin}/metrics")]).await;
    metric(&String::from_utf8_lossy(&out.stdout), sample)
}

/// Item 10: SIGHUP used to kill the proxy at once (exit 129). Now it reloads: a new file that
/// its writer still holds open (which would otherwise wait for the writer) is applied at once,
/// and the proxy keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_manifests_instead_of_killing_the_proxy() {
    use std::io::Write;
    let _echo = svc_testkit::spawn_tcp_echo("127.174.0.11:7001".parse().unwrap())
        .await
        .unwrap();
    let m = echo_manifests("sighup", 174);
    let log = m.dir.join("proxy.log");
    let admin = "127.174.0.1:9901";
    let mut child = spawn_proxy(
        &[],
        &[
            "--manifests",
            m.path().to_str().unwrap(),
            "--admin-addr",
            admin,
        ],
        &log,
    );
    wait_listening("127.174.0.1:7000".parse().unwrap()).await;

    let mut writer = std::fs::File::create(m.dir.join("second.yaml")).unwrap();
    let second = format!(
        "{}---\n{}",
        service(
            "second",
            "127.174.0.2",
            &["{name: tcp, port: 7000, targetPort: 7001}"],
            ""
        ),
        slice(
            "second-1",
            "second",
            ("tcp", 7001, "TCP"),
            &[("127.174.0.11", true, "")]
        )
    );
    writer.write_all(second.as_bytes()).unwrap();
    writer.flush().unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();

    let vip: SocketAddr = "127.174.0.2:7000".parse().unwrap();
    wait_listening(vip).await;
    let mut flow = TcpStream::connect(vip).await.unwrap();
    assert!(roundtrip(&mut flow, b"after the reload").await);
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP must not end the proxy"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("SIGHUP"), "{text}");
    drop((flow, writer));
    sigterm(&child);
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}

/// The bytes a process has read so far (`rchar` of `/proc/PID/io`).
fn bytes_read(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// Item 20: a big manifest used to be read again every second (a 100 MB one cost 4 % CPU). Now
/// an unchanged file costs a `stat` per poll: over several polls the proxy reads less than
/// one copy of the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_big_manifest_is_not_read_again() {
    let _echo = svc_testkit::spawn_tcp_echo("127.175.0.11:7001".parse().unwrap())
        .await
        .unwrap();
    let m = echo_manifests("big-file", 175);
    // 8 MB that parse quickly (comments), so that the test measures reading, not parsing.
    let mut big = String::from("# padding\n");
    let line = format!("# {}\n", "x".repeat(98));
    while big.len() < 8 << 20 {
        big.push_str(&line);
    }
    big.push_str(&service("big", "None", &["{name: tcp, port: 7000}"], ""));
    m.write("big.yaml", &big);
    let log = m.dir.join("proxy.log");
    let admin = "127.175.0.1:9901";
    let mut child = spawn_proxy(
        &[],
        &[
            "--manifests",
            m.path().to_str().unwrap(),
            "--admin-addr",
            admin,
        ],
        &log,
    );
    wait_listening("127.175.0.1:7000".parse().unwrap()).await;
    let pid = child.id().unwrap();
    let polls = child_metric(admin, "svc_proxy_manifest_polls_total").await;
    let before = bytes_read(pid);
    // Several polls (one a second).
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let read = bytes_read(pid) - before;
    assert!(
        read < big.len() as u64,
        "{read} bytes read in 4 s for an unchanged {} byte manifest",
        big.len()
    );
    let polls_after = child_metric(admin, "svc_proxy_manifest_polls_total").await;
    let (polls, polls_after) = (
        polls.expect("the polls counter"),
        polls_after.expect("the polls counter"),
    );
    assert!(
        polls_after >= polls + 2.0,
        "the source kept polling: {polls} -> {polls_after}"
    );
    sigterm(&child);
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}

/// A manifests file that does not parse stops the proxy at once, with the parser's message,
/// before anything is served; a missing path fails the start. (A bad file in a directory does
/// not: the directory's other files are served and `/readyz` names the bad one, see
/// `inputs.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_manifests_stop_the_proxy_with_the_error() {
    let m = Manifests::new("invalid");
    m.write(
        "svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: [oops\n",
    );
    for (path, expect) in [
        (m.dir.join("svc.yaml"), "svc.yaml"),
        (m.dir.join("missing"), "missing"),
    ] {
        let log =
            std::env::temp_dir().join(format!("svc-proxy-invalid-{}.log", std::process::id()));
        let mut child = spawn_proxy(
            &[],
            &[
                "--manifests",
                path.to_str().unwrap(),
                "--admin-addr",
                "127.137.0.1:0",
            ],
            &log,
        );
        let status = tokio::time::timeout(DEADLINE, child.wait())
            .await
            .expect("exits")
            .unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        let _ = std::fs::remove_file(&log);
        assert!(!status.success(), "{text}");
        assert!(text.contains(expect), "{text}");
    }
}
