//! Who is writing which manifests file, from inotify: a writer that still has a file open has
//! not finished it, and a file renamed into place (or closed after writing) is complete.
//!
//! This only sharpens the polling in [`super::tracker`]; polling stays the source of truth. If
//! inotify cannot be set up (no inotify, watch limit reached) the source polls alone, and it
//! also does for changes inotify cannot see, like a file behind a symlink into another
//! directory.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::path::Path;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::sync::mpsc;

/// One inotify event: what happened, and to which name in the watched directory.
type Raw = (AddWatchFlags, Option<OsString>);

/// What inotify said since the last [`Activity::take`].
#[derive(Clone, Debug, Default)]
pub(super) struct View {
    /// Files modified and not yet closed by their writer.
    pub(super) writing: HashSet<OsString>,
    /// Files closed after writing, or renamed into place.
    pub(super) completed: HashSet<OsString>,
    /// A hidden entry was renamed into place: the atomic symlink swap of a mounted ConfigMap
    /// (`..data`), which completes every file at once.
    pub(super) swapped: bool,
}

impl View {
    /// Whether a writer still has `name` open.
    pub(super) fn writing(&self, name: &OsStr) -> bool {
        self.writing.contains(name)
    }

    /// Whether `name` was completed by a close or a rename since the last look.
    pub(super) fn completed(&self, name: &OsStr) -> bool {
        self.swapped || self.completed.contains(name)
    }
}

/// Tracks writers in the manifests directory (or a single file's directory).
///
/// Tokio registers raw file descriptors only through `unsafe` code, so a small thread reads
/// inotify (polling its descriptor, so that it notices the source is gone within
/// [`THREAD_CHECK_MS`]) and hands events over a bounded channel. When the channel is full the
/// thread waits; the kernel queue then overflows and the source falls back to stability.
pub(super) struct Activity {
    events: Option<mpsc::Receiver<Vec<Raw>>>,
    /// For a single-file path, its name: events for other files are ignored.
    only: Option<OsString>,
    view: View,
}

/// How often (milliseconds) the reading thread checks that the source still exists.
const THREAD_CHECK_MS: u16 = 500;

impl Activity {
    /// Starts watching `path` (a directory, or a file whose directory is watched). Never
    /// fails: without inotify the source polls alone.
    pub(super) fn new(path: &Path) -> Self {
        let (dir, only) = if path.is_dir() {
            (path.to_path_buf(), None)
        } else {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            (dir.to_path_buf(), path.file_name().map(OsStr::to_os_string))
        };
        let flags = AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE;
        let (tx, rx) = mpsc::channel(64);
        let started = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .and_then(|i| i.add_watch(&dir, flags).map(|_| i))
            .map_err(std::io::Error::from)
            .and_then(|inotify| {
                std::thread::Builder::new()
                    .name("svc-manifests-inotify".into())
                    .spawn(move || read_loop(inotify, tx))
            });
        let events = match started {
            Ok(_) => Some(rx),
            Err(error) => {
                tracing::info!(dir = %dir.display(), %error,
                    "no inotify for the manifests; polling only (a half-written file is then applied once stable for one poll)");
                None
            }
        };
        Self {
            events,
            only,
            view: View::default(),
        }
    }

    /// Resolves when a file was completed, removed or created (not on every write, so that a
    /// busy writer does not make the source spin). Never resolves without inotify.
    pub(super) async fn changed(&mut self) {
        loop {
            let Some(events) = &mut self.events else {
                return std::future::pending().await;
            };
            match events.recv().await {
                Some(batch) => {
                    if self.absorb(batch) {
                        return;
                    }
                }
                None => {
                    tracing::warn!("inotify stopped; polling only");
                    self.stop();
                }
            }
        }
    }

    /// Takes whatever events have arrived, without waiting, and returns what is known now,
    /// clearing the completions (they are acted on by the look that takes them).
    pub(super) fn take(&mut self) -> View {
        while let Some(Ok(batch)) = self.events.as_mut().map(|e| e.try_recv()) {
            self.absorb(batch);
        }
        let view = self.view.clone();
        self.view.completed.clear();
        self.view.swapped = false;
        view
    }

    fn stop(&mut self) {
        self.events = None;
        self.view = View::default();
    }

    /// Folds events into the view; returns whether any should wake the source.
    fn absorb(&mut self, events: Vec<Raw>) -> bool {
        let mut wake = false;
        for (m, name) in events {
            if m.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                // Events were lost: forget who is writing and let stability decide.
                self.view.writing.clear();
                wake = true;
                continue;
            }
            let Some(name) = name else { continue };
            let hidden = name.as_encoded_bytes().first() == Some(&b'.');
            if hidden && m.contains(AddWatchFlags::IN_MOVED_TO) && self.only.is_none() {
                self.view.swapped = true;
                wake = true;
                continue;
            }
            if self.only.as_ref().is_some_and(|only| *only != name) {
                continue;
            }
            if m.contains(AddWatchFlags::IN_MODIFY) {
                self.view.writing.insert(name.clone());
            }
            if m.intersects(AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MOVED_TO) {
                self.view.writing.remove(&name);
                self.view.completed.insert(name.clone());
                wake = true;
            }
            if m.intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM) {
                self.view.writing.remove(&name);
                wake = true;
            }
            if m.contains(AddWatchFlags::IN_CREATE) {
                wake = true;
            }
        }
        wake
    }
}

/// The reading thread: waits for events, forwards them, and ends when the source is gone or
/// inotify fails.
fn read_loop(inotify: Inotify, tx: mpsc::Sender<Vec<Raw>>) {
    loop {
        if tx.is_closed() {
            return;
        }
        let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(THREAD_CHECK_MS)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "polling inotify failed");
                return;
            }
        }
        match inotify.read_events() {
            Ok(events) => {
                let batch = events.into_iter().map(|e| (e.mask, e.name)).collect();
                if tx.blocking_send(batch).is_err() {
                    return;
                }
            }
            Err(nix::errno::Errno::EAGAIN) => {}
            Err(error) => {
                tracing::warn!(%error, "reading inotify failed");
                return;
            }
        }
    }
}
