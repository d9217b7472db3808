//! Backend helpers: HTTP/1, HTTP/2, TCP and UDP echo.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use svc_testkit::{spawn_http_backend, spawn_tcp_echo, spawn_udp_echo, BACKEND_HEADER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

async fn get(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    backend: SocketAddr,
) -> (u16, String, String) {
    let uri = format!("http://{backend}/anything").parse().unwrap();
    let response = client.get(uri).await.unwrap();
    let status = response.status().as_u16();
    let header = response.headers()[BACKEND_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, header, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn http_backend_answers_http1_and_http2_with_its_address() {
    let backend = spawn_http_backend(addr("127.0.0.11:0")).await.unwrap();
    let name = backend.addr().to_string();
    assert!(name.starts_with("127.0.0.11:"));

    let h1 = Client::builder(TokioExecutor::new()).build_http();
    assert_eq!(
        get(&h1, backend.addr()).await,
        (200, name.clone(), name.clone())
    );
    let h2 = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    assert_eq!(
        get(&h2, backend.addr()).await,
        (200, name.clone(), name.clone())
    );
    assert_eq!(backend.requests(), 2);
    assert_eq!(backend.connections(), 2);

    backend.set_status(503);
    assert_eq!(get(&h1, backend.addr()).await.0, 503);

    backend.shutdown().await;
    assert!(tokio::net::TcpStream::connect(backend.addr())
        .await
        .is_err());
}

#[tokio::test]
async fn tcp_echo_echoes_and_half_closes() {
    let backend = spawn_tcp_echo(addr("127.0.0.12:0")).await.unwrap();
    let mut conn = tokio::net::TcpStream::connect(backend.addr())
        .await
        .unwrap();
    conn.write_all(b"hello").await.unwrap();
    conn.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    conn.read_to_end(&mut echoed).await.unwrap();
    assert_eq!(echoed, b"hello");
    assert_eq!(backend.requests(), 1);
}

#[tokio::test]
async fn udp_echo_echoes_datagrams() {
    let backend = spawn_udp_echo(addr("127.0.0.13:0")).await.unwrap();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(b"ping", backend.addr()).await.unwrap();
    let mut buf = [0; 16];
    let (n, from) = socket.recv_from(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"ping");
    assert_eq!(from, backend.addr());
    assert_eq!(backend.requests(), 1);
}
