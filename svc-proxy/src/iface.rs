//! `--manage-interface`: makes cluster IPs local by adding them to an interface through
//! rtnetlink, as kube-proxy's IPVS mode does with `kube-ipvs0`.
//!
//! An existing interface of any type (`lo`, an `ifb`, a dummy made by the operator) is used as
//! is and brought up. A missing one is created as a dummy, which needs the kernel's dummy
//! driver. Each address is held by reference count (a dual-stack Service with several ports
//! holds each of its IPs once per listener) and removed when its last listener goes. Addresses
//! are left in place when the proxy exits, as kube-proxy does, so that a restart does not
//! interrupt traffic; addresses the proxy did not add are never removed (the interface may be
//! `lo`).

use std::collections::HashMap;
use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::{Handle, LinkDummy, LinkMessageBuilder, LinkUnspec};
use thiserror::Error;

/// Why the interface could not be managed.
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
}

/// A managed interface.
pub struct Interface {
    name: String,
    index: u32,
    handle: Handle,
    held: HashMap<IpAddr, usize>,
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
    /// Opens `name`, creating it as a dummy if it is missing, and brings it up.
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
        tracing::info!(interface = name, index, "managing cluster IPs on interface");
        Ok(Self {
            name: name.to_string(),
            index,
            handle,
            held: HashMap::new(),
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds `ip` (as a host address, /32 or /128) unless it is already held.
    ///
    /// # Errors
    /// The netlink error; an address that is already there is not an error.
    pub async fn acquire(&mut self, ip: IpAddr) -> Result<(), IfaceError> {
        let count = self.held.entry(ip).or_insert(0);
        *count += 1;
        if *count > 1 {
            return Ok(());
        }
        if self.present(ip).await? {
            return Ok(());
        }
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        let added = self
            .handle
            .address()
            .add(self.index, ip, prefix)
            .execute()
            .await;
        match added {
            Ok(()) => {
                tracing::info!(interface = self.name, %ip, "added address");
                Ok(())
            }
            Err(e) => {
                self.held.remove(&ip);
                Err(e.into())
            }
        }
    }

    /// Drops one hold on `ip`, and removes the address when none is left.
    ///
    /// # Errors
    /// The netlink error.
    pub async fn release(&mut self, ip: IpAddr) -> Result<(), IfaceError> {
        let Some(count) = self.held.get_mut(&ip) else {
            return Ok(());
        };
        *count -= 1;
        if *count > 0 {
            return Ok(());
        }
        self.held.remove(&ip);
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.index)
            .set_address_filter(ip)
            .execute();
        while let Some(msg) = addrs.try_next().await? {
            self.handle.address().del(msg).execute().await?;
            tracing::info!(interface = self.name, %ip, "removed address");
        }
        Ok(())
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

    async fn present(&self, ip: IpAddr) -> Result<bool, IfaceError> {
        Ok(self.addresses().await?.contains(&ip))
    }
}

async fn find(handle: &Handle, name: &str) -> Result<Option<u32>, IfaceError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        // The kernel answers ENODEV for an unknown name.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(e.into()),
    }
}
