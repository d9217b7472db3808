//! `splice(2)` against the userspace copy, for one proxied TCP flow on loopback; and the copy
//! loop against its previous form, which held two buffers per flow for the flow's lifetime.
//!
//! ```text
//! cargo bench -p svc-proxy --bench copy
//! ```
//!
//! Three threads: a blocking client, a blocking backend, and the proxy on a current-thread
//! runtime (as `--threads 1` runs it). Two loads:
//! - bulk: the client streams 2 GiB to the backend, which discards it (Gbit/s);
//! - ping-pong: 64-byte request, 64-byte reply, one at a time (round trips per second: the
//!   per-chunk cost, which is what request/response traffic pays).
//!
//! Besides the rates (which depend on what else runs on the machine), it reports the CPU time
//! the proxy thread used (`getrusage(RUSAGE_THREAD)`), which is what the strategies differ in.
//!
//! The splice variant moves data socket → pipe → socket without copying it to userspace,
//! through nix's safe wrappers.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use nix::fcntl::{splice, OFlag, SpliceFFlags};
use prometheus_client::metrics::counter::Counter;
use tokio::io::Interest;

const BULK: u64 = 2 << 30;
const PINGS: usize = 50_000;

#[derive(Clone, Copy, Debug)]
enum Strategy {
    /// `svc_proxy::tcp::copy::bidirectional` (what the proxy uses): buffers borrowed per
    /// burst from a per-thread pool.
    Userspace,
    /// The copy loop as it was before: one 64 KiB buffer per direction, allocated when the
    /// flow starts and held until it ends.
    HeldBuffers,
    /// `tokio::io::copy_bidirectional_with_sizes`, for reference.
    TokioCopy,
    /// `splice(2)` through a pipe per direction.
    Splice,
}

fn main() {
    let all = [
        Strategy::Userspace,
        Strategy::HeldBuffers,
        Strategy::TokioCopy,
        Strategy::Splice,
    ];
    for strategy in all.repeat(2) {
        let (gbps, bulk_cpu) = bulk(strategy);
        let (rps, ping_cpu) = ping_pong(strategy);
        println!(
            "{strategy:?}: bulk {gbps:.2} Gbit/s, {:.0} ms proxy CPU per GiB; ping-pong {rps:.0} round trips/s, {:.2} µs proxy CPU per round trip",
            bulk_cpu.as_secs_f64() * 1e3 / (BULK >> 30) as f64,
            ping_cpu.as_secs_f64() * 1e6 / PINGS as f64,
        );
    }
}

fn thread_cpu() -> Duration {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD).unwrap();
    let t =
        |tv: nix::sys::time::TimeVal| Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000);
    t(u.user_time()) + t(u.system_time())
}

/// Starts the proxy thread in front of `backend`; returns its address, and the CPU time the
/// proxy thread used once the flow ends.
fn proxy(
    strategy: Strategy,
    backend: std::net::SocketAddr,
) -> (std::net::SocketAddr, std::thread::JoinHandle<Duration>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let cpu = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let start = thread_cpu();
        rt.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let (mut client, _) = listener.accept().await.unwrap();
            let mut server = tokio::net::TcpStream::connect(backend).await.unwrap();
            client.set_nodelay(true).unwrap();
            server.set_nodelay(true).unwrap();
            match strategy {
                Strategy::Userspace => {
                    let (rx, tx) = (Counter::default(), Counter::default());
                    let counters = svc_proxy::tcp::copy::Counters { rx: &rx, tx: &tx };
                    svc_proxy::tcp::copy::bidirectional(
                        &mut client,
                        &mut server,
                        64 * 1024,
                        Duration::from_secs(60),
                        counters,
                    )
                    .await;
                }
                Strategy::HeldBuffers => {
                    let (mut cr, mut cw) = client.split();
                    let (mut sr, mut sw) = server.split();
                    let _ = futures::future::try_join(
                        held_one_way(&mut cr, &mut sw),
                        held_one_way(&mut sr, &mut cw),
                    )
                    .await;
                }
                Strategy::TokioCopy => {
                    let _ = tokio::io::copy_bidirectional_with_sizes(
                        &mut client,
                        &mut server,
                        64 * 1024,
                        64 * 1024,
                    )
                    .await;
                }
                Strategy::Splice => {
                    let (c1, s1) = (&client, &server);
                    let _ =
                        futures::future::try_join(splice_one_way(c1, s1), splice_one_way(s1, c1))
                            .await;
                }
            }
        });
        thread_cpu() - start
    });
    (addr, cpu)
}

/// The previous copy loop's direction: its buffer lives as long as the flow.
async fn held_one_way<R, W>(r: &mut R, w: &mut W) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            let _ = w.shutdown().await;
            return Ok(());
        }
        w.write_all(&buf[..n]).await?;
    }
}

async fn splice_one_way(
    from: &tokio::net::TcpStream,
    to: &tokio::net::TcpStream,
) -> std::io::Result<()> {
    let (pr, pw): (OwnedFd, OwnedFd) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
    loop {
        let n = from
            .async_io(Interest::READABLE, || {
                splice(from, None, &pw, None, 1 << 20, flags).map_err(std::io::Error::from)
            })
            .await?;
        if n == 0 {
            return socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write);
        }
        let mut left = n;
        while left > 0 {
            left -= to
                .async_io(Interest::WRITABLE, || {
                    splice(&pr, None, to, None, left, flags).map_err(std::io::Error::from)
                })
                .await?;
        }
    }
}

fn bulk(strategy: Strategy) -> (f64, Duration) {
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = sink.local_addr().unwrap();
    let done = std::thread::spawn(move || {
        let (mut s, _) = sink.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                return total;
            }
            total += n as u64;
        }
    });
    let (addr, cpu) = proxy(strategy, backend);
    let mut c = TcpStream::connect(addr).unwrap();
    let chunk = vec![7u8; 1 << 20];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < BULK {
        c.write_all(&chunk).unwrap();
        sent += chunk.len() as u64;
    }
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let received = done.join().unwrap();
    assert_eq!(received, BULK);
    let gbps = (BULK * 8) as f64 / start.elapsed().as_secs_f64() / 1e9;
    drop(c);
    (gbps, cpu.join().unwrap())
}

fn ping_pong(strategy: Strategy) -> (f64, Duration) {
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = echo.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; 64];
        while s.read_exact(&mut buf).is_ok() {
            s.write_all(&buf).unwrap();
        }
    });
    let (addr, cpu) = proxy(strategy, backend);
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    let mut buf = [1u8; 64];
    let start = Instant::now();
    for _ in 0..PINGS {
        c.write_all(&buf).unwrap();
        c.read_exact(&mut buf).unwrap();
    }
    let rps = PINGS as f64 / start.elapsed().as_secs_f64();
    drop(c);
    (rps, cpu.join().unwrap())
}
