//! The synthetic cluster in svc-testkit's fake API server, and timed Service adds.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use svc_testkit::{endpoint_slice, service, EndpointSpec, FakeApiServer};

use crate::probe;

/// The loopback addresses one proxy run uses (each run has its own, so that a listener left
/// by one run can never answer for the next).
#[derive(Clone, Copy)]
pub struct Range {
    /// Shown in progress lines.
    pub name: &'static str,
    /// Second octet of the first ClusterIP.
    vip_octet: u8,
    /// Second octets the ClusterIPs may use (65,536 Services each).
    vip_span: usize,
    /// Second octet of the ClusterIPs of added Services.
    add_octet: u8,
    /// The proxy's admin address.
    pub admin: SocketAddr,
}

impl Range {
    pub const LARGE: Range = Range {
        name: "n",
        vip_octet: 200,
        vip_span: 20,
        add_octet: 235,
        admin: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 250, 0, 1)), 9901),
    };
    pub const SMALL: Range = Range {
        name: "small",
        vip_octet: 230,
        vip_span: 5,
        add_octet: 236,
        admin: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 250, 0, 2)), 9901),
    };
}

fn loopback(second: u8, n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        second + (n >> 16) as u8,
        (n >> 8) as u8,
        n as u8,
    ))
}

/// The ClusterIP:port of Service `i` in `range`.
pub fn vip(range: Range, port: u16, i: usize) -> SocketAddr {
    SocketAddr::new(loopback(range.vip_octet, i), port)
}

/// Endpoint `j` of Service `i`: 127.220.0.0 onwards. Nothing listens there; connections to
/// them are refused at once, on loopback.
fn endpoint_ip(i: usize, j: usize, per_service: usize) -> IpAddr {
    loopback(220, i * per_service + j)
}

/// The same Services as [`Cluster::start`] makes, as a manifests file.
pub fn manifests(services: usize, endpoints: usize, port: u16, range: Range) -> String {
    let mut out = String::with_capacity(services * (400 + endpoints * 100));
    for i in 0..services {
        let (ns, name) = (format!("ns-{}", i % 100), format!("svc-{i}"));
        let vip = loopback(range.vip_octet, i);
        out.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  clusterIP: {vip}\n  ports: [{{name: tcp, port: {port}, targetPort: 8080}}]\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}-abcde, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{name: tcp, port: 8080, protocol: TCP}}]\nendpoints:\n"
        ));
        for j in 0..endpoints {
            out.push_str(&format!(
                "- {{addresses: [\"{}\"], conditions: {{ready: true}}, zone: {}, nodeName: node-{}}}\n",
                endpoint_ip(i, j, endpoints),
                ["a", "b", "c"][j % 3],
                j % 50
            ));
        }
        out.push_str("---\n");
    }
    out
}

/// A fake API server holding the Services, and a client to change them.
pub struct Cluster {
    pub server: FakeApiServer,
    client: kube::Client,
    port: u16,
    range: Range,
}

impl Cluster {
    pub async fn start(services: usize, endpoints: usize, port: u16, range: Range) -> Self {
        assert!(
            services >> 16 < range.vip_span,
            "at most {} Services fit the address plan",
            range.vip_span << 16
        );
        let server = FakeApiServer::start().await;
        for i in 0..services {
            let (ns, name) = (format!("ns-{}", i % 100), format!("svc-{i}"));
            server.apply_service(
                service(&ns, &name)
                    .cluster_ip(&loopback(range.vip_octet, i).to_string())
                    .port("tcp", i32::from(port), 8080)
                    .build(),
            );
            server.apply_slice(
                endpoint_slice(&ns, &format!("{name}-abcde"), &name)
                    .port(Some("tcp"), 8080)
                    .endpoints((0..endpoints).map(|j| {
                        EndpointSpec::new(&endpoint_ip(i, j, endpoints).to_string())
                            .zone(["a", "b", "c"][j % 3])
                            .node(&format!("node-{}", j % 50))
                            .target_pod(&format!("{name}-pod-{j}"))
                    }))
                    .build(),
            );
        }
        let client = server.client();
        Self {
            server,
            client,
            port,
            range,
        }
    }

    /// The ClusterIP:port of Service `i`.
    pub fn vip(&self, i: usize) -> SocketAddr {
        vip(self.range, self.port, i)
    }

    /// Creates Service `add/add-k` through the API (its EndpointSlice, pointing at `echo`,
    /// first) and returns the time from the API's answer to the first connection through its
    /// ClusterIP that the backend echoed. Deletes both afterwards.
    pub async fn time_add(&self, k: usize, echo: SocketAddr) -> anyhow::Result<Duration> {
        let (ns, name) = ("add", format!("add-{k}"));
        let vip = SocketAddr::new(loopback(self.range.add_octet, k), self.port);
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let services: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let slice_name = format!("{name}-abcde");
        let slice = endpoint_slice(ns, &slice_name, &name)
            .port(Some("tcp"), i32::from(echo.port()))
            .endpoint(EndpointSpec::new(&echo.ip().to_string()))
            .build();
        slices
            .create(&PostParams::default(), &slice)
            .await
            .context("creating the EndpointSlice")?;
        let svc = service(ns, &name)
            .cluster_ip(&vip.ip().to_string())
            .port("tcp", i32::from(self.port), i32::from(echo.port()))
            .build();
        services
            .create(&PostParams::default(), &svc)
            .await
            .context("creating the Service")?;
        let answered = Instant::now();
        probe::wait_echo(vip, Duration::from_secs(30)).await?;
        let took = answered.elapsed();
        services.delete(&name, &DeleteParams::default()).await?;
        slices.delete(&slice_name, &DeleteParams::default()).await?;
        Ok(took)
    }
}
