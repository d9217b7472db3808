//! `--manage-interface` and `--service-cidr`, inside a network namespace this test creates
//! (needs root and `ip`).
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
        text.contains("4 passed"),
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

/// A test interface: a fresh ifb device when the kernel has the driver, else `lo`.
fn test_device(name: &'static str) -> &'static str {
    sh("ip", &["link", "set", "lo", "up"]).unwrap();
    if sh("ip", &["link", "add", name, "type", "ifb"]).is_ok() {
        name
    } else {
        "lo"
    }
}

/// Only addresses the proxy added are removed: one an admin (or an earlier run) put on the
/// interface stays when the Service that used it goes. Fifty Services' addresses go in and
/// out in one batch of netlink requests each way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by manage_interface_adds_and_removes_cluster_ips_in_a_network_namespace"]
async fn inner_addresses_already_there_are_never_removed() {
    assert_eq!(std::env::var(INNER_ENV).as_deref(), Ok("1"));
    let dev = test_device("svc1");
    sh("ip", &["addr", "add", "10.96.1.200/32", "dev", dev]).unwrap();
    let _backend = svc_testkit::spawn_http_backend("127.0.0.12:8080".parse().unwrap())
        .await
        .unwrap();
    let m = Manifests::new("iface-owned");
    let mut yaml = String::new();
    for i in 0..50 {
        let name = format!("web-{i}");
        let ip = if i == 0 {
            "10.96.1.200".to_string()
        } else {
            format!("10.96.1.{i}")
        };
        yaml.push_str(&service(
            &name,
            &ip,
            &["{name: http, port: 80, targetPort: 8080}"],
            "",
        ));
        yaml.push_str("---\n");
        yaml.push_str(&slice(
            &format!("{name}-1"),
            &name,
            ("http", 8080, "TCP"),
            &[("127.0.0.12", true, "")],
        ));
        yaml.push_str("---\n");
    }
    m.write("services.yaml", &yaml);
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.0.0.1:9903",
        "--manage-interface",
        dev,
    ])
    .await;
    // Ready means programmed: at the first 200 every address is in place and every ClusterIP
    // accepts.
    let admin: std::net::SocketAddr = "127.0.0.1:9903".parse().unwrap();
    first_ready(admin).await;
    let a = addresses(dev);
    for i in 1..50 {
        assert!(
            a.contains(&format!("10.96.1.{i}/32")),
            "/readyz was 200 before 10.96.1.{i} was added: {a}"
        );
    }
    for i in 0..50 {
        let vip = if i == 0 {
            "10.96.1.200:80".to_string()
        } else {
            format!("10.96.1.{i}:80")
        };
        assert!(
            tokio::net::TcpStream::connect(&vip).await.is_ok(),
            "/readyz was 200 before {vip} accepted"
        );
    }
    for ip in ["10.96.1.200", "10.96.1.1", "10.96.1.49"] {
        assert!(curl(&format!("http://{ip}/")).await.is_some(), "{ip}");
    }
    m.remove("services.yaml");
    eventually("the proxy's addresses are removed", || async {
        let a = addresses(dev);
        (1..50)
            .all(|i| !a.contains(&format!("10.96.1.{i}/32")))
            .then_some(())
    })
    .await;
    assert!(
        addresses(dev).contains("10.96.1.200/32"),
        "the address the proxy did not add was removed: {}",
        addresses(dev)
    );
    proxy.stop().await.unwrap();
}

/// `--service-cidr` makes the whole range local with one route: ClusterIPs in it are served
/// with no address on any interface; one outside it (and no `--manage-interface`) fails
/// loudly, as an address that is not local.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by manage_interface_adds_and_removes_cluster_ips_in_a_network_namespace"]
async fn inner_service_cidr_routes_the_whole_range() {
    assert_eq!(std::env::var(INNER_ENV).as_deref(), Ok("1"));
    sh("ip", &["link", "set", "lo", "up"]).unwrap();
    let _backend = svc_testkit::spawn_http_backend("127.0.0.13:8080".parse().unwrap())
        .await
        .unwrap();
    let m = Manifests::new("service-cidr");
    for (name, ip) in [("inside", "10.97.3.4"), ("outside", "10.98.0.1")] {
        m.write(
            &format!("{name}.yaml"),
            &format!(
                "{}---\n{}",
                service(name, ip, &["{name: http, port: 80, targetPort: 8080}"], ""),
                slice(
                    &format!("{name}-1"),
                    name,
                    ("http", 8080, "TCP"),
                    &[("127.0.0.13", true, "")]
                )
            ),
        );
    }
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.0.0.1:9904",
        "--service-cidr",
        "10.97.0.0/16",
    ])
    .await;
    let routes = Command::new("ip")
        .args(["route", "show", "table", "local"])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(
        routes.contains("local 10.97.0.0/16 dev lo"),
        "no local route: {routes}"
    );
    eventually("traffic flows through a ClusterIP in the CIDR", || async {
        curl("http://10.97.3.4/").await
    })
    .await;
    let all = Command::new("ip").args(["-o", "addr"]).output().unwrap();
    let all = String::from_utf8_lossy(&all.stdout);
    assert!(!all.contains("10.97.3.4"), "an address was added: {all}");
    let verbose = eventually("the ClusterIP outside the CIDR fails", || async {
        let (status, body) = proxy.admin("/readyz?verbose").await;
        (status == 503 && body.contains("[-]service/test/outside failed")).then_some(body)
    })
    .await;
    assert!(verbose.contains("address_not_available"), "{verbose}");
    // Only the Service outside the CIDR fails.
    assert!(!verbose.contains("service/test/inside"), "{verbose}");
    proxy.stop().await.unwrap();
    // A second start finds the route there already and carries on.
    let again = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.0.0.1:9905",
        "--service-cidr",
        "10.97.0.0/16",
    ])
    .await;
    eventually("traffic flows again", || async {
        curl("http://10.97.3.4/").await
    })
    .await;
    again.stop().await.unwrap();
}
