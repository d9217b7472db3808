//! IP families: `spec.ipFamilies` and `spec.ipFamilyPolicy`, and which families a Service
//! serves.

use std::fmt;
use std::net::IpAddr;

use super::error::{ModelError, Result};

/// An IP family: of an address, of a cluster IP, of an EndpointSlice's endpoints. IPv4 or
/// IPv6, so exhaustive by definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// The family of `ip` (an IPv4-mapped IPv6 address is IPv6: that is how it is
    /// written, and what an IPv6 EndpointSlice may hold).
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    /// The API's spelling: `IPv4` or `IPv6`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }

    fn parse(value: &str) -> Result<Self> {
        match value {
            "IPv4" => Ok(Self::V4),
            "IPv6" => Ok(Self::V6),
            other => Err(ModelError::InvalidIpFamilies(format!(
                "spec.ipFamilies: unknown family {other:?} (IPv4 or IPv6)"
            ))),
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `spec.ipFamilyPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IpFamilyPolicy {
    /// `SingleStack`: one family.
    SingleStack,
    /// `PreferDualStack`: both families where the cluster has them, else one.
    PreferDualStack,
    /// `RequireDualStack`: both families.
    RequireDualStack,
}

/// Which families a Service serves, which decides whose endpoints its addresses reach.
///
/// Deliberately exhaustive: a new kind must be a compile error wherever addresses are mapped
/// to endpoints, never a silent mix of families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stack {
    /// One family: the EndpointSlice controller makes slices of that family only.
    Single(IpFamily),
    /// Both families: each family's addresses reach that family's endpoints (kube-proxy runs
    /// one proxier per family, and each sees only its family's slices).
    Dual,
    /// Nothing says (an ExternalName Service, or a headless one from a manifest without
    /// `ipFamilies`).
    Unknown,
}

/// `spec.ipFamilies` and `spec.ipFamilyPolicy`, checked against the cluster IPs as the API
/// server does: at most two distinct families, `ipFamilies[i]` the family of
/// `clusterIPs[i]`, and one family only under `SingleStack`. Without `ipFamilies` (a
/// manifest), the families are those of the cluster IPs.
pub(super) fn parse(
    families: Option<&[String]>,
    policy: Option<&str>,
    cluster_ips: &[IpAddr],
) -> Result<(Vec<IpFamily>, Option<IpFamilyPolicy>)> {
    let policy = match policy {
        None | Some("") => None,
        Some("SingleStack") => Some(IpFamilyPolicy::SingleStack),
        Some("PreferDualStack") => Some(IpFamilyPolicy::PreferDualStack),
        Some("RequireDualStack") => Some(IpFamilyPolicy::RequireDualStack),
        Some(other) => {
            return Err(ModelError::InvalidIpFamilies(format!(
                "spec.ipFamilyPolicy: unknown policy {other:?}"
            )))
        }
    };
    let families: Vec<IpFamily> = match families {
        Some(list) if !list.is_empty() => list
            .iter()
            .map(|f| IpFamily::parse(f))
            .collect::<Result<_>>()?,
        _ => cluster_ips.iter().map(|ip| IpFamily::of(*ip)).collect(),
    };
    match families.as_slice() {
        [] | [_] => {}
        [a, b] if a != b => {}
        [_, _] => {
            return Err(ModelError::InvalidIpFamilies(
                "spec.ipFamilies: two entries must be IPv4 and IPv6".into(),
            ))
        }
        _ => {
            return Err(ModelError::InvalidIpFamilies(format!(
                "spec.ipFamilies: at most two families, got {}",
                families.len()
            )))
        }
    }
    for (i, (ip, family)) in cluster_ips.iter().zip(&families).enumerate() {
        if IpFamily::of(*ip) != *family {
            return Err(ModelError::InvalidIpFamilies(format!(
                "spec.ipFamilies[{i}]: {family}, but spec.clusterIPs[{i}] {ip} is not"
            )));
        }
    }
    if cluster_ips.len() > families.len() {
        return Err(ModelError::InvalidIpFamilies(format!(
            "spec.ipFamilies: {} clusterIPs but only {} families",
            cluster_ips.len(),
            families.len()
        )));
    }
    if policy == Some(IpFamilyPolicy::SingleStack) && families.len() > 1 {
        return Err(ModelError::InvalidIpFamilies(
            "spec.ipFamilyPolicy: SingleStack allows one family".into(),
        ));
    }
    Ok((families, policy))
}

/// The [`Stack`] of a Service with these (parsed) families and policy.
pub(super) fn stack(families: &[IpFamily], policy: Option<IpFamilyPolicy>) -> Stack {
    match (families, policy) {
        ([_, _], _) => Stack::Dual,
        // A manifest may ask for both families without naming them (or a cluster IP of one).
        (_, Some(IpFamilyPolicy::RequireDualStack)) => Stack::Dual,
        ([family], _) => Stack::Single(*family),
        _ => Stack::Unknown,
    }
}
