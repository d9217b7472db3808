//! `--service-cidr`: makes whole Service CIDRs local with one route each, as
//! `ip route add local <cidr> dev lo` does (Linux "AnyIP"). A socket can then bind any address
//! in the range, with no per-ClusterIP address on any interface.

use std::net::IpAddr;

use rtnetlink::packet_route::route::{RouteProtocol, RouteScope, RouteType};
use rtnetlink::RouteMessageBuilder;

use super::{find, is_errno, Cidr, IfaceError};

/// The kernel's `local` routing table (`RT_TABLE_LOCAL`), where `ip` puts `local` routes.
const TABLE_LOCAL: u32 = 255;

/// Adds a `local` route on `lo` for each CIDR that has none. Routes are left in place when the
/// proxy exits, as interface addresses are, so that a restart does not interrupt traffic; a
/// route that was already there is left alone.
///
/// # Errors
/// [`IfaceError`] when netlink is unavailable or a route cannot be added (no `NET_ADMIN`).
pub async fn route_service_cidrs(cidrs: &[Cidr]) -> Result<(), IfaceError> {
    if cidrs.is_empty() {
        return Ok(());
    }
    let (connection, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(connection);
    let lo = find(&handle, "lo")
        .await?
        .ok_or_else(|| IfaceError::Route("no loopback interface".into()))?;
    for cidr in cidrs {
        let message = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(cidr.network(), cidr.prefix())
            .map_err(|e| IfaceError::Route(e.to_string()))?
            .output_interface(lo)
            .table_id(TABLE_LOCAL)
            .kind(RouteType::Local)
            .scope(RouteScope::Host)
            .protocol(RouteProtocol::Boot)
            .build();
        match handle.route().add(message).execute().await {
            Ok(()) => {
                tracing::info!(%cidr, "routed the Service CIDR to this host (local route on lo)")
            }
            Err(e) if is_errno(&e, libc::EEXIST) => {
                tracing::info!(%cidr, "the Service CIDR already has a local route")
            }
            Err(e) => {
                return Err(IfaceError::Route(format!(
                    "adding local route {cidr} dev lo: {e}"
                )))
            }
        }
    }
    Ok(())
}
