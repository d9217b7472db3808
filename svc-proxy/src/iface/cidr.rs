//! A Service CIDR (`--service-cidr 10.96.0.0/12`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IPv4 or IPv6 network: an address with its host bits zero, and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask32(self.prefix) & u32::from(ip) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask128(self.prefix) & u128::from(ip) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (expected e.g. 10.96.0.0/12)"))?;
        let network: IpAddr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IP address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{prefix:?} is not a prefix length (0-{max})"))?;
        let masked = match network {
            IpAddr::V4(v4) => IpAddr::from((u32::from(v4) & mask32(prefix)).to_be_bytes()),
            IpAddr::V6(v6) => IpAddr::from((u128::from(v6) & mask128(prefix)).to_be_bytes()),
        };
        if masked != network {
            return Err(format!(
                "{s} has host bits set; did you mean {masked}/{prefix}?"
            ));
        }
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_contains() {
        let v4: Cidr = "10.96.0.0/12".parse().unwrap();
        assert!(v4.contains("10.96.0.1".parse().unwrap()));
        assert!(v4.contains("10.111.255.255".parse().unwrap()));
        assert!(!v4.contains("10.112.0.0".parse().unwrap()));
        assert!(!v4.contains("fd00::1".parse().unwrap()));
        let v6: Cidr = "fd00:10:96::/112".parse().unwrap();
        assert!(v6.contains("fd00:10:96::ffff".parse().unwrap()));
        assert!(!v6.contains("fd00:10:97::".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        assert_eq!(v4.to_string(), "10.96.0.0/12");
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        let err = "10.96.0.1/12".parse::<Cidr>().unwrap_err();
        assert!(err.contains("10.96.0.0/12"), "{err}");
        assert!("10.96.0.0".parse::<Cidr>().is_err());
        assert!("10.96.0.0/33".parse::<Cidr>().is_err());
        assert!("fd00::/129".parse::<Cidr>().is_err());
        assert!("nope/12".parse::<Cidr>().is_err());
    }
}
