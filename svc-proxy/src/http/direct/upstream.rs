//! One worker's kept-alive HTTP/1.1 connections to endpoints.
//!
//! A connection is the worker's while a request uses it and goes back here when its
//! response has been read whole; nothing polls it while it waits. So a connection the
//! endpoint closed while idle is found out at checkout, from the readiness that closing left
//! on it, and dropped (a request that still meets a closed one is sent again, see the
//! exchange).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// One worker's idle connections, by endpoint.
#[derive(Debug)]
pub struct Upstreams {
    idle: Mutex<IdleSet>,
    max_idle_per_endpoint: usize,
    idle_timeout: Option<Duration>,
    connect_timeout: Duration,
}

#[derive(Debug, Default)]
struct IdleSet {
    by_endpoint: HashMap<SocketAddr, Vec<Idle>>,
    /// When expired connections were last dropped: checkins sweep at most once per idle
    /// timeout, so that connections to endpoints no longer picked do not stay open.
    swept: Option<Instant>,
}

#[derive(Debug)]
struct Idle {
    stream: TcpStream,
    since: Instant,
}

impl Upstreams {
    /// Keeps up to `max_idle_per_endpoint` idle connections per endpoint, each for up to
    /// `idle_timeout`; gives connects `connect_timeout`.
    pub fn new(
        max_idle_per_endpoint: usize,
        idle_timeout: Option<Duration>,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            idle: Mutex::default(),
            max_idle_per_endpoint,
            idle_timeout,
            connect_timeout,
        }
    }

    /// An idle connection to `addr` that still looks open, if there is one.
    pub fn checkout(&self, addr: SocketAddr, now: Instant) -> Option<TcpStream> {
        let mut idle = self.idle.lock();
        let list = idle.by_endpoint.get_mut(&addr)?;
        // The most recently used first: warm, and the least likely to have timed out.
        while let Some(conn) = list.pop() {
            if !self.expired(conn.since, now) && still_open(&conn.stream) {
                return Some(conn.stream);
            }
        }
        None
    }

    /// Gives back a connection whose last response was read whole.
    pub fn checkin(&self, addr: SocketAddr, stream: TcpStream, now: Instant) {
        let mut idle = self.idle.lock();
        let due = match (self.idle_timeout, idle.swept) {
            (Some(t), Some(at)) => now.saturating_duration_since(at) >= t,
            (Some(_), None) => {
                idle.swept = Some(now);
                false
            }
            (None, _) => false,
        };
        if due {
            self.sweep_locked(&mut idle, now);
        }
        let list = idle.by_endpoint.entry(addr).or_default();
        if list.len() < self.max_idle_per_endpoint {
            list.push(Idle { stream, since: now });
        }
    }

    /// Drops the connections idle for longer than the idle timeout, and the endpoints left
    /// without any.
    pub fn sweep(&self, now: Instant) {
        self.sweep_locked(&mut self.idle.lock(), now);
    }

    fn sweep_locked(&self, idle: &mut IdleSet, now: Instant) {
        idle.swept = Some(now);
        idle.by_endpoint.retain(|_, list| {
            list.retain(|c| !self.expired(c.since, now));
            !list.is_empty()
        });
    }

    /// Idle connections kept, over all endpoints.
    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        self.idle.lock().by_endpoint.values().map(Vec::len).sum()
    }

    fn expired(&self, since: Instant, now: Instant) -> bool {
        self.idle_timeout
            .is_some_and(|t| now.saturating_duration_since(since) >= t)
    }

    /// A new connection to `addr`.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Whether an idle connection is still open: nothing may arrive on one, so data, an end or
/// an error mean it is not. Costs a syscall only when the socket has readiness left over
/// (the last read of a response leaves it set).
fn still_open(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut byte = [0u8; 1];
            matches!(stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn closed_and_expired_connections_are_not_handed_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ups = Upstreams::new(4, Some(Duration::from_secs(60)), Duration::from_secs(1));
        let open = ups.connect(addr).await.unwrap();
        let (_kept, _) = listener.accept().await.unwrap();
        let closing = ups.connect(addr).await.unwrap();
        let (peer, _) = listener.accept().await.unwrap();
        let now = Instant::now();
        ups.checkin(addr, open, now);
        ups.checkin(addr, closing, now);
        drop(peer);
        // Let the FIN arrive and wake the reactor.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = ups.checkout(addr, Instant::now()).expect("the open one");
        assert_eq!(ups.idle_count(), 0, "the closed one was dropped on the way");
        ups.checkin(addr, got, now);
        assert!(ups.checkout(addr, now + Duration::from_secs(61)).is_none());
        assert_eq!(ups.idle_count(), 0);
    }

    #[tokio::test]
    async fn stray_bytes_mean_not_reusable_and_the_cap_holds() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ups = Upstreams::new(1, None, Duration::from_secs(1));
        let a = ups.connect(addr).await.unwrap();
        let (mut pa, _) = listener.accept().await.unwrap();
        let b = ups.connect(addr).await.unwrap();
        let (_pb, _) = listener.accept().await.unwrap();
        let now = Instant::now();
        ups.checkin(addr, a, now);
        ups.checkin(addr, b, now);
        assert_eq!(
            ups.idle_count(),
            1,
            "one idle connection per endpoint at most"
        );
        pa.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(ups.checkout(addr, now).is_none());
        ups.sweep(now);
        assert_eq!(ups.idle_count(), 0);
    }
}
