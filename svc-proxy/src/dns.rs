//! Cluster DNS (hickory-server), on UDP and TCP.
//!
//! Names under the cluster domain are answered from the store ([`answer::Zone`]), with a
//! configurable TTL (default 5 s, so that answers follow the store closely), and so are the
//! reverse names (PTR) of Service cluster IPs. Names outside it are REFUSED unless
//! `--dns-forward` names an upstream, which they are then forwarded to through
//! hickory-resolver: the proxy is not an open resolver. Zone transfers (AXFR, IXFR) are
//! REFUSED: the zone is computed per query, not a zone file. Malformed packets get FORMERR (or
//! are dropped when even the header does not parse) and never stop the server.

pub mod answer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::{DNSClass, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use answer::{Answer, Zone};

/// How long a TCP client may stay silent before its connection is closed.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers DNS queries from the store.
pub struct Handler {
    zone: Zone,
    forward: Option<TokioResolver>,
    metrics: Arc<Metrics>,
}

impl Handler {
    /// A handler for `zone`, forwarding other names to `forward` when given.
    ///
    /// # Errors
    /// [`Error::Forwarder`] when the forwarding resolver cannot be built.
    pub fn new(zone: Zone, forward: Option<SocketAddr>, metrics: Arc<Metrics>) -> Result<Self> {
        let forward = forward
            .map(|upstream| {
                let mut ns = NameServerConfig::udp_and_tcp(upstream.ip());
                for c in &mut ns.connections {
                    c.port = upstream.port();
                }
                let config = ResolverConfig::from_name_servers(vec![ns]);
                let mut builder =
                    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
                // Names arrive fully qualified; never append search domains.
                builder.options_mut().ndots = 0;
                builder.build().map_err(|e| Error::Forwarder(e.to_string()))
            })
            .transpose()?;
        Ok(Self {
            zone,
            forward,
            metrics,
        })
    }
}

/// Starts the DNS server on `addr` (UDP and TCP).
///
/// # Errors
/// [`Error::Bind`] when either socket cannot be bound.
pub async fn serve(addr: SocketAddr, handler: Handler) -> Result<Server<Handler>> {
    let bind = |source| Error::Bind { addr, source };
    let udp = UdpSocket::bind(addr).await.map_err(bind)?;
    let tcp = TcpListener::bind(addr).await.map_err(bind)?;
    let mut server = Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_TIMEOUT, 64 * 1024);
    tracing::info!(%addr, "dns listening");
    Ok(server)
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut edns = None;
        if let Some(req) = &request.edns {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().max(512));
            e.set_version(0);
            edns = Some(e);
        }
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let mut meta = Metadata::response_from_request(&request.metadata);
        let rcode_of = |m: &Metadata| m.response_code;

        let query = match request.request_info() {
            Ok(info)
                if request.metadata.message_type == MessageType::Query
                    && request.metadata.op_code == OpCode::Query =>
            {
                info.query
            }
            Ok(_) => {
                return self
                    .send(
                        &mut response,
                        builder.error_msg(&request.metadata, ResponseCode::NotImp),
                    )
                    .await
            }
            Err(_) => {
                return self
                    .send(
                        &mut response,
                        builder.error_msg(&request.metadata, ResponseCode::FormErr),
                    )
                    .await
            }
        };
        let name = hickory_server::proto::rr::Name::from(query.name());
        let qtype = query.query_type();
        if query.query_class() != DNSClass::IN {
            return self
                .send(
                    &mut response,
                    builder.error_msg(&request.metadata, ResponseCode::Refused),
                )
                .await;
        }

        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            tracing::debug!(%name, ?qtype, "refusing a zone transfer");
            return self
                .send(
                    &mut response,
                    builder.error_msg(&request.metadata, ResponseCode::Refused),
                )
                .await;
        }
        if let Some(answer) = self.zone.reverse(&name, qtype) {
            meta.authoritative = true;
            let answers = match answer {
                Answer::Records { answers, .. } => answers,
                Answer::NxDomain => Vec::new(),
            };
            let msg = builder.build(
                meta,
                answers.iter(),
                std::iter::empty(),
                std::iter::empty(),
                std::iter::empty(),
            );
            return self.send(&mut response, msg).await;
        }
        if self.zone.contains(&name) {
            meta.authoritative = true;
            let (answers, additionals, soa): (Vec<Record>, Vec<Record>, Vec<Record>) =
                match self.zone.answer(&name, qtype) {
                    Answer::Records {
                        answers,
                        additionals,
                    } => {
                        let soa = if answers.is_empty() {
                            vec![self.zone.soa().clone()]
                        } else {
                            vec![]
                        };
                        (answers, additionals, soa)
                    }
                    Answer::NxDomain => {
                        meta.response_code = ResponseCode::NXDomain;
                        (vec![], vec![], vec![self.zone.soa().clone()])
                    }
                };
            tracing::debug!(%name, ?qtype, rcode = %rcode_of(&meta), answers = answers.len(), "dns query");
            let msg = builder.build(
                meta,
                answers.iter(),
                std::iter::empty(),
                soa.iter(),
                additionals.iter(),
            );
            return self.send(&mut response, msg).await;
        }

        let Some(resolver) = &self.forward else {
            tracing::debug!(%name, ?qtype, "refusing a name outside the cluster domain");
            return self
                .send(
                    &mut response,
                    builder.error_msg(&request.metadata, ResponseCode::Refused),
                )
                .await;
        };
        meta.recursion_available = true;
        let answers: Vec<Record> = match resolver.lookup(name.clone(), qtype).await {
            Ok(lookup) => lookup.answers().to_vec(),
            Err(e) if e.is_nx_domain() => {
                meta.response_code = ResponseCode::NXDomain;
                vec![]
            }
            Err(e) if e.is_no_records_found() => vec![],
            Err(error) => {
                tracing::debug!(%name, ?qtype, %error, "forwarding failed");
                meta.response_code = ResponseCode::ServFail;
                vec![]
            }
        };
        let msg = builder.build(
            meta,
            answers.iter(),
            std::iter::empty(),
            std::iter::empty(),
            std::iter::empty(),
        );
        self.send(&mut response, msg).await
    }
}

impl Handler {
    async fn send<'a, R: ResponseHandler>(
        &self,
        response: &mut R,
        msg: hickory_server::zone_handler::MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> ResponseInfo {
        let rcode = msg.metadata().response_code;
        let mut fallback = Metadata::response_from_request(msg.metadata());
        self.metrics.dns_answered(rcode_name(rcode));
        match response.send_response(msg).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, "sending dns response failed");
                fallback.response_code = ResponseCode::ServFail;
                ResponseInfo::from(hickory_server::proto::op::Header {
                    metadata: fallback,
                    counts: Default::default(),
                })
            }
        }
    }
}

/// The usual mnemonic of a response code, for metric labels.
fn rcode_name(rcode: ResponseCode) -> &'static str {
    match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        _ => "OTHER",
    }
}
