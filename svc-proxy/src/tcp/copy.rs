//! The bidirectional copy of a TCP flow.
//!
//! Each direction waits until its socket has data, then takes a buffer from the thread's pool
//! ([`super::buffers`]), reads and writes everything out before reading again, and gives the
//! buffer back as soon as a read would block. A flow thus holds at most two buffers while data
//! moves, however fast one side is and however slow the other, and none while it is idle
//! (which is what most flows are, most of the time). End of stream in one direction is passed
//! on as a FIN (`shutdown(Write)`) while the other direction keeps flowing: a client that
//! half-closes still gets the whole response. The flow ends when both directions have ended,
//! when either fails, or when nothing moved in either direction for the idle timeout.
//!
//! Byte streams that are not a `TcpStream` (an upgraded HTTP connection) cannot be waited on
//! without a read, so they first read into a small buffer inside the flow and switch to a
//! pooled buffer while reads come back full.
//!
//! `splice(2)` (socket → pipe → socket, no copy to userspace) was measured against this and
//! against `tokio::io::copy_bidirectional` with `benches/copy.rs` (one proxied flow on loopback,
//! proxy on a current-thread runtime, 2-core machine shared with other work). All three landed
//! in the same band, run to run: bulk 9.5-11.3 Gbit/s at 400-600 ms of proxy CPU per GiB,
//! 64-byte ping-pong at 17-28 µs of proxy CPU per round trip, with no strategy ahead in every
//! run. splice is not clearly faster, so we keep the plain copy: no `unsafe`, no pipes (two more
//! descriptors per flow), and it carries the idle timeout and the byte counters.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use svc_tower::main_first::{MainFirst, Polled};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::ReadHalf;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::buffers::Buffer;

/// What a byte stream that is not a socket reads into while it waits for data.
const SMALL_READ: usize = 512;

/// How much larger than the configured buffer a direction's buffer grows while its reads come
/// back full (a bulk transfer). Fewer, larger reads and writes cost less CPU per byte: one
/// iperf3 stream through the proxy on loopback, 64 KiB → 256 KiB: 10.5–13.9 → 16.5–17.9
/// Gbit/s and 499–760 → 344–366 ms of proxy CPU per GiB (BENCHMARKS.md). Requests and
/// answers that fit the configured buffer never grow it.
const BULK_GROWTH: usize = 4;

/// How a flow ended.
#[derive(Debug)]
pub enum CopyEnd {
    /// Both sides closed their sending direction.
    Closed,
    /// Nothing moved for the idle timeout.
    Idle,
    /// A read or write failed (typically a reset).
    Error(io::Error),
}

/// Bytes counted into per-Service counters as they move.
#[derive(Clone, Copy, Debug)]
pub struct Counters<'a> {
    /// Client to endpoint.
    pub rx: &'a Counter,
    /// Endpoint to client.
    pub tx: &'a Counter,
}

/// When something last moved, shared by both directions for the idle timeout, and when the
/// first bytes moved each way if the caller asked ([`bidirectional_timed`]).
struct Activity<'a> {
    start: Instant,
    last: AtomicU64,
    first: Option<&'a FirstBytes>,
}

/// The direction of one half of a flow.
#[derive(Clone, Copy)]
enum Way {
    /// Client to endpoint.
    Up,
    /// Endpoint to client.
    Down,
}

