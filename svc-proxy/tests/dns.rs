//! DNS end to end, with the real `dig` (Debian's dnsutils).

mod common;

use common::*;

struct Dig {
    status: String,
    flags: String,
    answers: Vec<Vec<String>>,
    additionals: Vec<Vec<String>>,
}

/// `dig @server -p port ARGS`: the status, header flags and the answer and additional sections
/// (each record split on whitespace: name, ttl, class, type, data...).
async fn dig(server: std::net::SocketAddr, args: &[&str]) -> Dig {
    let port = server.port().to_string();
    let at = format!("@{}", server.ip());
    let mut all = vec![
        at.as_str(),
        "-p",
        &port,
        "+tries=1",
        "+time=5",
        "+noall",
        "+comments",
        "+answer",
        "+additional",
    ];
    all.extend_from_slice(args);
    let out = run("dig", &all).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dig failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("")
        .to_string();
    let flags = text
        .split("flags: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or("")
        .to_string();
    let (mut answers, mut additionals) = (Vec::new(), Vec::new());
    let mut section = "";
    for line in text.lines() {
        if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; ADDITIONAL SECTION") {
            section = "additional";
        } else if line.starts_with(';') || line.trim().is_empty() {
            continue;
        } else {
            let rec: Vec<String> = line.split_whitespace().map(String::from).collect();
            match section {
                "answer" => answers.push(rec),
                "additional" => additionals.push(rec),
                _ => {}
            }
        }
    }
    Dig {
        status,
        flags,
        answers,
        additionals,
    }
}

fn data(d: &Dig) -> Vec<String> {
    let mut v: Vec<String> = d.answers.iter().map(|r| r[3..].join(" ")).collect();
    v.sort();
    v
}

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: test}
spec:
  clusterIP: 127.51.0.1
  clusterIPs: [127.51.0.1, "fd00::51"]
  ports: [{name: http, port: 80, targetPort: 8080}, {name: dns, port: 53, protocol: UDP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: test, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: ["127.51.0.11"], conditions: {ready: true}}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: test}
spec:
  clusterIP: None
  ports: [{name: pg, port: 5432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: test, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: pg, port: 5432}]
