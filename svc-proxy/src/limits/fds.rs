//! The open-file limit, and what it leaves for listeners.
//!
//! Every listening socket is one descriptor (see [`crate::workers`]), every proxied TCP flow
//! two, and the proxy needs a few more of its own (watches, admin and DNS connections, the
//! manifests it reads). At start the soft `RLIMIT_NOFILE` is raised to the hard limit, as
//! Envoy and haproxy do, and a reserve is kept out of the listeners' reach: when the budget is
//! spent, a new listener fails at once with a clear reason instead of taking the last
//! descriptors, so that `/readyz` and `/metrics` can still be reached to say so.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// The open-file limit at start, after raising it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit in force.
    pub soft: u64,
    /// The soft limit before it was raised.
    pub was: u64,
    /// The hard limit.
    pub hard: u64,
}

impl FdLimit {
    /// Descriptors kept for everything but listeners: a sixteenth of the limit, between 32
    /// and 1024.
    pub fn reserve(&self) -> usize {
        usize::try_from(self.soft / 16)
            .unwrap_or(usize::MAX)
            .clamp(32, 1024)
    }

    /// How many listening sockets fit, given `open` descriptors already in use (by anything
    /// but listeners).
    pub fn listener_budget(&self, open: usize) -> usize {
        usize::try_from(self.soft)
            .unwrap_or(usize::MAX)
            .saturating_sub(self.reserve())
            .saturating_sub(open)
    }
}

/// Raises the soft open-file limit to the hard limit and returns both; when the limit cannot
/// be read, `None` (the budget is then unbounded and the kernel's `EMFILE` is the only check).
pub fn raise_fd_limit() -> Option<FdLimit> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let mut limit = FdLimit {
        soft,
        was: soft,
        hard,
    };
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => limit.soft = hard,
            Err(error) => tracing::warn!(%error, soft, hard, "cannot raise the open-file limit"),
        }
    }
    Some(limit)
}

/// Descriptors this process has open now (`/proc/self/fd`), if readable.
pub fn open_fds() -> Option<usize> {
    // The directory handle being read is itself one entry.
    Some(
        std::fs::read_dir("/proc/self/fd")
            .ok()?
            .count()
            .saturating_sub(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_and_budget_scale_with_the_limit() {
        let limit = |soft| FdLimit {
            soft,
            was: soft,
            hard: soft,
        };
        assert_eq!(limit(64).reserve(), 32);
        assert_eq!(limit(20_000).reserve(), 1024);
        assert_eq!(limit(8_192).reserve(), 512);
        assert_eq!(limit(20_000).listener_budget(40), 20_000 - 1024 - 40);
        assert_eq!(limit(64).listener_budget(40), 0);
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        let limit = raise_fd_limit().expect("readable on Linux");
        assert_eq!(limit.soft, limit.hard);
        assert!(open_fds().is_some_and(|n| n >= 3));
    }
}
