//! A protoc-free gRPC service for the examples: messages are raw bytes (a 20-line codec)
//! instead of protobuf, since the transport is what the examples show.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::UnaryService;
use tonic::Status;

/// Messages as raw bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The method the servers answer.
pub const SAY_HELLO: &str = "/demo.Greeter/SayHello";

/// `demo.Greeter/SayHello`: answers `hello <name> from <pod address>`, after `latency`.
#[derive(Clone)]
struct SayHello {
    addr: SocketAddr,
    latency_us: Arc<AtomicU64>,
}

impl UnaryService<Bytes> for SayHello {
    type Response = Bytes;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<tonic::Response<Bytes>, Status>> + Send>,
    >;
    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let name = String::from_utf8_lossy(request.get_ref()).into_owned();
        let reply = Bytes::from(format!("hello {name} from {}", self.addr));
        let latency = Duration::from_micros(self.latency_us.load(Ordering::Relaxed));
        Box::pin(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            Ok(tonic::Response::new(reply))
        })
    }
}

/// A running gRPC server (h2c). It serves until the process ends.
#[derive(Clone, Debug)]
pub struct GrpcServer {
    /// Where it listens.
    pub addr: SocketAddr,
    latency_us: Arc<AtomicU64>,
}

impl GrpcServer {
    /// Delays every answer by `latency` from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.latency_us
            .store(latency.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Starts a gRPC server on `addr` (port 0 for any).
///
/// # Errors
///
/// When `addr` cannot be bound.
pub async fn serve(addr: SocketAddr) -> std::io::Result<GrpcServer> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let latency_us = Arc::new(AtomicU64::new(0));
    let server = GrpcServer {
        addr,
        latency_us: latency_us.clone(),
    };
    tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            let latency_us = latency_us.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let say = SayHello {
                        addr,
                        latency_us: latency_us.clone(),
                    };
                    async move {
                        let mut grpc = tonic::server::Grpc::new(RawCodec);
                        Ok::<_, Infallible>(grpc.unary(say, req).await)
                    }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(io), svc).await;
            });
        }
    });
    Ok(server)
}

/// One unary call; returns the answering pod's address.
///
/// # Errors
///
/// The call's status.
pub async fn say_hello<T>(grpc: &mut tonic::client::Grpc<T>) -> Result<String, Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::ResponseBody: hyper::body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.into().to_string()))?;
    let reply = grpc
        .unary(
            tonic::Request::new(Bytes::from_static(b"svc")),
            PathAndQuery::from_static(SAY_HELLO),
            RawCodec,
        )
        .await?;
    let text = String::from_utf8_lossy(reply.get_ref()).into_owned();
    Ok(text.rsplit(' ').next().unwrap_or_default().to_string())
}
