//! gRPC status codes for svc-tower's errors (feature `tonic`).
//!
//! tonic turns a transport error into a `Status` by looking for one in the error's source
//! chain; svc-tower's errors are not `Status`es, so without this layer every failure of the
//! [`layer`](crate::layer) reaches a tonic client as `Code::Unknown`. gRPC clients retry and
//! report by code, and the spec says a call that could not reach a server is `UNAVAILABLE`
//! (what grpc-go and C-core return when no address is ready, and what tonic's own channel
//! returns when a connect fails). [`GrpcStatusLayer`] goes between tonic and the balancing
//! layer and gives each of our errors its code:
//!
//! | error | code |
//! |---|---|
//! | [`NoEndpoints`] (not synced, no Service, no port, none ready) | `Unavailable` |
//! | [`UnknownService`], [`ResolveFailed`], [`ConnectFailed`] | `Unavailable` |
//! | [`ResponseTimeout`] | `DeadlineExceeded` |
//! | anything else | left as it is (tonic makes it `Unknown`, or finds a code in it) |
//!
//! The original error stays reachable as the `Status`'s source.
//!
//! ```
//! # fn doc(pools: svc_tower::balance::Pools) -> Result<(), Box<dyn std::error::Error>> {
//! use svc_tower::grpc::GrpcStatusLayer;
//! use svc_tower::layer::{BalanceLayer, NoFallback};
//! use tower::ServiceBuilder;
//!
//! let channel = ServiceBuilder::new()
//!     .layer(GrpcStatusLayer)
//!     .layer(BalanceLayer::<tonic::body::Body>::new(pools))
//!     .service(NoFallback);
//! let grpc = tonic::client::Grpc::with_origin(channel, "http://greeter.demo:50051".parse()?);
//! # let _ = grpc; Ok(()) }
//! ```

mod layer;
mod service;

pub use layer::GrpcStatusLayer;
pub use service::{GrpcStatus, StatusFuture};

use std::sync::Arc;

use tonic::{Code, Status};

use crate::error::{BoxError, ConnectFailed, ResolveFailed, ResponseTimeout, UnknownService};
use crate::NoEndpoints;

/// The gRPC code for one of svc-tower's errors, if it has one (see the module docs).
pub fn code_for(err: &(dyn std::error::Error + 'static)) -> Option<Code> {
    if err.is::<NoEndpoints>()
        || err.is::<UnknownService>()
        || err.is::<ResolveFailed>()
        || err.is::<ConnectFailed>()
    {
        Some(Code::Unavailable)
    } else if err.is::<ResponseTimeout>() {
        Some(Code::DeadlineExceeded)
    } else {
        None
    }
}

/// `err` as a `Status` with its code, keeping `err` as the source; other errors unchanged.
pub fn into_status(err: BoxError) -> BoxError {
    match code_for(&*err) {
        Some(code) => {
            let mut status = Status::new(code, err.to_string());
            status.set_source(Arc::from(err));
            Box::new(status)
        }
        None => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::NoEndpointsReason;
    use svc_core::store::PortRef;
    use svc_core::ServiceKey;

    #[test]
    fn no_endpoints_is_unavailable_and_stays_the_source() {
        let err: BoxError = Box::new(NoEndpoints::new(
            ServiceKey::new("shop", "web"),
            PortRef::Name(Some("grpc".into())),
            NoEndpointsReason::NoneEligible,
        ));
        let mapped = into_status(err);
        let status = mapped.downcast_ref::<Status>().expect("a Status");
        assert_eq!(status.code(), Code::Unavailable);
        let source = std::error::Error::source(status).expect("the original error");
        assert!(source.is::<NoEndpoints>());
    }

    #[test]
    fn other_errors_are_left_alone() {
        let err: BoxError = "something else".into();
        assert!(into_status(err).downcast_ref::<Status>().is_none());
    }
}
