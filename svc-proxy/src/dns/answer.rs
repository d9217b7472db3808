//! The cluster zone: what a query for a name under `<cluster-domain>` is answered with.
//!
//! A pure function of the store and the query, following the Kubernetes DNS specification
//! (github.com/kubernetes/dns, `docs/specification.md`):
//!
//! - `svc.ns.svc.<domain>`: A/AAAA with the cluster IPs; for a headless Service, with the IPs
//!   of its ready endpoints (all of them with `publishNotReadyAddresses`); for an ExternalName
//!   Service, a CNAME to the external name.
//! - `_port._proto.svc.ns.svc.<domain>`: SRV for a named port, targeting the Service name (or,
//!   for a headless Service, each endpoint's own name), with the targets' addresses as
//!   additional records.
//! - `host.svc.ns.svc.<domain>`: A/AAAA of the endpoint of a headless Service with that
//!   hostname (or, without one, its IP with dashes: `10-0-0-1`).
//! - Anything else under the domain: NXDOMAIN with the zone's SOA, so that negative answers are
//!   cached for no longer than the TTL.
//! - `d.c.b.a.in-addr.arpa` / `….ip6.arpa` of a Service's cluster IP: PTR to the Service's
//!   name, as CoreDNS's kubernetes plugin answers ([`Zone::reverse`]). Other reverse names are
//!   not ours.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use svc_core::model::{Endpoint, Protocol, ServiceType};
use svc_core::store::ServiceSnapshot;
use svc_core::Store;

/// The outcome of a query in the cluster zone.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// NOERROR with these records (answers may be empty: NODATA).
    Records {
        /// The answer section.
        answers: Vec<Record>,
        /// The additional section.
        additionals: Vec<Record>,
    },
    /// NXDOMAIN: no such name.
    NxDomain,
}

/// The cluster zone.
#[derive(Clone, Debug)]
pub struct Zone {
    store: Store,
    origin: Name,
    ttl: u32,
    soa: Record,
}

impl Zone {
    /// The zone of `store`'s cluster domain, answering with `ttl`.
    ///
    /// # Errors
    /// When the cluster domain is not a valid DNS name.
    pub fn new(store: Store, ttl: u32) -> Result<Self, hickory_server::proto::ProtoError> {
        let mut origin =
            Name::from_ascii(store.config().cluster_domain.trim_end_matches('.'))?.to_lowercase();
        origin.set_fqdn(true);
        let soa = SOA::new(
            Name::from_ascii("ns.dns")?.append_domain(&origin)?,
            Name::from_ascii("hostmaster")?.append_domain(&origin)?,
            1,
            7200,
            1800,
            86400,
            ttl,
        );
        let soa = Record::from_rdata(origin.clone(), ttl, RData::SOA(soa));
        Ok(Self {
            store,
            origin,
            ttl,
            soa,
        })
    }

    /// The zone's apex (the cluster domain).
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// The SOA record, for the authority section of negative answers.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// Whether `name` is in this zone.
    pub fn contains(&self, name: &Name) -> bool {
        self.origin.zone_of(&name.to_lowercase())
    }

    /// Answers `qtype` for `name`, which must be in the zone.
    pub fn answer(&self, name: &Name, qtype: RecordType) -> Answer {
        let name = name.to_lowercase();
        let labels: Vec<String> = name
            .iter()
            .take((name.num_labels() - self.origin.num_labels()) as usize)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        match labels.as_slice() {
            [] => match qtype {
                RecordType::SOA | RecordType::ANY => self.records(vec![self.soa.clone()], vec![]),
                _ => self.records(vec![], vec![]),
            },
            // Empty non-terminals: `svc.<domain>` and `ns.svc.<domain>` exist, with no data.
            ["svc"] | [_, "svc"] => self.records(vec![], vec![]),
            [svc, ns, "svc"] => match self.store.get_parts(ns, svc) {
                Some(s) => self.service(&name, &s, qtype),
                None => Answer::NxDomain,
            },
            [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
                match self.store.get_parts(ns, svc) {
                    Some(s) => match self.service_name(svc, ns) {
                        Some(base) => self.srv(&name, &base, &s, &port[1..], &proto[1..], qtype),
                        None => Answer::NxDomain,
                    },
                    None => Answer::NxDomain,
                }
            }
            [host, svc, ns, "svc"] => match self.store.get_parts(ns, svc) {
                Some(s) if s.service.headless => match published(&s).find(|e| hostname(e) == *host)
                {
                    Some(e) => self.records(self.addresses(&name, [e.address], qtype), vec![]),
                    None => Answer::NxDomain,
                },
                _ => Answer::NxDomain,
            },
            _ => Answer::NxDomain,
        }
    }

