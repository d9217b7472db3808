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
        if !echoes_intact(request.queries.as_bytes()) {
            // Every response echoes the question's bytes as received; these would not parse.
            tracing::debug!("dropping a query whose question points outside itself");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::FormErr;
            return ResponseInfo::from(hickory_server::proto::op::Header {
                metadata,
                counts: Default::default(),
            });
        }
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

/// Whether the question section, copied as received into a response (hickory-server echoes
/// the original bytes), still decodes there: none of its names may use a compression pointer
/// outside the question section itself. A pointer into the header decodes in the query, whose
/// header bytes differ from the response's, into labels no one can read back (found by the
/// `dns_answer` fuzz target).
fn echoes_intact(question: &[u8]) -> bool {
    /// The question section starts right after the 12-byte header.
    const START: usize = 12;
    let end = START + question.len();
    let mut i = 0;
    while i < question.len() {
        // One name, then type and class.
        loop {
            let Some(&len) = question.get(i) else {
                return false;
            };
            match len & 0xC0 {
                0x00 if len == 0 => {
                    i += 1;
                    break;
                }
                0x00 => i += 1 + usize::from(len),
                0xC0 => {
                    let Some(&low) = question.get(i + 1) else {
                        return false;
                    };
                    let target = usize::from(len & 0x3F) << 8 | usize::from(low);
                    if !(START..end).contains(&target) {
                        return false;
                    }
                    i += 2;
                    break;
                }
                _ => return false,
            }
        }
        i += 4;
    }
    i == question.len()
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

#[cfg(test)]
mod tests {
    use super::echoes_intact;

    #[test]
    fn questions_that_point_outside_themselves_are_caught() {
        // web.shop, type A, class IN.
        let plain = b"\x03web\x04shop\x00\x00\x01\x00\x01";
        assert!(echoes_intact(plain));
        // A second question pointing at the first name (offset 12): fine in the echo too.
        let mut two = plain.to_vec();
        two.extend_from_slice(b"\xc0\x0c\x00\x1c\x00\x01");
        assert!(echoes_intact(&two));
        // A name pointing into the header (offset 2).
        assert!(!echoes_intact(b"\x03web\xc0\x02\x00\x01\x00\x01"));
        // Pointing past the question, a reserved label type, or cut short.
        assert!(!echoes_intact(b"\x03web\xc0\xff\x00\x01\x00\x01"));
        assert!(!echoes_intact(b"\x43web\x00\x00\x01\x00\x01"));
        assert!(!echoes_intact(b"\x03web\x04sh"));
    }
}
