//! Making Service addresses local, through rtnetlink.
//!
//! - `--service-cidr` ([`route_service_cidrs`]): one `local` route per Service CIDR on `lo`
//!   (AnyIP), so every ClusterIP in it can be bound with no per-address kernel object.
//! - `--manage-interface` ([`Interface`]): one address per ClusterIP (and external IP) on an
//!   interface, as kube-proxy's IPVS mode does with `kube-ipvs0`. An existing interface of
//!   any type (`lo`, an `ifb`, a dummy made by the operator) is used as is and brought up; a
//!   missing one is created as a dummy, which needs the kernel's dummy driver.
//!
//! Addresses are held by reference count (a dual-stack Service with several ports holds each
//! of its IPs once per listener). Requests go out together, all in flight at once, so that
//! 10,000 addresses take one round of netlink requests rather than 10,000 round trips. Only
//! addresses this process added are ever removed: one that was on the interface already (put
//! there by an admin or an earlier run) stays, even when its Service goes, because the
//! interface may be `lo` or shared. Addresses are left in place when the proxy exits, as
//! kube-proxy does, so that a restart does not interrupt traffic.

mod cidr;
mod route;

pub use cidr::Cidr;
pub use route::route_service_cidrs;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::{AddressMessageBuilder, Handle, LinkDummy, LinkMessageBuilder, LinkUnspec};
use thiserror::Error;

/// Netlink requests in flight at once.
const IN_FLIGHT: usize = 128;

/// Why an interface, address or route could not be managed.
#[derive(Debug, Error)]
pub enum IfaceError {
    /// The netlink socket could not be opened.
    #[error("opening a netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    /// A netlink request failed.
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    /// The interface does not exist and could not be created.
    #[error("interface {name} does not exist and a dummy could not be created ({source}); create it first, or name an existing one such as lo")]
    Create {
        /// The interface name.
        name: String,
        /// Why creation failed.
        source: rtnetlink::Error,
    },
    /// A Service CIDR route could not be added.
    #[error("{0}")]
    Route(String),
}

/// A managed interface.
pub struct Interface {
    name: String,
    index: u32,
    handle: Handle,
    /// Listeners holding each address.
    held: HashMap<IpAddr, usize>,
    /// Addresses this process added: removed when no longer held.
    added: HashSet<IpAddr>,
    /// Addresses found on the interface, not ours: never removed.
    foreign: HashSet<IpAddr>,
}

impl std::fmt::Debug for Interface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interface")
            .field("name", &self.name)
            .field("index", &self.index)
            .finish()
    }
}