    /// Answers a reverse name (`in-addr.arpa`, `ip6.arpa`) when it is a Service's cluster IP:
    /// PTR to `svc.ns.svc.<domain>.` (NODATA for other types). `None` when the name is not
    /// such an address, so that it goes where names outside the zone go.
    pub fn reverse(&self, name: &Name, qtype: RecordType) -> Option<Answer> {
        let ip = arpa_ip(name)?;
        let snapshot = self.store.lookup_cluster_ip(ip)?;
        let key = &snapshot.service.key;
        let target = self.service_name(&key.name, &key.namespace)?;
        if !matches!(qtype, RecordType::PTR | RecordType::ANY) {
            return Some(self.records(vec![], vec![]));
        }
        let ptr = Record::from_rdata(name.to_lowercase(), self.ttl, RData::PTR(PTR(target)));
        Some(self.records(vec![ptr], vec![]))
    }

    fn records(&self, answers: Vec<Record>, additionals: Vec<Record>) -> Answer {
        Answer::Records {
            answers,
            additionals,
        }
    }

    fn addresses(
        &self,
        name: &Name,
        ips: impl IntoIterator<Item = IpAddr>,
        qtype: RecordType,
    ) -> Vec<Record> {
        ips.into_iter()
            .filter_map(|ip| match (ip, qtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(v4))),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => Some(RData::AAAA(AAAA(v6))),
                _ => None,
            })
            .map(|rdata| Record::from_rdata(name.clone(), self.ttl, rdata))
            .collect()
    }

    fn service(&self, name: &Name, s: &ServiceSnapshot, qtype: RecordType) -> Answer {
        let svc = &s.service;
        if svc.service_type == ServiceType::ExternalName {
            let Some(target) = svc
                .external_name
                .as_deref()
                .and_then(|n| Name::from_ascii(n).ok())
            else {
                return self.records(vec![], vec![]);
            };
            let mut target = target;
            target.set_fqdn(true);
            let cname = Record::from_rdata(name.clone(), self.ttl, RData::CNAME(CNAME(target)));
            return self.records(vec![cname], vec![]);
        }
        let ips: Vec<IpAddr> = if svc.headless {
            published(s).map(|e| e.address).collect()
        } else {
            svc.cluster_ips.clone()
        };
        self.records(self.addresses(name, ips, qtype), vec![])
    }

    /// `svc.ns.svc.<domain>.`
    fn service_name(&self, svc: &str, ns: &str) -> Option<Name> {
        Name::from_ascii(format!("{svc}.{ns}.svc"))
            .ok()?
            .append_domain(&self.origin)
            .ok()
    }

    fn srv(
        &self,
        name: &Name,
        base: &Name,
        s: &ServiceSnapshot,
        port: &str,
        proto: &str,
        qtype: RecordType,
    ) -> Answer {
        let protocol = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "sctp" => Protocol::Sctp,
            _ => return Answer::NxDomain,
        };
        let Some(p) = s
            .ports
            .iter()
            .find(|p| p.port.protocol == protocol && p.port.name.as_deref() == Some(port))
        else {
            return Answer::NxDomain;
        };
        if !matches!(qtype, RecordType::SRV | RecordType::ANY) {
            return self.records(vec![], vec![]);
        }
        let (mut answers, mut additionals) = (Vec::new(), Vec::new());
        if s.service.headless {
            // One SRV per published endpoint, each targeting the endpoint's own name.
            let published: Vec<&Arc<Endpoint>> = published(s).collect();
            let weight = (100 / published.len().max(1)) as u16;
            for pe in p
                .endpoints
                .iter()
                .filter(|pe| published.iter().any(|e| e.address == pe.endpoint.address))
            {
                let Ok(target) =
                    Name::from_ascii(hostname(&pe.endpoint)).and_then(|h| h.append_domain(base))
                else {
                    continue;
                };
                let srv = SRV::new(0, weight, pe.addr.port(), target.clone());
                answers.push(Record::from_rdata(name.clone(), self.ttl, RData::SRV(srv)));
                additionals.extend(self.addresses(&target, [pe.endpoint.address], RecordType::ANY));
            }
        } else if !s.service.cluster_ips.is_empty() {
            let srv = SRV::new(0, 100, p.port.port, base.clone());
            answers.push(Record::from_rdata(name.clone(), self.ttl, RData::SRV(srv)));
            additionals.extend(self.addresses(
                base,
                s.service.cluster_ips.iter().copied(),
                RecordType::ANY,
            ));
        }
        self.records(answers, additionals)
    }
}

