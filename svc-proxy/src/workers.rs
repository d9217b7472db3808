//! Connection-serving threads.
//!
//! With `--threads N` (N > 1), each of N threads runs a single-threaded tokio runtime. Every
//! TCP or HTTP listener is one socket, accepted from by one task on one worker (its *home*,
//! assigned round-robin), which hands each connection to the least-loaded worker (by open
//! connections; ties stay home). The connection, its upstream connections and every task it
//! spawns then stay on that thread, as in haproxy and Envoy: under tokio's work-stealing
//! scheduler the same tasks migrate between threads and wake each other across them, which
//! the 2-thread benchmark rows paid for in CPU per request.
//!
//! One socket per listener, not one per listener and thread: at 10,000 Services the clones
//! alone would need 40,000 descriptors at `--threads 4`. Registering the one socket in every
//! worker's reactor would keep per-worker accept loops, but tokio's only safe way in for a
//! shared descriptor (`AsyncFd::new`) is deprecated as unsound since tokio 1.53.3
//! (tokio-rs/tokio#8587), and its replacement, `AsyncFd::register`, is `unsafe`. A handed-off connection costs one `epoll_ctl` to leave the home
//! reactor and one cross-thread spawn (see ARCHITECTURE.md for the measurement); in exchange the
//! kernel wakes one thread per connection instead of all N.
//!
//! The control plane (watches, the reconciler, admin, DNS and UDP) stays on the runtime
//! `svc-proxy` was started on. With one thread there are no workers: everything runs there.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::shutdown::Drain;
use crate::tcp::accept_loop;

/// The worker runtimes (none: serve on the current runtime).
#[derive(Debug, Default)]
pub struct Workers {
    handles: Arc<[Handle]>,
    /// Open connections per worker (one slot when there are no workers).
    load: Arc<[AtomicUsize]>,
    next_home: AtomicUsize,
    stop: CancellationToken,
}

impl Workers {
    /// Starts `n` worker threads, or none when `n` ≤ 1.
    ///
    /// # Errors
    /// Building a runtime or spawning a thread failed.
    pub fn start(n: usize) -> io::Result<Self> {
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        if n > 1 {
            for i in 0..n {
                // No signal or process drivers: they would cost descriptors per worker.
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build()?;
                handles.push(runtime.handle().clone());
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name(format!("svc-proxy-worker-{i}"))
                    .spawn(move || runtime.block_on(stop.cancelled()))?;
            }
        }
        let slots = handles.len().max(1);
        Ok(Self {
            handles: handles.into(),
            load: (0..slots).map(|_| AtomicUsize::new(0)).collect(),
            next_home: AtomicUsize::new(0),
            stop,
        })
    }

    /// How many worker threads serve connections (0: the current runtime does).
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether connections are served on the current runtime.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Open connections on each worker (one entry, the current runtime's, without workers).
    pub fn load(&self) -> Vec<usize> {
        self.load.iter().map(|l| l.load(Relaxed)).collect()
    }

    /// Accepts on `listener` (a non-blocking socket) until `cancel` fires, on one worker, and
    /// serves each connection on the least-loaded worker with `make()`'s handler for that
    /// worker (made there, on its first connection). Flows are tracked by `drain`.
    ///
    /// Returns the accept task; the socket closes when it ends.
    pub fn serve<M, H, Fut>(
        &self,
        listener: std::net::TcpListener,
        cancel: CancellationToken,
        drain: Drain,
        make: M,
    ) -> JoinHandle<()>
    where
        M: Fn() -> H + Send + Sync + 'static,
        H: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let home = self.next_home.fetch_add(1, Relaxed) % self.load.len();
        let dispatch = Arc::new(Dispatch {
            handlers: (0..self.load.len()).map(|_| OnceLock::new()).collect(),
            make,
            handles: self.handles.clone(),
            load: self.load.clone(),
            drain,
        });
        let accept = async move {
            match TcpListener::from_std(listener) {
                Ok(listener) => {
                    accept_loop(&listener, &cancel, |stream, peer| {
                        dispatch.dispatch(home, stream, peer)
                    })
                    .await
                }
                Err(error) => tracing::warn!(%error, "cannot register a listener"),
            }
        };
        match self.handles.get(home) {
            Some(handle) => handle.spawn(accept),
            None => tokio::spawn(accept),
        }
    }

