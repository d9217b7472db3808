//! Dual stack end to end: a dual-stack Service's IPv4 addresses reach only its IPv4
//! endpoints and its IPv6 addresses only its IPv6 endpoints, in TCP, HTTP and UDP mode and on
//! NodePorts, as through kube-proxy (one proxier per family, each seeing its family's slices).
//!
//! IPv6 addresses under fd00:220::/32 are added to `lo` for the test (root, `ip -6`) and
//! removed when it ends.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use common::*;
use svc_testkit::Backend;
use tokio::net::UdpSocket;

/// How many connections (requests, flows) each address gets. With two endpoints per family
/// and the families mixed, each would land on the other family half the time.
const N: usize = 20;

/// IPv6 addresses on `lo`, removed on drop.
struct LoopbackV6(Vec<&'static str>);

impl LoopbackV6 {
    fn add(addrs: &[&'static str]) -> Self {
        let mut guard = Self(Vec::new());
        for a in addrs {
            // A run killed before its guard dropped may have left the address: take it over.
            let _ = ip(&["-6", "addr", "del", &format!("{a}/128"), "dev", "lo"]);
            let out = ip(&[
                "-6",
                "addr",
                "add",
                &format!("{a}/128"),
                "dev",
                "lo",
                "nodad",
            ]);
            assert!(
                out.status.success(),
                "ip -6 addr add {a}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            guard.0.push(a);
        }
        guard
    }
}

impl Drop for LoopbackV6 {
    fn drop(&mut self) {
        for a in &self.0 {
            let _ = ip(&["-6", "addr", "del", &format!("{a}/128"), "dev", "lo"]);
        }
    }
}

fn ip(args: &[&str]) -> std::process::Output {
    Command::new("ip").args(args).output().expect("runs ip")
}

fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// An EndpointSlice with the three ports of the Service below.
fn slice(name: &str, address_type: &str, ips: &[&str]) -> String {
    let eps: Vec<String> = ips
        .iter()
        .map(|a| format!("- {{addresses: [\"{a}\"], conditions: {{ready: true}}}}"))
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: test, labels: {{kubernetes.io/service-name: web}}}}\naddressType: {address_type}\nports: [{{name: tcp, port: 8080, protocol: TCP}}, {{name: http, port: 8080, protocol: TCP}}, {{name: dns, port: 5353, protocol: UDP}}]\nendpoints:\n{}\n",
        eps.join("\n")
    )
}

/// `web`: dual stack with a TCP port (and NodePort), an HTTP port and a UDP port.
fn dual_stack_service(v4: &str, v6: &str, node_port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: test}}\nspec:\n  type: NodePort\n  clusterIP: {v4}\n  clusterIPs: [\"{v4}\", \"{v6}\"]\n  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n  ports:\n  - {{name: tcp, port: 80, targetPort: 8080, nodePort: {node_port}}}\n  - {{name: http, port: 81, targetPort: 8080, appProtocol: http}}\n  - {{name: dns, port: 53, targetPort: 5353, protocol: UDP}}\n"
    )
}

/// HTTP and UDP echo backends on `ips` (port 8080 and 5353).
async fn backends(ips: &[&str]) -> (Vec<Backend>, Vec<Backend>) {
    let (mut http, mut udp) = (Vec::new(), Vec::new());
    for ip in ips {
        http.push(svc_testkit::spawn_http_backend(sa(ip, 8080)).await.unwrap());
        udp.push(svc_testkit::spawn_udp_echo(sa(ip, 5353)).await.unwrap());
    }
    (http, udp)
}

/// Sends `N` GETs to `addr`, each on a fresh connection (HTTP/1.0), and counts the answers
/// by backend (each backend answers with its address).
async fn spread(addr: SocketAddr) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for i in 0..N {
        let (status, body) = http_get(addr, "/")
            .await
            .unwrap_or_else(|| panic!("request {i} to {addr} got no answer"));
        assert_eq!(status, 200, "request {i} to {addr}: {body}");
        *seen.entry(body).or_default() += 1;
    }
    seen
}

/// What went to the wrong family at `addr`, if anything (every answer must come from
/// `allowed`).
fn stray(addr: SocketAddr, seen: &BTreeMap<String, usize>, allowed: &[Backend]) -> Option<String> {
    assert_eq!(seen.values().sum::<usize>(), N, "{addr}: {seen:?}");
    let allowed: HashSet<String> = allowed.iter().map(|b| b.addr().to_string()).collect();
    let stray: Vec<_> = seen.keys().filter(|b| !allowed.contains(*b)).collect();
    (!stray.is_empty()).then(|| format!("{addr} reached {stray:?} ({seen:?})"))
}

/// Sends one datagram from each of `N` fresh sockets (N flows) to `addr`, and asserts each is
/// echoed on the first try. Returns how many datagrams `own` and `other` received meanwhile.
async fn udp_flows(addr: SocketAddr, own: &[Backend], other: &[Backend]) -> (u64, u64) {
    let (own_before, other_before) = (requests(own), requests(other));
    let local: SocketAddr = match addr.ip() {
        IpAddr::V4(_) => "0.0.0.0:0".parse().unwrap(),
        IpAddr::V6(_) => "[::]:0".parse().unwrap(),
    };
    for i in 0..N {
        let socket = UdpSocket::bind(local).await.unwrap();
        let msg = format!("query {i}");
        socket.send_to(msg.as_bytes(), addr).await.unwrap();
        let mut buf = [0; 64];
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("datagram {i} to {addr} not echoed"))
            .unwrap();
        assert_eq!(&buf[..len], msg.as_bytes());
    }
    (requests(own) - own_before, requests(other) - other_before)
}

