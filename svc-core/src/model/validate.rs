//! The API server's validation rules that routing depends on.
//!
//! Objects from the API have passed these checks already; objects from a manifests file have
//! not, and a mistake there must not turn into a listener on every interface or two ports mixed
//! on one socket. Each rule follows `pkg/apis/core/validation` (Services) or
//! `pkg/apis/discovery/validation` (EndpointSlices) and fails the whole object with a
//! [`ModelError`] naming the field, as the API server would refuse it.
//!
//! One departure: loopback addresses are accepted everywhere, because serving manifests on
//! loopback ClusterIPs and endpoints is how svc runs without a cluster.

use std::collections::HashMap;
use std::net::IpAddr;

use super::error::{ModelError, Result};
use super::service::{Protocol, ServicePort, ServiceType, TargetPort};
use super::slice::EndpointPort;

/// Why an address may not be used where it was given, if it may not.
fn special(ip: IpAddr, link_local_too: bool) -> Option<&'static str> {
    // `::ffff:a.b.c.d` is the IPv4 address for every purpose here.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        ip if ip.is_unspecified() => {
            Some("is unspecified (it would listen on, or connect to, every local address)")
        }
        ip if ip.is_multicast() => Some("is a multicast address"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("is the broadcast address"),
        IpAddr::V4(v4) if link_local_too && v4.is_link_local() => Some("is link-local"),
        IpAddr::V6(v6) if link_local_too && v6.is_unicast_link_local() => Some("is link-local"),
        _ => None,
    }
}

fn check_ip(field: &'static str, ip: IpAddr, link_local_too: bool) -> Result<()> {
    match special(ip, link_local_too) {
        Some(reason) => Err(ModelError::ForbiddenIp { field, ip, reason }),
        None => Ok(()),
    }
}

/// `spec.clusterIPs` (already parsed): at most two, of different families, none special.
pub(super) fn cluster_ips(ips: &[IpAddr]) -> Result<()> {
    for ip in ips {
        check_ip("spec.clusterIPs", *ip, false)?;
    }
    match ips {
        [] | [_] => Ok(()),
        [a, b] if a.is_ipv4() != b.is_ipv4() => Ok(()),
        [_, _] => Err(ModelError::InvalidClusterIps(
            "two clusterIPs must be one IPv4 and one IPv6 address".into(),
        )),
        _ => Err(ModelError::InvalidClusterIps(format!(
            "at most two clusterIPs (one per family), got {}",
            ips.len()
        ))),
    }
}

/// `spec.externalIPs`: none special (the API also refuses loopback; see the module docs).
pub(super) fn external_ips(ips: &[IpAddr]) -> Result<()> {
    ips.iter()
        .try_for_each(|ip| check_ip("spec.externalIPs", *ip, true))
}

/// `status.loadBalancer.ingress[].ip`: not unspecified or multicast, since we listen on it.
pub(super) fn load_balancer_ip(ip: IpAddr) -> Result<()> {
    check_ip("status.loadBalancer.ingress[].ip", ip, false)
}

/// An endpoint address: one we would connect to, so never unspecified (that reaches this very
/// host) or multicast.
pub(super) fn endpoint_ip(ip: IpAddr) -> Result<()> {
    check_ip("endpoints[].addresses", ip, false)
}

/// A DNS-1123 label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters), or why not.
fn dns_label(s: &str) -> Option<&'static str> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 63 {
        return Some("must be 1 to 63 characters");
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    {
        return Some("must consist of lower case letters, digits and '-'");
    }
    if b[0] == b'-' || b[b.len() - 1] == b'-' {
        return Some("must start and end with a letter or digit");
    }
    None
}

/// A DNS-1035 label (a Service name): a DNS-1123 label that starts with a letter, or why not.
fn dns_1035_label(s: &str) -> Option<&'static str> {
    dns_label(s).or_else(|| {
        (!s.as_bytes()[0].is_ascii_lowercase()).then_some("must start with a lower case letter")
    })
}

/// `metadata.name` and `metadata.namespace` of a Service: the name becomes a DNS label
/// (`name.namespace.svc.<domain>`), so it must be one, and lower case: a name in upper case
/// could never be looked up.
pub(super) fn service_key(name: &str, namespace: &str) -> Result<()> {
    name_rule("metadata.name", name, dns_1035_label(name))?;
    name_rule("metadata.namespace", namespace, dns_label(namespace))
}

