//! Why a listener could not be created, when to try again, and how that is logged.

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use tokio::time::Instant;

/// Why a listener could not be created (the `cause` label of
/// `svc_proxy_listener_errors_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// Out of file descriptors: the open-file limit (or the listeners' share of it) is spent.
    FdLimit,
    /// Another socket holds the address (another proxy, or any other process).
    AddressInUse,
    /// The address is not local (no `--service-cidr` route or interface address covers it).
    AddressNotAvailable,
    /// Adding the address to the managed interface failed.
    InterfaceAddress,
    /// Not allowed (ports below 1024 without `CAP_NET_BIND_SERVICE`).
    PermissionDenied,
    /// Anything else.
    Other,
}

impl Cause {
    /// The cause of a socket error.
    pub fn of(error: &io::Error) -> Self {
        match error.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE) => Self::FdLimit,
            Some(libc::EADDRINUSE) => Self::AddressInUse,
            Some(libc::EADDRNOTAVAIL) => Self::AddressNotAvailable,
            Some(libc::EACCES | libc::EPERM) => Self::PermissionDenied,
            _ => Self::Other,
        }
    }

    /// The metric label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FdLimit => "fd_limit",
            Self::AddressInUse => "address_in_use",
            Self::AddressNotAvailable => "address_not_available",
            Self::InterfaceAddress => "interface_address",
            Self::PermissionDenied => "permission_denied",
            Self::Other => "other",
        }
    }

    /// What to do about it.
    pub fn hint(self) -> &'static str {
        match self {
            Self::FdLimit => "raise the open-file limit (RLIMIT_NOFILE, e.g. LimitNOFILE or the container runtime's ulimit)",
            Self::AddressInUse => "another process listens on the address (another proxy still running?)",
            Self::AddressNotAvailable => "the address is not local: route the Service CIDR with --service-cidr, or add the addresses with --manage-interface",
            Self::InterfaceAddress => "check NET_ADMIN and the interface given to --manage-interface",
            Self::PermissionDenied => "ports below 1024 need CAP_NET_BIND_SERVICE",
            Self::Other => "see the error",
        }
    }
}

/// The delay before attempt `attempts + 1`: 200 ms, doubling, at most 5 s. Short enough that a
/// proxy replacing another binds within seconds of the old one exiting; each retry is only a
/// failed `bind` per listener.
pub fn backoff(attempts: u32) -> Duration {
    let base = Duration::from_millis(200);
    base.saturating_mul(1 << attempts.saturating_sub(1).min(5))
        .min(Duration::from_secs(5))
}

/// One failing listener, as shown in logs.
pub struct Failed {
    /// `addr/PROTOCOL (namespace/name)`.
    pub what: String,
    /// The error.
    pub error: String,
}

/// Logs listener failures one line per cause per reconcile round, not one per listener: at
/// 10,000 Services one cause (the fd limit) can fail thousands of them at once. A cause is
/// logged again only when its count changes, or every minute while it lasts.
#[derive(Default)]
pub struct FailureLog {
    round: BTreeMap<Cause, (usize, Vec<Failed>)>,
    last: BTreeMap<Cause, (usize, Instant)>,
}

/// Examples named per cause in a log line.
const EXAMPLES: usize = 3;
/// How often a lasting failure is logged again.
const REPEAT: Duration = Duration::from_secs(60);

impl FailureLog {
    /// Notes one failure in this round.
    pub fn failed(&mut self, cause: Cause, failed: impl FnOnce() -> Failed) {
        let (n, examples) = self.round.entry(cause).or_default();
        *n += 1;
        if examples.len() < EXAMPLES {
            examples.push(failed());
        }
    }

    /// Ends a round: `failing` is how many listeners fail now per cause (all rounds), and
    /// `retry` when the next attempt is due.
    pub fn flush(&mut self, failing: &BTreeMap<Cause, usize>, retry: Option<Instant>) {
        let now = Instant::now();
        let round = std::mem::take(&mut self.round);
        for (cause, (tried, examples)) in round {
            let total = failing.get(&cause).copied().unwrap_or(0);
            let quiet = self
                .last
                .get(&cause)
                .is_some_and(|(n, at)| *n == total && now.duration_since(*at) < REPEAT);
            if quiet || total == 0 {
                continue;
            }
            self.last.insert(cause, (total, now));
            let names: Vec<&str> = examples.iter().map(|f| f.what.as_str()).collect();
            let error = examples.first().map_or("", |f| f.error.as_str());
            tracing::warn!(
                cause = cause.as_str(),
                failing = total,
                failed_this_round = tried,
                %error,
                examples = %names.join(", "),
                retry_in_ms = retry.map(|r| r.saturating_duration_since(now).as_millis() as u64),
                hint = cause.hint(),
                "cannot listen; retrying with backoff",
            );
        }
        let recovered: Vec<Cause> = self
            .last
            .keys()
            .filter(|c| !failing.contains_key(c))
            .copied()
            .collect();
        for cause in recovered {
            self.last.remove(&cause);
            tracing::info!(
                cause = cause.as_str(),
                "listeners that failed with this cause are all up now"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_of_socket_errors() {
        let e = |code| io::Error::from_raw_os_error(code);
        assert_eq!(Cause::of(&e(libc::EMFILE)), Cause::FdLimit);
        assert_eq!(Cause::of(&e(libc::ENFILE)), Cause::FdLimit);
        assert_eq!(Cause::of(&e(libc::EADDRINUSE)), Cause::AddressInUse);
        assert_eq!(
            Cause::of(&e(libc::EADDRNOTAVAIL)),
            Cause::AddressNotAvailable
        );
        assert_eq!(Cause::of(&e(libc::EACCES)), Cause::PermissionDenied);
        assert_eq!(Cause::of(&e(libc::EINVAL)), Cause::Other);
    }

    #[test]
    fn backoff_doubles_up_to_five_seconds() {
        let ms = |n| backoff(n).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(4), ms(5)],
            [200, 400, 800, 1600, 3200]
        );
        assert_eq!(ms(6), 5000);
        assert_eq!(ms(60), 5000);
    }
}
