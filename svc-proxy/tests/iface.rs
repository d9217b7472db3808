//! `--manage-interface`, inside a network namespace this test creates (needs root and `ip`).
//!
//! The outer test creates the namespace and re-runs this test binary inside it (`ip netns exec`)
//! with only the ignored inner test selected; the inner test runs the proxy in-process there,
//! so interface changes never touch the host. Where namespaces cannot be created, the test says
//! so loudly and passes without checking anything.

mod common;

use std::process::Command;

use common::*;

const INNER_ENV: &str = "SVC_PROXY_NETNS_INNER";

fn sh(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn manage_interface_adds_and_removes_cluster_ips_in_a_network_namespace() {
    let ns = format!("svcproxy-{}", std::process::id());
    if let Err(why) = sh("ip", &["netns", "add", &ns]) {
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        );
        eprintln!("!!! SKIPPED: --manage-interface NOT TESTED: cannot create a network namespace");
        eprintln!("!!! ({why}); run the tests as root with iproute2 installed to test it.");
        eprintln!(
            "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let result = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(&exe)
        .args(["inner_", "--ignored", "--nocapture", "--test-threads", "1"])
        .env(INNER_ENV, "1")
        .output();
    let _ = sh("ip", &["netns", "del", &ns]);
    let out = result.expect("running the inner test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "inner test failed:\n{text}");
    assert!(
        text.contains("2 passed"),
        "the inner tests did not run:\n{text}"
    );
}

fn addresses(dev: &str) -> String {
    let out = Command::new("ip")
        .args(["-o", "addr", "show", "dev", dev])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs inside the namespace (see above); ignored when run directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by manage_interface_adds_and_removes_cluster_ips_in_a_network_namespace"]
async fn inner_manage_interface() {
    assert_eq!(
        std::env::var(INNER_ENV).as_deref(),
        Ok("1"),
        "only runs inside the test's namespace"
    );
    sh("ip", &["link", "set", "lo", "up"]).unwrap();
    // This kernel may lack the dummy driver; an ifb device (or any existing interface) works
    // as well. Without the ifb driver either, fall back to lo.
    let dev = if sh("ip", &["link", "add", "svc0", "type", "ifb"]).is_ok() {
        "svc0"
    } else {
        "lo"
    };
    eprintln!("managing interface {dev}");
    let _backend = svc_testkit::spawn_http_backend("127.0.0.11:8080".parse().unwrap())
        .await
        .unwrap();
    let m = Manifests::new("iface");
    m.write(
        "svc.yaml",
        &service(
            "web",
            "10.96.0.10",
            &["{name: http, port: 80, targetPort: 8080}"],
            "",
        ),
    );
    m.write(
        "slice.yaml",
        &slice(
            "web-1",
            "web",
            ("http", 8080, "TCP"),
            &[("127.0.0.11", true, "")],
        ),
    );
    assert!(!addresses(dev).contains("10.96.0.10/32"));
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.0.0.1:9901",
        "--manage-interface",
        dev,
    ])
    .await;
    eventually("the cluster IP is added", || async {
        addresses(dev).contains("10.96.0.10/32").then_some(())
    })
    .await;
    // The address is local now, so the listener on it is reachable.
    eventually("traffic flows through the cluster IP", || async {
        curl("http://10.96.0.10/")
            .await
            .filter(|b| b == "127.0.0.11:8080")
    })
    .await;
    // Moving the Service to another cluster IP moves the address.
    m.write(
        "svc.yaml",
        &service(
            "web",
            "10.96.0.11",
            &["{name: http, port: 80, targetPort: 8080}"],
            "",
        ),
    );
    eventually(
        "the new cluster IP is added and the old one removed",
        || async {
            let a = addresses(dev);
            (a.contains("10.96.0.11/32") && !a.contains("10.96.0.10/32")).then_some(())
        },
    )
    .await;
    eventually("traffic flows through the new cluster IP", || async {
        curl("http://10.96.0.11/").await
    })
    .await;
    m.remove("svc.yaml");
    eventually("the address is removed with the Service", || async {
        (!addresses(dev).contains("10.96.0.11/32")).then_some(())
    })
    .await;
    proxy.stop().await.unwrap();
}

/// A missing interface is created as a dummy when the kernel can; when it cannot, starting
/// fails with an error that says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by manage_interface_adds_and_removes_cluster_ips_in_a_network_namespace"]
async fn inner_missing_interface() {
    assert_eq!(std::env::var(INNER_ENV).as_deref(), Ok("1"));
    let m = Manifests::new("iface-missing");
    m.write(
        "svc.yaml",
        &service(
            "web",
            "10.96.0.20",
            &["{name: http, port: 80, targetPort: 8080}"],
            "",
        ),
    );
    let args = svc_proxy::Args::try_from_flags([
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.0.0.1:9902",
        "--manage-interface",
        "kube-svc0",
    ])
    .unwrap();
    match svc_proxy::start(args).await {
        Ok(running) => {
            eprintln!("the dummy driver is available: kube-svc0 was created");
            assert!(sh("ip", &["link", "show", "kube-svc0"]).is_ok());
            eventually("the cluster IP is added", || async {
                addresses("kube-svc0")
                    .contains("10.96.0.20/32")
                    .then_some(())
            })
            .await;
            running.run_until(async {}).await.unwrap();
        }
        Err(e) => {
            let msg = e.to_string();
            eprintln!("no dummy driver: {msg}");
            assert!(
                msg.contains("kube-svc0") && msg.contains("create it first"),
                "{msg}"
            );
        }
    }
}
