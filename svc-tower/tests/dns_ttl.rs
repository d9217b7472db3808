//! ExternalName targets resolve through hickory-resolver, and an answer is not used past its
//! TTL: a tiny DNS server on 127.0.0.1 answers with a 1 s TTL, changes its answer, and the
//! next connect after the TTL goes to the new address.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::op::{Message, OpCode};
use hickory_resolver::proto::rr::rdata::A;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use hickory_resolver::TokioResolver;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::*;
use svc_core::model::ServiceType;
use svc_core::store::Event;
use svc_tower::balance::Pools;
use svc_tower::connect::SvcConnector;
use tokio::net::UdpSocket;

const NAME: &str = "backend.example.";
const TTL: u32 = 1;

/// Answers A queries for [`NAME`] with the address in `answer`, TTL 1 s; counts queries.
async fn dns_server(answer: Arc<AtomicU32>, queries: Arc<AtomicU64>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut response = Message::response(query.metadata.id, OpCode::Query);
            response.metadata.authoritative = true;
            response.metadata.recursion_desired = query.metadata.recursion_desired;
            response.metadata.recursion_available = true;
            for q in &query.queries {
                if q.query_type() == RecordType::A && q.name().to_ascii() == NAME {
                    queries.fetch_add(1, Ordering::SeqCst);
                    let ip = Ipv4Addr::from(answer.load(Ordering::SeqCst));
                    response.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(ip))));
                }
            }
            response.add_queries(query.queries.clone());
            if let Ok(bytes) = response.to_vec() {
                let _ = socket.send_to(&bytes, peer).await;
            }
        }
    });
    addr
}

fn resolver(server: SocketAddr) -> TokioResolver {
    let mut ns = NameServerConfig::udp(server.ip());
    ns.connections[0].port = server.port();
    let mut builder = TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    );
    builder.options_mut().use_hosts_file = ResolveHosts::Never;
    builder.build().unwrap()
}

#[tokio::test]
async fn external_name_answers_are_not_used_past_their_ttl() {
    let first = Backend::start([127, 0, 70, 1]).await;
    let port = first.addr.port();
    let second = {
        // Same port on the second address, so that only the IP in the DNS answer differs.
        let listener = std::net::TcpListener::bind((Ipv4Addr::new(127, 0, 70, 2), port));
        drop(listener.expect("port free on 127.0.70.2"));
        Backend::start_on(SocketAddr::from(([127, 0, 70, 2], port))).await
    };
    let answer = Arc::new(AtomicU32::new(u32::from(Ipv4Addr::new(127, 0, 70, 1))));
    let queries = Arc::new(AtomicU64::new(0));
    let dns = dns_server(answer.clone(), queries.clone()).await;

    let mut external = service([127, 0, 70, 100], None);
    external.key = svc_core::ServiceKey::new("shop", "ext");
    external.service_type = ServiceType::ExternalName;
    external.cluster_ips.clear();
    external.external_name = Some(Arc::from(NAME));
    let (mut w, store) = store(service([127, 0, 70, 101], None), &[]);
    w.apply(Event::ApplyService(external));

    let pools = Pools::new(store);
    let connector = SvcConnector::with_pools(pools).dns_resolver(resolver(dns));
    // No kept-alive connections: every request connects, and so resolves, again.
    let client: Client<_, Body> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector);
    let uri = format!("http://ext.shop:{port}/");

    let response = client.get(uri.parse().unwrap()).await.unwrap();
    assert_eq!(text(response).await, first.addr.to_string());
    assert_eq!(queries.load(Ordering::SeqCst), 1);

    answer.store(u32::from(Ipv4Addr::new(127, 0, 70, 2)), Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(u64::from(TTL) * 1000 + 500)).await;
    let response = client.get(uri.parse().unwrap()).await.unwrap();
    assert_eq!(
        text(response).await,
        second.addr.to_string(),
        "re-resolved after the TTL"
    );
    assert_eq!(queries.load(Ordering::SeqCst), 2);
}
