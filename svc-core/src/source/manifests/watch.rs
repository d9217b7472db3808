//! The manifests source's loop: look at the files on every poll, on inotify completions and on
//! reload requests, and send the new state when what they serve changed.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::activity::{Activity, View};
use super::status::Status;
use super::tracker::{Look, Tracker};
use super::Result;
use crate::source::Reload;
use crate::store::Event;

/// How to run a manifests source.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// How often to look for changes (default 1 s). A changed file is applied once it has been
    /// stable this long, unless inotify shows that its writer finished earlier.
    pub interval: Duration,
    /// Where to report per-file health (default: a fresh one nobody reads).
    pub status: Status,
    /// Pulled to look again at once and apply whatever parses (default: never pulled).
    pub reload: Reload,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            status: Status::new(),
            reload: Reload::new(),
        }
    }
}

/// Builder methods, by value as kube-runtime's `watcher::Config` has them:
/// `Options::default().interval(Duration::from_millis(200)).reload(reload)`.
impl Options {
    /// How often to look for changes (default 1 s); a changed file is applied once it has been
    /// stable this long, unless inotify shows that its writer finished earlier.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Where to report per-file health (default: a fresh one nobody reads).
    #[must_use]
    pub fn status(mut self, status: Status) -> Self {
        self.status = status;
        self
    }

    /// The trigger that looks again at once and applies whatever parses (default: never
    /// pulled; SIGHUP in svc-proxy).
    #[must_use]
    pub fn reload(mut self, reload: Reload) -> Self {
        self.reload = reload;
        self
    }
}

/// The tracker is used from blocking threads, one look at a time.
type Shared = Arc<Mutex<Tracker>>;

/// Inotify completions can come in bursts (a tool rewriting many files); gather them.
const SETTLE: Duration = Duration::from_millis(20);

/// Watches a manifests path: loads it, sends its state to `events`, then follows changes and
/// sends the new state whenever what the files serve changed. Returns when the receiver is
/// gone.
///
/// # Errors
/// The first load's error: a source that cannot start should say so at once.
pub async fn run(path: PathBuf, interval: Duration, events: mpsc::Sender<Event>) -> Result<()> {
    run_with(path, Options::default().interval(interval), events).await
}

/// [`run`] with [`Options`].
///
/// # Errors
/// See [`run`].
pub async fn run_with(path: PathBuf, options: Options, events: mpsc::Sender<Event>) -> Result<()> {
    start(path, options, events).await?.await
}

/// Loads the path and sends its state, then returns the future that follows changes (spawn
/// it). Reading and parsing run on blocking threads, so a large file never stalls the runtime.
///
/// # Errors
/// When the path cannot be listed, or is a single file that cannot be read or does not parse.
/// In a directory, a bad file is reported in the [`Status`] and the others are served.
pub async fn start(
    path: PathBuf,
    options: Options,
    events: mpsc::Sender<Event>,
) -> Result<impl Future<Output = Result<()>> + Send + 'static> {
    // Watch before the first look, so that no write after it goes unseen.
    let mut activity = Activity::new(&path);
    let tracker: Shared = Arc::new(Mutex::new(Tracker::new(
        path.clone(),
        options.interval,
        options.status.clone(),
    )));
    look(&tracker, activity.take(), true, true).await?;
    let state = tracker.lock().state();
    tracing::info!(path = %path.display(), services = state.services.len(),
        slices = state.slices.len(), "loaded manifests");
    for event in state.into_events() {
        // A receiver that is gone already is noticed by the loop.
        let _ = events.send(event).await;
    }
    Ok(follow(path, tracker, activity, options, events))
}

async fn follow(
    path: PathBuf,
    tracker: Shared,
    mut activity: Activity,
    options: Options,
    events: mpsc::Sender<Event>,
) -> Result<()> {
    let mut ticks = tokio::time::interval_at(Instant::now() + options.interval, options.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let at_once = tokio::select! {
            _ = ticks.tick() => false,
            _ = activity.changed() => {
                tokio::time::sleep(SETTLE).await;
                false
            }
            _ = options.reload.requested() => {
                tracing::info!(path = %path.display(), "reload requested; applying every changed file that parses");
                true
            }
            _ = events.closed() => return Ok(()),
        };
        match look(&tracker, activity.take(), at_once, false).await {
            Ok(true) => {
                let state = tracker.lock().state();
                for event in state.into_events() {
                    if events.send(event).await.is_err() {
                        return Ok(());
                    }
                }
            }
            Ok(false) => {}
            // Only the first look fails; later failures are per file and reported.
            Err(error) => {
                tracing::warn!(%error, "manifests look failed; keeping the last good state")
            }
        }
    }
}

/// One look on a blocking thread (reading and parsing may take a while for big files).
async fn look(tracker: &Shared, view: View, at_once: bool, first: bool) -> Result<bool> {
    let tracker = tracker.clone();
    let joined = tokio::task::spawn_blocking(move || {
        tracker.lock().look(&Look {
            now: Instant::now(),
            at_once,
            first,
            activity: &view,
        })
    })
    .await;
    joined.unwrap_or_else(|join| {
        // Only a bug panics here; say so and keep the source alive on the state it has.
        tracing::error!(error = %join, "manifests look failed unexpectedly");
        Ok(false)
    })
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[test]
    fn builders_set_their_own_field() {
        let (status, reload) = (Status::new(), Reload::new());
        let options = Options::default()
            .interval(Duration::from_millis(7))
            .status(status.clone())
            .reload(reload.clone());
        assert_eq!(options.interval, Duration::from_millis(7));
        status.count_poll();
        assert_eq!(
            options.status.polls(),
            1,
            "the status given is the one reported to"
        );
        reload.trigger();
        assert!(
            options.reload.requested().now_or_never().is_some(),
            "the trigger given is the one listened to"
        );
    }
}