/// The endpoints a headless Service publishes in DNS: ready ones, or all with
/// `publishNotReadyAddresses`.
fn published(s: &ServiceSnapshot) -> impl Iterator<Item = &Arc<Endpoint>> {
    let all = s.service.publish_not_ready_addresses;
    s.endpoints
        .iter()
        .filter(move |e| all || e.conditions.ready)
}

/// The address a reverse name stands for: `d.c.b.a.in-addr.arpa.` or the 32 nibbles of
/// `….ip6.arpa.`; `None` for anything else (partial names included).
fn arpa_ip(name: &Name) -> Option<IpAddr> {
    let name = name.to_lowercase();
    let labels: Vec<&[u8]> = name.iter().collect();
    match labels.as_slice() {
        [d, c, b, a, b"in-addr", b"arpa"] => {
            let octet = |l: &[u8]| -> Option<u8> {
                // Canonical decimal only: no sign, no leading zeros.
                if l.is_empty() || l.len() > 3 || (l.len() > 1 && l[0] == b'0') {
                    return None;
                }
                std::str::from_utf8(l).ok()?.parse().ok()
            };
            Some(IpAddr::V4(Ipv4Addr::new(
                octet(a)?,
                octet(b)?,
                octet(c)?,
                octet(d)?,
            )))
        }
        [nibbles @ .., b"ip6", b"arpa"] if nibbles.len() == 32 => {
            let mut bits = 0u128;
            for l in nibbles.iter().rev() {
                let [n] = l else { return None };
                bits = (bits << 4) | u128::from((*n as char).to_digit(16)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bits)))
        }
        _ => None,
    }
}