impl<'a> Activity<'a> {
    fn new(first: Option<&'a FirstBytes>) -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
            first,
        }
    }

    fn touch(&self, way: Way) {
        let at = self.start.elapsed().as_nanos() as u64;
        self.last.store(at, Relaxed);
        if let Some(first) = self.first {
            let first = match way {
                Way::Up => &first.up,
                Way::Down => &first.down,
            };
            if first.load(Relaxed) == 0 {
                let _ = first.compare_exchange(0, at + 1, Relaxed, Relaxed);
            }
        }
    }

    async fn idle_for(&self, timeout: Duration) {
        loop {
            let deadline = self.start + Duration::from_nanos(self.last.load(Relaxed)) + timeout;
            if deadline <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Copies between `client` and `server` until the flow ends; see the module docs.
pub async fn bidirectional(
    client: &mut TcpStream,
    server: &mut TcpStream,
    buffer_size: usize,
    idle_timeout: Duration,
    counters: Counters<'_>,
) -> CopyEnd {
    bidirectional_timed(client, server, buffer_size, idle_timeout, counters, None).await
}

/// When the first bytes of a flow moved, for the balancer's latency sample of an L4 flow.
#[derive(Debug, Default)]
pub struct FirstBytes {
    /// Nanoseconds from the start of the copy to the first client bytes, plus one (0: none).
    up: AtomicU64,
    /// The same for the first endpoint bytes.
    down: AtomicU64,
}

impl FirstBytes {
    /// How long the endpoint took to send its first bytes: after the client's first bytes
    /// for protocols where the client speaks first (a request), or from the start for those
    /// where the server does (a greeting). `None` if it sent nothing.
    pub fn latency(&self) -> Option<Duration> {
        let (up, down) = (self.up.load(Relaxed), self.down.load(Relaxed));
        match (up, down) {
            (_, 0) => None,
            (0, down) => Some(Duration::from_nanos(down - 1)),
            (up, down) => Some(Duration::from_nanos(down.saturating_sub(up))),
        }
    }
}

/// [`bidirectional`], noting in `first` when the first bytes moved each way.
pub async fn bidirectional_timed(
    client: &mut TcpStream,
    server: &mut TcpStream,
    buffer_size: usize,
    idle_timeout: Duration,
    counters: Counters<'_>,
    first: Option<&FirstBytes>,
) -> CopyEnd {
    // TcpStream's borrowed halves are free; `tokio::io::split` would lock on every call.
    let (cr, mut cw) = client.split();
    let (sr, mut sw) = server.split();
    let activity = Activity::new(first);
    let size = buffer_size.max(1024);
    let up = socket_one_way(&cr, &mut sw, size, &activity, Way::Up, counters.rx);
    let down = socket_one_way(&sr, &mut cw, size, &activity, Way::Down, counters.tx);
    join(up, down, &activity, idle_timeout).await
}

/// [`bidirectional`] for any byte stream on the client side (an upgraded HTTP connection,
/// say) and a socket on the server side.
pub async fn bidirectional_io<C>(
    client: C,
    server: &mut TcpStream,
    buffer_size: usize,
    idle_timeout: Duration,
    counters: Counters<'_>,
) -> CopyEnd
where
    C: AsyncRead + AsyncWrite,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (sr, mut sw) = server.split();
    let activity = Activity::new(None);
    let size = buffer_size.max(1024);
    let up = stream_one_way(&mut cr, &mut sw, size, &activity, Way::Up, counters.rx);
    let down = socket_one_way(&sr, &mut cw, size, &activity, Way::Down, counters.tx);
    join(up, down, &activity, idle_timeout).await
}

/// [`bidirectional`] for two byte streams that are not sockets.
pub async fn bidirectional_streams<C, S>(
    client: C,
    server: S,
    buffer_size: usize,
    idle_timeout: Duration,
    counters: Counters<'_>,
) -> CopyEnd
where
    C: AsyncRead + AsyncWrite,
    S: AsyncRead + AsyncWrite,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut sr, mut sw) = tokio::io::split(server);
    let activity = Activity::new(None);
    let size = buffer_size.max(1024);
    let up = stream_one_way(&mut cr, &mut sw, size, &activity, Way::Up, counters.rx);
    let down = stream_one_way(&mut sr, &mut cw, size, &activity, Way::Down, counters.tx);
    join(up, down, &activity, idle_timeout).await
}

async fn join(
    up: impl Future<Output = io::Result<()>>,
    down: impl Future<Output = io::Result<()>>,
    activity: &Activity<'_>,
    idle_timeout: Duration,
) -> CopyEnd {
    // The idle timer is polled only when it fires, not on every chunk's wake-up.
    let copy = pin!(futures::future::try_join(up, down));
    match MainFirst::new(copy, pin!(activity.idle_for(idle_timeout))).await {
        Polled::Main(Ok(_)) => CopyEnd::Closed,
        Polled::Main(Err(e)) => CopyEnd::Error(e),
        Polled::Side(()) => CopyEnd::Idle,
    }
}

