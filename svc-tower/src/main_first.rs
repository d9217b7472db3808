//! Waiting on a connection and on its rare events without polling the rare ones every time.
//!
//! A connection's task waits on hyper's connection and on events that almost never happen:
//! svc-tower's upstream HTTP/1.1 connections on their response deadline, svc-proxy's client
//! connections on shutdown, the drain deadline and the header read timeout. `tokio::select!`
//! polls every branch on every wake-up, and the task wakes two or three times per request
//! (the request's bytes, the endpoint's answer, the response body); each pending cancellation
//! token takes a mutex when polled, and a sleep checks its timer entry. [`MainFirst`] polls
//! the main future on every wake-up and the side future only when one of the side's own
//! wakers fired, as `FuturesUnordered` polls only the futures that were woken.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

/// Which future finished first.
#[derive(Debug, PartialEq, Eq)]
pub enum Polled<M, S> {
    /// The main future's output.
    Main(M),
    /// The side future's output.
    Side(S),
}

/// Polls `main` on every wake-up and `side` only when `side` asked to be polled (and on the
/// first poll). Both are polled until one finishes, `main` first.
pub struct MainFirst<M, S> {
    main: M,
    side: S,
    signal: Arc<SideSignal>,
    side_waker: Waker,
}

/// The side's waker: it marks the side as woken and wakes the task.
#[derive(Default)]
struct SideSignal {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for SideSignal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<M, S> MainFirst<M, S> {
    /// Waits for `main` or `side`, whichever finishes first.
    pub fn new(main: M, side: S) -> Self {
        let signal = Arc::new(SideSignal {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            main,
            side,
            side_waker: Waker::from(signal.clone()),
            signal,
        }
    }
}

impl<M, S> Future for MainFirst<M, S>
where
    M: Future + Unpin,
    S: Future + Unpin,
{
    type Output = Polled<M::Output, S::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        // Before polling the side, so that a side wake-up from here on wakes this task.
        this.signal.task.register(cx.waker());
        if let Poll::Ready(out) = Pin::new(&mut this.main).poll(cx) {
            return Poll::Ready(Polled::Main(out));
        }
        if this.signal.woken.swap(false, Ordering::AcqRel) {
            let mut side_cx = Context::from_waker(&this.side_waker);
            if let Poll::Ready(out) = Pin::new(&mut this.side).poll(&mut side_cx) {
                return Poll::Ready(Polled::Side(out));
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A future that counts its polls and is never ready.
    struct CountPolls(Arc<AtomicUsize>);

    impl Future for CountPolls {
        type Output = ();

        fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn the_side_is_polled_once_while_only_the_main_future_wakes() {
        let side_polls = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let main = Box::pin(async move {
            let mut sum = 0;
            while let Some(n) = rx.recv().await {
                sum += n;
            }
            sum
        });
        let waiting = tokio::spawn(MainFirst::new(main, CountPolls(side_polls.clone())));
        for n in 1..=10 {
            tx.send(n).unwrap();
            tokio::task::yield_now().await;
        }
        drop(tx);
        assert_eq!(waiting.await.unwrap(), Polled::Main(55));
        assert_eq!(side_polls.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_side_wake_up_finishes_the_wait() {
        let main = std::future::pending::<()>();
        let side = Box::pin(async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            7
        });
        assert_eq!(MainFirst::new(main, side).await, Polled::Side(7));
    }

    #[tokio::test]
    async fn the_main_future_wins_when_both_are_ready() {
        let main = std::future::ready(1);
        let side = std::future::ready(2);
        assert_eq!(MainFirst::new(main, side).await, Polled::Main(1));
    }
}