endpoints:
- {addresses: ["127.51.0.21"], hostname: db-0, conditions: {ready: true}}
- {addresses: ["127.51.0.22"], hostname: db-1, conditions: {ready: true}}
- {addresses: ["127.51.0.23"], hostname: db-2, conditions: {ready: false}}
---
apiVersion: v1
kind: Service
metadata: {name: docs, namespace: test}
spec: {type: ExternalName, externalName: docs.example.com}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_dns_answers_from_the_store() {
    let m = Manifests::new("dns");
    m.write("all.yaml", MANIFESTS);
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.51.0.1:9901",
        "--dns-addr",
        "127.51.0.53:5353",
    ])
    .await;
    let dns = proxy.dns.unwrap();
    eventually("dns serves the store", || async {
        (dig(dns, &["web.test.svc.cluster.local"]).await.status == "NOERROR").then_some(())
    })
    .await;

    // A and AAAA: the cluster IPs, authoritative, TTL 5 by default.
    let a = dig(dns, &["web.test.svc.cluster.local", "A"]).await;
    assert_eq!(data(&a), ["A 127.51.0.1"]);
    assert_eq!(a.answers[0][1], "5", "default TTL");
    assert!(a.flags.contains("aa"), "{}", a.flags);
    let aaaa = dig(dns, &["web.test.svc.cluster.local", "AAAA"]).await;
    assert_eq!(data(&aaaa), ["AAAA fd00::51"]);
    // Case does not matter.
    assert_eq!(
        data(&dig(dns, &["WEB.Test.SVC.cluster.LOCAL"]).await),
        ["A 127.51.0.1"]
    );

    // SRV for a named port, with the target's addresses as additional records.
    let srv = dig(dns, &["_http._tcp.web.test.svc.cluster.local", "SRV"]).await;
    assert_eq!(data(&srv), ["SRV 0 100 80 web.test.svc.cluster.local."]);
    assert!(
        srv.additionals
            .iter()
            .any(|r| r[3..].join(" ") == "A 127.51.0.1"),
        "{:?}",
        srv.additionals
    );
    assert_eq!(
        data(&dig(dns, &["_dns._udp.web.test.svc.cluster.local", "SRV"]).await),
        ["SRV 0 100 53 web.test.svc.cluster.local."]
    );
    assert_eq!(
        dig(dns, &["_nope._tcp.web.test.svc.cluster.local", "SRV"])
            .await
            .status,
        "NXDOMAIN"
    );

    // Headless: the ready endpoints; SRV per endpoint; per-endpoint names.
    assert_eq!(
        data(&dig(dns, &["db.test.svc.cluster.local"]).await),
        ["A 127.51.0.21", "A 127.51.0.22"]
    );
    assert_eq!(
        data(&dig(dns, &["_pg._tcp.db.test.svc.cluster.local", "SRV"]).await),
        [
            "SRV 0 50 5432 db-0.db.test.svc.cluster.local.",
            "SRV 0 50 5432 db-1.db.test.svc.cluster.local."
        ]
    );
    assert_eq!(
        data(&dig(dns, &["db-1.db.test.svc.cluster.local"]).await),
        ["A 127.51.0.22"]
    );
    assert_eq!(
        dig(dns, &["db-2.db.test.svc.cluster.local"]).await.status,
        "NXDOMAIN",
        "not ready: not published"
    );

    // ExternalName: a CNAME.
    assert_eq!(
        data(&dig(dns, &["docs.test.svc.cluster.local"]).await),
        ["CNAME docs.example.com."]
    );

    // Unknown names in the cluster domain: NXDOMAIN. Outside it: REFUSED (not an open resolver).
    assert_eq!(
        dig(dns, &["nope.test.svc.cluster.local"]).await.status,
        "NXDOMAIN"
    );
    assert_eq!(dig(dns, &["example.com"]).await.status, "REFUSED");

    // TCP works too.
    assert_eq!(
        data(&dig(dns, &["+tcp", "web.test.svc.cluster.local"]).await),
        ["A 127.51.0.1"]
    );

    // Garbage does not kill it.
    let junk = tokio::net::UdpSocket::bind("127.51.0.100:0").await.unwrap();
    for packet in [
        &b""[..],
        b"\x00",
        b"garbage garbage garbage",
        &[0xffu8; 600][..],
        &[0u8; 12][..],
    ] {
        junk.send_to(packet, dns).await.unwrap();
    }
    let mut tcp = tokio::net::TcpStream::connect(dns).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"\x00\x05hello")
        .await
        .unwrap();
    drop(tcp);
    assert_eq!(
        data(&dig(dns, &["web.test.svc.cluster.local"]).await),
        ["A 127.51.0.1"]
    );

    // Answers follow the store.
    m.write(
        "all.yaml",
        &MANIFESTS
            .replace("127.51.0.1, ", "127.51.0.2, ")
            .replace("clusterIP: 127.51.0.1", "clusterIP: 127.51.0.2"),
    );
    eventually("the new cluster IP is served", || async {
        (data(&dig(dns, &["web.test.svc.cluster.local"]).await) == ["A 127.51.0.2"]).then_some(())
    })
    .await;

    let (_, metrics) = proxy.admin("/metrics").await;
    assert!(
        metric(&metrics, r#"svc_proxy_dns_queries_total{rcode="REFUSED"}"#).unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );
    proxy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_outside_the_domain_are_forwarded_only_when_asked_and_ttl_is_configurable() {
    // Upstream: a proxy serving the `up.example` domain.
    let m = Manifests::new("dns-forward");
    m.write("all.yaml", &MANIFESTS.replace("127.51.", "127.52."));
    let upstream = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.52.0.1:9901",
        "--dns-addr",
        "127.52.0.53:5353",
        "--cluster-domain",
        "up.example",
    ])
    .await;
    let front = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.52.0.2:9901",
        "--dns-addr",
        "127.52.0.54:5353",
        "--dns-forward",
        "127.52.0.53:5353",
        "--dns-ttl",
        "2",
    ])
    .await;
    let dns = front.dns.unwrap();
    let fwd = eventually("forwarded answer", || async {
        let d = dig(dns, &["web.test.svc.up.example"]).await;
        (d.status == "NOERROR" && !d.answers.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(data(&fwd), ["A 127.52.0.1"]);
    assert!(
        fwd.flags.contains("ra"),
        "forwarding advertises recursion: {}",
        fwd.flags
    );
    assert_eq!(
        dig(dns, &["nope.test.svc.up.example"]).await.status,
        "NXDOMAIN"
    );
    // Its own domain is still answered locally, with the configured TTL.
    let own = dig(dns, &["web.test.svc.cluster.local"]).await;
    assert_eq!(data(&own), ["A 127.52.0.1"]);
    assert_eq!(own.answers[0][1], "2");
    front.stop().await.unwrap();
    upstream.stop().await.unwrap();
}

/// Item 19, DNS: the reverse name of a Service's cluster IP (IPv4 and IPv6) gets a PTR to the
/// Service's name, as CoreDNS answers it (it was REFUSED), while other reverse names stay
/// outside the zone; a zone transfer is REFUSED (it was NOERROR with only the SOA), over UDP
/// and over TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ptr_for_cluster_ips_and_no_zone_transfers() {
    let m = Manifests::new("dns-ptr");
    m.write("all.yaml", &MANIFESTS.replace("127.51.", "127.177."));
    let proxy = Proxy::start(&[
        "--manifests",
        m.path().to_str().unwrap(),
        "--admin-addr",
        "127.177.0.1:9901",
        "--dns-addr",
        "127.177.0.53:5353",
    ])
    .await;
    let dns = proxy.dns.unwrap();
    eventually("dns serves the store", || async {
        (dig(dns, &["web.test.svc.cluster.local"]).await.status == "NOERROR").then_some(())
    })
    .await;

    let ptr = dig(dns, &["-x", "127.177.0.1"]).await;
    assert_eq!(ptr.status, "NOERROR");
    assert!(ptr.flags.contains("aa"), "{}", ptr.flags);
    assert_eq!(data(&ptr), ["PTR web.test.svc.cluster.local."]);
    assert_eq!(ptr.answers[0][0], "1.0.177.127.in-addr.arpa.");
    let ptr6 = dig(dns, &["-x", "fd00::51"]).await;
    assert_eq!(data(&ptr6), ["PTR web.test.svc.cluster.local."]);
    // An endpoint's IP or any other address is not a Service's: not ours to answer.
    assert_eq!(dig(dns, &["-x", "127.177.0.11"]).await.status, "REFUSED");

    let udp = dig(dns, &["cluster.local", "AXFR", "+notcp"]).await;
    assert_eq!(udp.status, "REFUSED");
    assert!(udp.answers.is_empty());
    let port = dns.port().to_string();
    let at = format!("@{}", dns.ip());
    let tcp = run(
        "dig",
        &[
            &at,
            "-p",
            &port,
            "+tries=1",
            "+time=5",
            "cluster.local",
            "AXFR",
        ],
    )
    .await;
    let text = String::from_utf8_lossy(&tcp.stdout);
    assert!(text.contains("Transfer failed."), "{text}");
    assert!(!text.contains("SOA"), "no records are transferred: {text}");
    let ixfr = dig(dns, &["cluster.local", "IXFR=1", "+notcp"]).await;
    assert_eq!(ixfr.status, "REFUSED");
    proxy.stop().await.unwrap();
}
