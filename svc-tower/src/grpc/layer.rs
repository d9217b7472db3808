//! [`GrpcStatusLayer`].

use super::GrpcStatus;

/// Wraps a service so that its svc-tower errors become gRPC `Status`es with the right code;
/// see the [module docs](super).
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcStatusLayer;

impl<S> tower::Layer<S> for GrpcStatusLayer {
    type Service = GrpcStatus<S>;

    fn layer(&self, inner: S) -> GrpcStatus<S> {
        GrpcStatus::new(inner)
    }
}
