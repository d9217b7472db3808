//! One client per path, each as users would write it, answering which pod served a request.

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use svc_tower::connect::SvcConnector;
use svc_tower::layer::{Balance, BalanceLayer, NoFallback};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::{Layer, ServiceExt};

use super::lab::{Lab, NAMESPACE};
use super::Path;

type Body = Empty<Bytes>;
type Channel = Balance<NoFallback, tonic::body::Body>;

/// A client of one scenario's Service, on one path. Workers of a concurrent run each take a
/// [`Client::worker`] of it.
pub enum Client {
    /// svc-proxy TCP mode: a new connection per request (as `curl` in a loop does).
    ProxyTcp { vip: std::net::SocketAddr },
    /// svc-proxy HTTP mode: requests one after another on one kept-alive connection.
    ProxyHttp {
        vip: std::net::SocketAddr,
        conn: Option<hyper::client::conn::http1::SendRequest<Body>>,
    },
    /// hyper-util's legacy client with its default settings over `SvcConnector`.
    Connector {
        client: Box<HyperClient<SvcConnector, Body>>,
        uri: http::Uri,
    },
    /// svc-tower's request layer.
    Layer {
        service: Balance<NoFallback, Body>,
        uri: http::Uri,
    },
    /// A tonic client over the layer.
    Tonic(tonic::client::Grpc<Channel>),
}

fn uri(scenario: u8) -> http::Uri {
    let key = Lab::key(scenario);
    format!("http://{}.{NAMESPACE}/", key.name)
        .parse()
        .expect("a valid URI")
}

impl Client {
    pub fn new(lab: &Lab, scenario: u8) -> anyhow::Result<Client> {
        Ok(match lab.path {
            Path::ProxyTcp => Client::ProxyTcp {
                vip: lab.vip(scenario),
            },
            Path::ProxyHttp => Client::ProxyHttp {
                vip: lab.vip(scenario),
                conn: None,
            },
            Path::Connector => Client::Connector {
                client: Box::new(
                    HyperClient::builder(TokioExecutor::new())
                        .build(SvcConnector::with_pools(lab.pools.clone())),
                ),
                uri: uri(scenario),
            },
            Path::Layer => Client::Layer {
                service: BalanceLayer::new(lab.pools.clone()).layer(NoFallback),
                uri: uri(scenario),
            },
            Path::Tonic => {
                let channel: Channel = BalanceLayer::new(lab.pools.clone()).layer(NoFallback);
                let origin = format!("http://{}.{NAMESPACE}:80", Lab::key(scenario).name);
                Client::Tonic(tonic::client::Grpc::with_origin(channel, origin.parse()?))
            }
        })
    }

    /// A client for one more concurrent worker: shares the balancer, and for svc-proxy's
    /// HTTP mode has its own kept-alive connection.
    pub fn worker(&self) -> Client {
        match self {
            Client::ProxyTcp { vip } => Client::ProxyTcp { vip: *vip },
            Client::ProxyHttp { vip, .. } => Client::ProxyHttp {
                vip: *vip,
                conn: None,
            },
            Client::Connector { client, uri } => Client::Connector {
                client: client.clone(),
                uri: uri.clone(),
            },
            Client::Layer { service, uri } => Client::Layer {
                service: service.clone(),
                uri: uri.clone(),
            },
            Client::Tonic(grpc) => Client::Tonic(grpc.clone()),
        }
    }

    /// Sends one request; returns the address of the pod that answered.
    pub async fn request(&mut self) -> anyhow::Result<String> {
        match self {
            Client::ProxyTcp { vip } => {
                let mut io = TcpStream::connect(*vip).await?;
                io.write_all(b"GET / HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n")
                    .await?;
                let mut answer = String::new();
                io.read_to_string(&mut answer).await?;
                let (head, body) = answer.split_once("\r\n\r\n").context("no response")?;
                anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
                Ok(body.to_string())
            }
            Client::ProxyHttp { vip, conn } => {
                if conn.as_ref().is_none_or(|c| c.is_closed()) {
                    let io = TokioIo::new(TcpStream::connect(*vip).await?);
                    let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
                    tokio::spawn(connection);
                    *conn = Some(sender);
                }
                let sender = conn.as_mut().expect("connected above");
                sender.ready().await?;
                let req = http::Request::get("/")
                    .header(http::header::HOST, "web")
                    .body(Body::new())?;
                text(sender.send_request(req).await?).await
            }
            Client::Connector { client, uri } => text(client.get(uri.clone()).await?).await,
            Client::Layer { service, uri } => {
                let req = http::Request::get(uri.clone()).body(Body::new())?;
                text(
                    service
                        .clone()
                        .oneshot(req)
                        .await
                        .map_err(|e| anyhow::anyhow!(e))?,
                )
                .await
            }
            Client::Tonic(grpc) => Ok(crate::grpc::say_hello(grpc).await?),
        }
    }
}

async fn text<B>(response: http::Response<B>) -> anyhow::Result<String>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    anyhow::ensure!(response.status() == 200, "status {}", response.status());
    let body = response.into_body().collect().await;
    let body = body.map_err(|e| anyhow::anyhow!(e.into()))?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}
