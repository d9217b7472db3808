//! Connection-serving threads.
//!
//! With `--threads N` (N > 1), each of N threads runs a single-threaded tokio runtime, and
//! every TCP or HTTP listener runs one accept loop per thread on a clone of its socket: the
//! kernel hands each connection to one of them, and the connection, its upstream connections
//! and every task it spawns stay on that thread. That is haproxy's and Envoy's model. Under
//! tokio's work-stealing scheduler the same tasks migrate between threads and wake each other
//! across them, which the 2-thread benchmark rows paid for in CPU per request.
//!
//! The control plane (watches, the reconciler, admin, DNS and UDP) stays on the runtime
//! `svc-proxy` was started on. With one thread there are no workers: everything runs there.

use std::future::Future;
use std::io;

use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The worker runtimes (none: serve on the current runtime).
#[derive(Debug, Default)]
pub struct Workers {
    handles: Vec<Handle>,
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
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                handles.push(runtime.handle().clone());
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name(format!("svc-proxy-worker-{i}"))
                    .spawn(move || runtime.block_on(stop.cancelled()))?;
            }
        }
        Ok(Self { handles, stop })
    }

    /// How many worker threads serve connections (0: the current runtime does).
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether connections are served on the current runtime.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Runs `serve` on `listener`: on the current runtime, or once per worker on a clone of
    /// the socket.
    ///
    /// # Errors
    /// Cloning the socket failed.
    pub fn serve<F, Fut>(&self, listener: TcpListener, serve: F) -> io::Result<Vec<JoinHandle<()>>>
    where
        F: Fn(TcpListener) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if self.handles.is_empty() {
            return Ok(vec![tokio::spawn(serve(listener))]);
        }
        // Deregistered from this runtime; each worker registers its clone with its own.
        let listener = listener.into_std()?;
        let mut tasks = Vec::with_capacity(self.handles.len());
        for handle in &self.handles {
            let socket = listener.try_clone()?;
            let serve = serve.clone();
            tasks.push(handle.spawn(async move {
                match TcpListener::from_std(socket) {
                    Ok(listener) => serve(listener).await,
                    Err(error) => tracing::warn!(%error, "worker cannot register the listener"),
                }
            }));
        }
        Ok(tasks)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};
    use tokio::io::AsyncReadExt;

    /// Connections are accepted (and served) on the worker threads, not on the runtime that
    /// started the listener, and none is lost between the accept loops.
    #[tokio::test]
    async fn connections_are_accepted_on_worker_threads() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(workers.len(), 2);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let seen = accepted.clone();
        let tasks = workers
            .serve(listener, move |listener| {
                let seen = seen.clone();
                async move {
                    while let Ok((mut stream, _)) = listener.accept().await {
                        let name = std::thread::current().name().map(String::from);
                        seen.lock().unwrap().push(name);
                        tokio::spawn(async move {
                            let _ = stream.read(&mut [0u8; 1]).await;
                        });
                    }
                }
            })
            .unwrap();
        assert_eq!(tasks.len(), 2, "one accept loop per worker");
        let mut clients = Vec::new();
        for _ in 0..64 {
            clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        for _ in 0..500 {
            if accepted.lock().unwrap().len() == 64 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let names = accepted.lock().unwrap().clone();
        assert_eq!(names.len(), 64);
        let threads: HashSet<_> = names.into_iter().collect();
        assert!(
            threads.iter().all(|n| n
                .as_deref()
                .is_some_and(|n| n.starts_with("svc-proxy-worker-"))),
            "{threads:?}"
        );
    }
}