/// `metadata.name` (a DNS-1123 subdomain) and `metadata.namespace` of an EndpointSlice.
pub(super) fn slice_key(name: &str, namespace: &str) -> Result<()> {
    let subdomain = if name.len() > 253 {
        Some("must be at most 253 characters")
    } else {
        name.split('.').find_map(dns_label)
    };
    name_rule("metadata.name", name, subdomain)?;
    name_rule("metadata.namespace", namespace, dns_label(namespace))
}

fn name_rule(field: &'static str, value: &str, reason: Option<&'static str>) -> Result<()> {
    match reason {
        Some(reason) => Err(ModelError::InvalidName {
            field,
            value: value.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// An IANA service name (a named targetPort), or why not: at most 15 characters of lower case
/// letters, digits and single '-', with at least one letter, not starting or ending with '-'.
fn iana_svc_name(s: &str) -> Option<&'static str> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 15 {
        return Some("must be 1 to 15 characters");
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    {
        return Some("must consist of lower case letters, digits and '-'");
    }
    if !b.iter().any(u8::is_ascii_lowercase) {
        return Some("must contain at least one letter");
    }
    if b[0] == b'-' || b[b.len() - 1] == b'-' || s.contains("--") {
        return Some("must not start or end with '-' or contain '--'");
    }
    None
}

/// A DNS-1123 subdomain (`spec.externalName`): dot-separated labels, at most 253 characters.
/// A trailing dot is accepted, as the API does.
pub(super) fn external_name(name: &str) -> Result<()> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let reason = if trimmed.len() > 253 {
        Some("must be at most 253 characters")
    } else {
        trimmed.split('.').find_map(dns_label)
    };
    match reason {
        Some(reason) => Err(ModelError::InvalidName {
            field: "spec.externalName",
            value: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// `spec.ports`: names required when there is more than one and unique, valid names, unique
/// port/protocol pairs, unique nodePort/protocol pairs, no nodePort on a ClusterIP Service.
pub(super) fn service_ports(ports: &[ServicePort], service_type: ServiceType) -> Result<()> {
    let mut names = HashMap::new();
    let mut numbers = HashMap::new();
    let mut node_ports = HashMap::new();
    for (index, p) in ports.iter().enumerate() {
        match &p.name {
            None if ports.len() > 1 => return Err(ModelError::MissingPortName { index }),
            None => {}
            Some(name) => {
                if let Some(reason) = dns_label(name) {
                    return Err(ModelError::InvalidName {
                        field: "spec.ports[].name",
                        value: name.to_string(),
                        reason,
                    });
                }
                if let Some(first) = names.insert(name.clone(), index) {
                    return Err(ModelError::DuplicatePortName {
                        field: "spec.ports",
                        name: name.to_string(),
                        first,
                        index,
                    });
                }
            }
        }
        if let TargetPort::Name(name) = &p.target_port {
            if let Some(reason) = iana_svc_name(name) {
                return Err(ModelError::InvalidName {
                    field: "spec.ports[].targetPort",
                    value: name.to_string(),
                    reason,
                });
            }
        }
        if let Some(first) = numbers.insert((p.port, p.protocol), index) {
            return Err(duplicate("spec.ports", p.port, p.protocol, first, index));
        }
        if let Some(node_port) = p.node_port {
            if matches!(
                service_type,
                ServiceType::ClusterIp | ServiceType::ExternalName
            ) {
                return Err(ModelError::NodePortNotAllowed { index });
            }
            if let Some(first) = node_ports.insert((node_port, p.protocol), index) {
                return Err(duplicate(
                    "spec.ports[].nodePort",
                    node_port,
                    p.protocol,
                    first,
                    index,
                ));
            }
        }
    }
    Ok(())
}

/// An EndpointSlice's `ports`: unique, valid names (an empty name is the unnamed port).
pub(super) fn slice_ports(ports: &[EndpointPort]) -> Result<()> {
    let mut names = HashMap::new();
    for (index, p) in ports.iter().enumerate() {
        if let Some(name) = &p.name {
            if let Some(reason) = dns_label(name) {
                return Err(ModelError::InvalidName {
                    field: "ports[].name",
                    value: name.to_string(),
                    reason,
                });
            }
        }
        let name = p.name.as_deref().unwrap_or("").to_string();
        if let Some(first) = names.insert(name.clone(), index) {
            return Err(ModelError::DuplicatePortName {
                field: "ports",
                name,
                first,
                index,
            });
        }
    }
    Ok(())
}

fn duplicate(
    field: &'static str,
    port: u16,
    protocol: Protocol,
    first: usize,
    index: usize,
) -> ModelError {
    ModelError::DuplicatePort {
        field,
        port,
        protocol: protocol.as_str(),
        first,
        index,
    }
}

#[cfg(test)]
mod tests;