/// An endpoint's DNS label: its hostname, or its IP with dashes.
fn hostname(e: &Endpoint) -> String {
    match &e.hostname {
        Some(h) => h.to_ascii_lowercase(),
        None => e.address.to_string().replace(['.', ':'], "-"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use svc_core::source::manifests;
    use svc_core::store::StoreConfig;

    fn zone(yaml: &str) -> Zone {
        let (store, mut writer) = svc_core::store::store(StoreConfig::default());
        for event in manifests::parse_str(yaml).unwrap().into_events() {
            writer.apply(event);
        }
        Zone::new(store, 7).unwrap()
    }

    fn rdata(a: &Answer) -> Vec<String> {
        match a {
            Answer::Records { answers, .. } => answers.iter().map(|r| r.data.to_string()).collect(),
            Answer::NxDomain => vec!["NXDOMAIN".into()],
        }
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    const YAML: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.0.0.7, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: pods, namespace: shop}
spec: {clusterIP: None, publishNotReadyAddresses: true, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: pods-1, namespace: shop, labels: {kubernetes.io/service-name: pods}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: ["10.1.0.1"], conditions: {ready: true}}
- {addresses: ["10.1.0.2"], conditions: {ready: false}}
"#;

    #[test]
    fn the_zone_and_its_edges() {
        let z = zone(YAML);
        assert!(z.contains(&name("web.shop.svc.cluster.local.")));
        assert!(!z.contains(&name("web.shop.svc.cluster.localx.")));
        assert!(!z.contains(&name("example.com.")));
        assert_eq!(
            rdata(&z.answer(&name("web.shop.svc.cluster.local."), RecordType::A)),
            ["10.0.0.7"]
        );
        assert!(
            rdata(&z.answer(&name("web.shop.svc.cluster.local."), RecordType::AAAA)).is_empty(),
            "NODATA"
        );
        assert!(
            rdata(&z.answer(&name("web.shop.svc.cluster.local."), RecordType::MX)).is_empty(),
            "NODATA"
        );
        assert!(
            rdata(&z.answer(&name("shop.svc.cluster.local."), RecordType::A)).is_empty(),
            "empty non-terminal"
        );
        assert_eq!(
            rdata(&z.answer(&name("cluster.local."), RecordType::SOA)).len(),
            1
        );
        assert_eq!(
            z.answer(&name("web.other.svc.cluster.local."), RecordType::A),
            Answer::NxDomain
        );
        assert_eq!(
            z.answer(&name("a.b.c.web.shop.svc.cluster.local."), RecordType::A),
            Answer::NxDomain
        );
        assert_eq!(
            z.answer(&name("web.shop.pod.cluster.local."), RecordType::A),
            Answer::NxDomain
        );
    }

    #[test]
    fn reverse_names_of_cluster_ips_get_ptr_records() {
        let z = zone(&format!(
            "{YAML}---\napiVersion: v1\nkind: Service\nmetadata: {{name: six, namespace: shop}}\nspec: {{clusterIP: \"fd00::1:7\", ports: [{{port: 80}}]}}\n"
        ));
        assert_eq!(
            z.reverse(&name("7.0.0.10.in-addr.arpa."), RecordType::PTR)
                .map(|a| rdata(&a)),
            Some(vec!["web.shop.svc.cluster.local.".to_string()])
        );
        let six = "7.0.0.0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
        assert_eq!(
            z.reverse(&name(six), RecordType::PTR).map(|a| rdata(&a)),
            Some(vec!["six.shop.svc.cluster.local.".to_string()])
        );
        assert_eq!(
            z.reverse(&name("7.0.0.10.IN-ADDR.ARPA."), RecordType::A)
                .map(|a| rdata(&a)),
            Some(vec![]),
            "NODATA for other types"
        );
        for not_ours in [
            "8.0.0.10.in-addr.arpa.",
            "0.0.10.in-addr.arpa.",
            "07.0.0.10.in-addr.arpa.",
            "7.0.0.256.in-addr.arpa.",
            "x.7.0.0.10.in-addr.arpa.",
            "1.ip6.arpa.",
            "example.com.",
        ] {
            assert_eq!(
                z.reverse(&name(not_ours), RecordType::PTR),
                None,
                "{not_ours}"
            );
        }
    }

    #[test]
    fn publish_not_ready_addresses_publishes_every_endpoint() {
        let z = zone(YAML);
        assert_eq!(
            rdata(&z.answer(&name("pods.shop.svc.cluster.local."), RecordType::A)),
            ["10.1.0.1", "10.1.0.2"]
        );
        // Endpoints without a hostname are named after their IP.
        assert_eq!(
            rdata(&z.answer(
                &name("10-1-0-2.pods.shop.svc.cluster.local."),
                RecordType::A
            )),
            ["10.1.0.2"]
        );
        let srv = z.answer(
            &name("_http._tcp.pods.shop.svc.cluster.local."),
            RecordType::SRV,
        );
        assert_eq!(
            rdata(&srv),
            [
                "0 50 8080 10-1-0-1.pods.shop.svc.cluster.local.",
                "0 50 8080 10-1-0-2.pods.shop.svc.cluster.local."
            ]
        );
        match srv {
            Answer::Records { answers, .. } => assert!(answers.iter().all(|r| r.ttl == 7)),
            Answer::NxDomain => unreachable!(),
        }
    }
}