/// One direction from a socket: no buffer is held while the socket has nothing to read.
async fn socket_one_way<W>(
    r: &ReadHalf<'_>,
    w: &mut W,
    buffer_size: usize,
    activity: &Activity<'_>,
    way: Way,
    bytes: &Counter,
) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    loop {
        r.readable().await?;
        let mut buf = Buffer::take(buffer_size);
        loop {
            buf.clear();
            match r.try_read_buf(&mut *buf) {
                Ok(0) => return end_of_stream(w).await,
                Ok(n) => {
                    activity.touch(way);
                    w.write_all(&buf).await?;
                    bytes.inc_by(n as u64);
                    grow_if_full(&mut buf, n, buffer_size);
                }
                // Drained: the buffer goes back to the pool until the next burst.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
}

/// One direction from any byte stream: waits in a small buffer, and reads into a pooled one
/// only while reads come back full (more is waiting).
async fn stream_one_way<R, W>(
    r: &mut R,
    w: &mut W,
    buffer_size: usize,
    activity: &Activity<'_>,
    way: Way,
    bytes: &Counter,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut small = [0u8; SMALL_READ];
    loop {
        let n = r.read(&mut small).await?;
        if n == 0 {
            return end_of_stream(w).await;
        }
        activity.touch(way);
        w.write_all(&small[..n]).await?;
        bytes.inc_by(n as u64);
        if n < SMALL_READ {
            continue;
        }
        let mut buf = Buffer::take(buffer_size);
        loop {
            buf.clear();
            let n = r.read_buf(&mut *buf).await?;
            if n == 0 {
                return end_of_stream(w).await;
            }
            activity.touch(way);
            w.write_all(&buf).await?;
            bytes.inc_by(n as u64);
            if n < buf.capacity() {
                break;
            }
            grow_if_full(&mut buf, n, buffer_size);
        }
    }
}

/// After a read of `n` bytes: a read that filled the buffer means more is waiting, so the
/// rest of this burst goes through a [`BULK_GROWTH`] times larger one.
fn grow_if_full(buf: &mut Buffer, n: usize, buffer_size: usize) {
    let bulk = buffer_size.saturating_mul(BULK_GROWTH);
    if n == buf.capacity() && buf.capacity() < bulk {
        *buf = Buffer::take(bulk);
    }
}

/// Passes the FIN on. The peer may have closed already, which ends this direction just the
/// same.
async fn end_of_stream<W: AsyncWrite + Unpin>(w: &mut W) -> io::Result<()> {
    let _ = w.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn half_close_keeps_the_other_direction_open() {
        // client <-> (c1 | c2 proxy s1 | s2) <-> server
        let (mut client, mut c2) = pair().await;
        let (mut s1, mut server) = pair().await;
        let (rx, tx) = (Counter::default(), Counter::default());
        let proxy = tokio::spawn(async move {
            bidirectional(
                &mut c2,
                &mut s1,
                4096,
                Duration::from_secs(60),
                Counters { rx: &rx, tx: &tx },
            )
            .await;
            (rx.get(), tx.get())
        });
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request", "the server sees the request then the FIN");
        server
            .write_all(b"response after the client's FIN")
            .await
            .unwrap();
        server.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"response after the client's FIN");
        let (rx, tx) = proxy.await.unwrap();
        assert_eq!((rx, tx), (7, 31));
    }

    /// Item 7 of the hardening issue: an idle flow held two 64 KiB buffers.
    #[tokio::test]
    async fn idle_flows_hold_no_buffer() {
        let (mut client, mut c2) = pair().await;
        let (mut s1, mut server) = pair().await;
        let proxy = tokio::spawn(async move {
            let (rx, tx) = (Counter::default(), Counter::default());
            let c = Counters { rx: &rx, tx: &tx };
            bidirectional(&mut c2, &mut s1, 4096, Duration::from_secs(60), c).await
        });
        for _ in 0..3 {
            client.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            server.read_exact(&mut got).await.unwrap();
            server.write_all(b"pong").await.unwrap();
            client.read_exact(&mut got).await.unwrap();
            // This runtime has one thread: the proxy task has gone back to waiting on both
            // sockets, without a buffer.
            tokio::task::yield_now().await;
            assert_eq!(Buffer::lent(), 0);
        }
        assert!(!proxy.is_finished());
        proxy.abort();
    }

    /// A byte stream that is not a socket, bulk one way: every byte arrives, in order.
    #[tokio::test]
    async fn streams_switch_to_pooled_buffers_and_back() {
        let (client, mut far_client) = tokio::io::duplex(1 << 20);
        let (s1, mut server) = pair().await;
        let proxy = tokio::spawn(async move {
            let (rx, tx) = (Counter::default(), Counter::default());
            let c = Counters { rx: &rx, tx: &tx };
            let mut s1 = s1;
            bidirectional_io(client, &mut s1, 4096, Duration::from_secs(60), c).await;
            (rx.get(), tx.get())
        });
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        far_client.write_all(&data).await.unwrap();
        far_client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert!(got == data, "{} bytes arrived of {}", got.len(), data.len());
        drop(server);
        let mut rest = Vec::new();
        far_client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(proxy.await.unwrap(), (300_000, 0));
    }

    /// A bulk direction moves to a larger buffer while its reads come back full, every byte
    /// arrives in order, and both buffers go back to the pool.
    #[tokio::test]
    async fn bulk_flows_grow_their_buffer() {
        let (mut client, mut c2) = pair().await;
        let (mut s1, mut server) = pair().await;
        let proxy = tokio::spawn(async move {
            let (rx, tx) = (Counter::default(), Counter::default());
            let c = Counters { rx: &rx, tx: &tx };
            bidirectional(&mut c2, &mut s1, 4096, Duration::from_secs(60), c).await;
            rx.get()
        });
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert!(got == data, "{} bytes arrived of {}", got.len(), data.len());
        drop(server);
        drop(writer.await.unwrap());
        assert_eq!(proxy.await.unwrap(), 2_000_000);
        assert_eq!(Buffer::lent(), 0);
        assert!(
            Buffer::pooled_of(4096 * BULK_GROWTH) >= 1,
            "no {}-byte buffer was used",
            4096 * BULK_GROWTH
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_flows_end() {
        let (_client, mut c2) = pair().await;
        let (mut s1, _server) = pair().await;
        let (rx, tx) = (Counter::default(), Counter::default());
        let end = bidirectional(
            &mut c2,
            &mut s1,
            4096,
            Duration::from_secs(30),
            Counters { rx: &rx, tx: &tx },
        )
        .await;
        assert!(matches!(end, CopyEnd::Idle), "{end:?}");
    }
}