    /// Ends the worker threads; their runtimes drop whatever tasks are left.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One listener's handlers, one per worker, and where to send connections.
struct Dispatch<M, H> {
    handlers: Box<[OnceLock<H>]>,
    make: M,
    handles: Arc<[Handle]>,
    load: Arc<[AtomicUsize]>,
    drain: Drain,
}

/// Counts a connection against its worker until the connection ends.
struct LoadGuard {
    load: Arc<[AtomicUsize]>,
    worker: usize,
}

impl LoadGuard {
    fn new(load: &Arc<[AtomicUsize]>, worker: usize) -> Self {
        load[worker].fetch_add(1, Relaxed);
        Self {
            load: load.clone(),
            worker,
        }
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.load[self.worker].fetch_sub(1, Relaxed);
    }
}

impl<M, H, Fut> Dispatch<M, H>
where
    M: Fn() -> H + Send + Sync + 'static,
    H: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    /// The worker for a new connection accepted on `home`: the one with the fewest open
    /// connections, `home` itself on a tie (a handoff is not free).
    fn pick(&self, home: usize) -> usize {
        let mut best = (self.load[home].load(Relaxed), home);
        for (i, load) in self.load.iter().enumerate() {
            let load = load.load(Relaxed);
            if load < best.0 {
                best = (load, i);
            }
        }
        best.1
    }

    fn dispatch(self: &Arc<Self>, home: usize, stream: TcpStream, peer: SocketAddr) {
        let worker = self.pick(home);
        let guard = LoadGuard::new(&self.load, worker);
        if worker == home {
            let serve = self.handlers[home].get_or_init(&self.make)(stream, peer);
            self.drain.spawn(async move {
                let _guard = guard;
                serve.await
            });
            return;
        }
        // Leave the home reactor; the stream registers with the worker's when it starts.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(error) => return tracing::debug!(%error, %peer, "cannot hand off a connection"),
        };
        let this = self.clone();
        let flow = async move {
            let _guard = guard;
            match TcpStream::from_std(stream) {
                Ok(stream) => this.handlers[worker].get_or_init(&this.make)(stream, peer).await,
                Err(error) => tracing::warn!(%error, %peer, "worker cannot register a connection"),
            }
        };
        self.drain.spawn_on(flow, &self.handles[worker]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use tokio::io::AsyncReadExt;

    /// Connections are served on the worker threads, not on the runtime that started the
    /// listener, spread evenly over them, and none is lost; the listener is one socket.
    #[tokio::test]
    async fn connections_are_spread_over_worker_threads() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(workers.len(), 2);
        let listener = crate::tcp::listen("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
        let seen = served.clone();
        let _accept = workers.serve(
            listener,
            CancellationToken::new(),
            Drain::new(),
            move || {
                let seen = seen.clone();
                move |mut stream: TcpStream, _| {
                    let name = std::thread::current().name().unwrap_or("").to_string();
                    *seen.lock().unwrap().entry(name).or_default() += 1;
                    async move {
                        let _ = stream.read(&mut [0u8; 1]).await;
                    }
                }
            },
        );
        let mut clients = Vec::new();
        for _ in 0..64 {
            clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        for _ in 0..500 {
            if served.lock().unwrap().values().sum::<usize>() == 64 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let served = served.lock().unwrap().clone();
        assert_eq!(served.values().sum::<usize>(), 64, "{served:?}");
        assert!(
            served.keys().all(|n| n.starts_with("svc-proxy-worker-")),
            "{served:?}"
        );
        // The connections stay open, so the least-loaded choice alternates.
        assert_eq!(served.len(), 2, "{served:?}");
        assert!(served.values().all(|&n| n == 32), "{served:?}");
        assert_eq!(workers.load(), vec![32, 32]);
        drop(clients);
    }
}