fn requests(backends: &[Backend]) -> u64 {
    backends.iter().map(Backend::requests).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_family_reaches_only_its_own_endpoints() {
    let (v4_vip, v6_vip) = ("127.220.0.1", "fd00:220::1");
    let v4_ips = ["127.220.0.11", "127.220.0.12"];
    let v6_ips = ["fd00:220::11", "fd00:220::12"];
    let _lo = LoopbackV6::add(&[v6_vip, v6_ips[0], v6_ips[1]]);
    let (v4_http, v4_udp) = backends(&v4_ips).await;
    let (v6_http, v6_udp) = backends(&v6_ips).await;

    let m = Manifests::new("dualstack");
    m.write("svc.yaml", &dual_stack_service(v4_vip, v6_vip, 30220));
    m.write("slice-v4.yaml", &slice("web-v4", "IPv4", &v4_ips));
    m.write("slice-v6.yaml", &slice("web-v6", "IPv6", &v6_ips));
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.220.0.1:9901",
        "--nodeport-addr",
        "127.220.0.100",
    ])
    .await;
    // Ready means every listener is in place.
    first_ready(proxy.admin).await;

    // Every mode is checked before failing, so that a failure lists each one that mixes.
    let mut mixed = Vec::new();
    // TCP and HTTP mode, cluster IPs of both families.
    for (vip, own) in [(v4_vip, &v4_http), (v6_vip, &v6_http)] {
        for (port, mode) in [(80, "TCP"), (81, "HTTP")] {
            let addr = sa(vip, port);
            let seen = spread(addr).await;
            mixed.extend(stray(addr, &seen, own).map(|s| format!("{mode}: {s}")));
        }
    }
    // A NodePort on an IPv4 node address: IPv4 endpoints, as kube-proxy's IPv4 proxier.
    let node = sa("127.220.0.100", 30220);
    let seen = spread(node).await;
    mixed.extend(stray(node, &seen, &v4_http).map(|s| format!("NodePort: {s}")));
    // UDP: every new flow is a pick.
    for (vip, own, other) in [(v4_vip, &v4_udp, &v6_udp), (v6_vip, &v6_udp, &v4_udp)] {
        let (to_own, to_other) = udp_flows(sa(vip, 53), own, other).await;
        assert_eq!(to_own + to_other, N as u64, "UDP to {vip}");
        if to_other > 0 {
            mixed.push(format!(
                "UDP: {to_other} of {N} flows to {vip} reached the other family"
            ));
        }
    }
    assert!(mixed.is_empty(), "families mixed:\n{}", mixed.join("\n"));
    proxy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_port_on_an_ipv6_node_address_reaches_ipv6_endpoints() {
    let (v4_vip, v6_vip, node) = ("127.221.0.1", "fd00:221::1", "fd00:221::100");
    let v4_ips = ["127.221.0.11", "127.221.0.12"];
    let v6_ips = ["fd00:221::11", "fd00:221::12"];
    let _lo = LoopbackV6::add(&[v6_vip, node, v6_ips[0], v6_ips[1]]);
    let (_v4_http, _v4_udp) = backends(&v4_ips).await;
    let (v6_http, _v6_udp) = backends(&v6_ips).await;

    let m = Manifests::new("dualstack-nodeport-v6");
    m.write("svc.yaml", &dual_stack_service(v4_vip, v6_vip, 30221));
    m.write("slice-v4.yaml", &slice("web-v4", "IPv4", &v4_ips));
    m.write("slice-v6.yaml", &slice("web-v6", "IPv6", &v6_ips));
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.221.0.1:9901",
        "--nodeport-addr",
        node,
    ])
    .await;
    first_ready(proxy.admin).await;
    let addr = sa(node, 30221);
    assert_eq!(stray(addr, &spread(addr).await, &v6_http), None);
    proxy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_stack_service_keeps_endpoints_of_the_other_family() {
    // An IPv4 cluster IP whose only endpoints are IPv6 (a manifest on loopback): served by
    // them, as before families were split.
    let v6_ips = ["fd00:222::11", "fd00:222::12"];
    let _lo = LoopbackV6::add(&v6_ips);
    let (v6_http, _v6_udp) = backends(&v6_ips).await;
    let m = Manifests::new("dualstack-single");
    m.write(
        "svc.yaml",
        &service(
            "web",
            "127.222.0.1",
            &["{name: tcp, port: 80, targetPort: 8080}"],
            "",
        ),
    );
    m.write("slice-v6.yaml", &slice("web-v6", "IPv6", &v6_ips));
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.222.0.1:9901",
    ])
    .await;
    first_ready(proxy.admin).await;
    let addr = sa("127.222.0.1", 80);
    assert_eq!(stray(addr, &spread(addr).await, &v6_http), None);
    proxy.stop().await.unwrap();
}
