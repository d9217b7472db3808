//! A pod that speaks only TLS (HTTP/1.1 inside), with a fresh self-signed certificate, for
//! tests and examples of `https://` through svc-tower.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

/// A running TLS backend; it answers every request with its address and stops when dropped.
#[derive(Debug)]
pub struct TlsBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its certificate (self-signed, for the name it was started with): trust it as a root.
    pub cert: CertificateDer<'static>,
    requests: Arc<AtomicU64>,
    handshakes_failed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsBackend {
    /// Requests served (over TLS: a cleartext client never gets that far).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Connections whose TLS handshake failed, such as a cleartext HTTP request.
    pub fn handshakes_failed(&self) -> u64 {
        self.handshakes_failed.load(Ordering::SeqCst)
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a TLS backend on `addr` (port 0 picks one) with a certificate for `server_name`.
pub async fn spawn_tls_backend(addr: SocketAddr, server_name: &str) -> crate::Result<TlsBackend> {
    let generated = rcgen::generate_simple_self_signed(vec![server_name.to_owned()])
        .map_err(|e| crate::Error::Tls(format!("certificate: {e}")))?;
    let cert = generated.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|b| {
        b.with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
    })
    .map_err(|e| crate::Error::Tls(format!("config: {e}")))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let bind = |source| crate::Error::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    let requests = Arc::new(AtomicU64::new(0));
    let handshakes_failed = Arc::new(AtomicU64::new(0));
    let (served, failed) = (requests.clone(), handshakes_failed.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, served, failed) = (acceptor.clone(), served.clone(), failed.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    failed.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                let svc = service_fn(move |_req| {
                    served.fetch_add(1, Ordering::SeqCst);
                    let body = Full::new(Bytes::from(addr.to_string()));
                    async move { Ok::<_, std::convert::Infallible>(http::Response::new(body)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Ok(TlsBackend {
        addr,
        cert,
        requests,
        handshakes_failed,
        task,
    })
}

/// A rustls client configuration (ring provider) that trusts exactly these backends'
/// certificates, as a client in a cluster would trust its CA.
pub fn tls_client_config<'a>(
    backends: impl IntoIterator<Item = &'a TlsBackend>,
) -> crate::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for backend in backends {
        roots
            .add(backend.cert.clone())
            .map_err(|e| crate::Error::Tls(format!("root certificate: {e}")))?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| crate::Error::Tls(format!("client config: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}