impl Interface {
    /// Opens `name`, creating it as a dummy if it is missing, brings it up, and notes the
    /// addresses already on it (which it will never remove).
    ///
    /// # Errors
    /// [`IfaceError`] when netlink is unavailable or the interface cannot be created.
    pub async fn open(name: &str) -> Result<Self, IfaceError> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        let index = match find(&handle, name).await? {
            Some(index) => index,
            None => {
                handle
                    .link()
                    .add(LinkDummy::new(name).build())
                    .execute()
                    .await
                    .map_err(|source| IfaceError::Create {
                        name: name.to_string(),
                        source,
                    })?;
                tracing::info!(interface = name, "created dummy interface");
                find(&handle, name)
                    .await?
                    .ok_or_else(|| IfaceError::Create {
                        name: name.to_string(),
                        source: rtnetlink::Error::RequestFailed,
                    })?
            }
        };
        handle
            .link()
            .set(
                LinkMessageBuilder::<LinkUnspec>::new()
                    .index(index)
                    .up()
                    .build(),
            )
            .execute()
            .await?;
        let mut iface = Self {
            name: name.to_string(),
            index,
            handle,
            held: HashMap::new(),
            added: HashSet::new(),
            foreign: HashSet::new(),
        };
        iface.foreign = iface.addresses().await?.into_iter().collect();
        tracing::info!(
            interface = name,
            index,
            existing = iface.foreign.len(),
            "managing cluster IPs on interface (addresses already there are left alone)"
        );
        Ok(iface)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Takes one hold on each entry of `ips` (an address may appear more than once), adding
    /// the addresses not on the interface yet as host addresses (/32, /128), all requests in
    /// flight together. Returns the addresses that could not be added; those are not held.
    pub async fn acquire(&mut self, ips: &[IpAddr]) -> HashMap<IpAddr, IfaceError> {
        let mut missing: Vec<IpAddr> = ips
            .iter()
            .filter(|ip| {
                !self.held.contains_key(ip)
                    && !self.added.contains(ip)
                    && !self.foreign.contains(ip)
            })
            .copied()
            .collect();
        missing.sort_unstable();
        missing.dedup();
        let (handle, index) = (self.handle.clone(), self.index);
        let results: Vec<(IpAddr, Result<(), rtnetlink::Error>)> = futures::stream::iter(missing)
            .map(|ip| {
                let request = handle.address().add(index, ip, host_prefix(ip));
                async move { (ip, request.execute().await) }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        let mut failed = HashMap::new();
        let mut added = 0usize;
        for (ip, result) in results {
            match result {
                Ok(()) => {
                    self.added.insert(ip);
                    added += 1;
                }
                // Someone else added it meanwhile: theirs, not ours.
                Err(e) if is_errno(&e, libc::EEXIST) => {
                    self.foreign.insert(ip);
                }
                Err(e) => {
                    failed.insert(ip, e.into());
                }
            }
        }
        for ip in ips {
            if !failed.contains_key(ip) {
                *self.held.entry(*ip).or_insert(0) += 1;
            }
        }
        if added > 0 {
            tracing::info!(interface = self.name, added, "added addresses");
        }
        failed
    }

    /// Drops one hold per entry of `ips`, and removes the addresses this process added that
    /// nothing holds any more (all requests in flight together). Returns the removals that
    /// failed.
    pub async fn release(&mut self, ips: &[IpAddr]) -> Vec<(IpAddr, IfaceError)> {
        let mut unused = Vec::new();
        for ip in ips {
            let Some(count) = self.held.get_mut(ip) else {
                continue;
            };
            *count -= 1;
            if *count == 0 {
                self.held.remove(ip);
                if self.added.contains(ip) {
                    unused.push(*ip);
                }
            }
        }
        let (handle, index) = (self.handle.clone(), self.index);
        let results: Vec<(IpAddr, Result<(), rtnetlink::Error>)> = futures::stream::iter(unused)
            .map(|ip| {
                let request = handle.address().del(host_address(index, ip));
                async move { (ip, request.execute().await) }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        let mut failed = Vec::new();
        let mut removed = 0usize;
        for (ip, result) in results {
            match result {
                Ok(()) => removed += 1,
                // Already gone (removed by hand).
                Err(e) if is_errno(&e, libc::EADDRNOTAVAIL) || is_errno(&e, libc::ENOENT) => {}
                Err(e) => {
                    failed.push((ip, e.into()));
                    continue;
                }
            }
            self.added.remove(&ip);
        }
        if removed > 0 {
            tracing::info!(interface = self.name, removed, "removed addresses");
        }
        failed
    }

    /// The addresses on the interface.
    ///
    /// # Errors
    /// The netlink error.
    pub async fn addresses(&self) -> Result<Vec<IpAddr>, IfaceError> {
        let mut out = Vec::new();
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.index)
            .execute();
        while let Some(msg) = addrs.try_next().await? {
            out.extend(msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            }));
        }
        Ok(out)
    }
}

fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// The message naming one host address, for removal.
fn host_address(index: u32, ip: IpAddr) -> rtnetlink::packet_route::address::AddressMessage {
    match ip {
        IpAddr::V4(v4) => AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(v4, 32)
            .build(),
        IpAddr::V6(v6) => AddressMessageBuilder::<Ipv6Addr>::new()
            .index(index)
            .address(v6, 128)
            .build(),
    }
}

/// Whether a netlink request failed with `errno`.
pub(crate) fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

/// The index of interface `name`, if it exists.
pub(crate) async fn find(handle: &Handle, name: &str) -> Result<Option<u32>, IfaceError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        // The kernel answers ENODEV for an unknown name.
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
