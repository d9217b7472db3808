//! Resource ceilings shared by every listener: the open-file limit (`fds`), the UDP flow
//! budget and the memory ceiling.
//!
//! A proxy on a node serves clients it does not trust. Without ceilings, any client can make it
//! hold a socket and some memory per UDP flow (one datagram from a fresh source port is
//! enough) or per idle TCP connection until the process is OOM-killed, taking every Service on
//! the node down with it. Envoy's answer is the overload manager; ours is smaller:
//!
//! - [`FlowBudget`]: at most `--udp-max-flows` UDP flows in the whole proxy. A listener that
//!   needs a slot when the budget is spent evicts one of its own least recently active flows
//!   (see `udp::table`), so new flows are served and old, finished ones make room, as the
//!   kernel's conntrack does when its table is full.
//! - [`MemoryCeiling`]: with `--memory-ceiling`, the resident set size is sampled every
//!   250 ms; while it is above the ceiling, new TCP connections and new UDP flows are refused
//!   (and counted), and flows already running carry on.

mod fds;

pub use fds::{open_fds, raise_fd_limit, FdLimit};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the memory ceiling samples the resident set size.
const MEMORY_SAMPLE: Duration = Duration::from_millis(250);

/// The proxy-wide ceilings.
#[derive(Debug)]
pub struct Limits {
    /// UDP flows, across every UDP listener.
    pub udp_flows: Arc<FlowBudget>,
    /// The resident-set ceiling.
    pub memory: Arc<MemoryCeiling>,
}

impl Limits {
    /// Ceilings from the flags; starts the memory sampler when a ceiling is set.
    pub fn new(udp_max_flows: usize, memory_ceiling: Option<u64>) -> Self {
        let memory = Arc::new(MemoryCeiling::new(memory_ceiling));
        if memory.limit.is_some() {
            tokio::spawn(MemoryCeiling::sample(Arc::downgrade(&memory)));
        }
        Self {
            udp_flows: Arc::new(FlowBudget::new(udp_max_flows)),
            memory,
        }
    }
}

/// A counted number of slots; a [`FlowSlot`] gives its slot back when dropped.
#[derive(Debug)]
pub struct FlowBudget {
    max: usize,
    used: AtomicUsize,
}

impl FlowBudget {
    /// A budget of `max` slots.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            used: AtomicUsize::new(0),
        }
    }

    /// Takes a slot, or `None` when all are in use.
    pub fn try_acquire(self: &Arc<Self>) -> Option<FlowSlot> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| FlowSlot {
                budget: self.clone(),
            })
    }

    /// Slots in use.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// One slot of a [`FlowBudget`], returned on drop.
#[derive(Debug)]
pub struct FlowSlot {
    budget: Arc<FlowBudget>,
}

impl Drop for FlowSlot {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether the process is above its memory ceiling (always `false` without one).
#[derive(Debug)]
pub struct MemoryCeiling {
    limit: Option<u64>,
    over: AtomicBool,
}

impl MemoryCeiling {
    /// A ceiling of `limit` bytes of resident memory, or none.
    pub fn new(limit: Option<u64>) -> Self {
        Self {
            limit,
            over: AtomicBool::new(false),
        }
    }

    /// Whether new flows must be refused now.
    #[inline]
    pub fn exceeded(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    /// The ceiling in bytes, if any.
    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    async fn sample(this: std::sync::Weak<Self>) {
        let mut tick = tokio::time::interval(MEMORY_SAMPLE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(this) = this.upgrade() else { return };
            let (Some(limit), Some(rss)) = (this.limit, resident_bytes()) else {
                continue;
            };
            let over = rss > limit;
            if this.over.swap(over, Ordering::Relaxed) != over {
                if over {
                    tracing::warn!(
                        rss,
                        ceiling = limit,
                        "above the memory ceiling: refusing new connections and UDP flows"
                    );
                } else {
                    tracing::info!(
                        rss,
                        ceiling = limit,
                        "back under the memory ceiling: accepting again"
                    );
                }
            }
        }
    }
}

/// The resident set size of this process, from `/proc/self/status` (`VmRSS`, in kB).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Parses a byte size: `512`, `64KiB`, `100MiB`, `2GiB` (also `K`/`M`/`G`, `KB`/`MB`/`GB`,
/// all binary multiples, as Kubernetes' `Mi`/`Gi`).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "ki" | "kib" => 10,
        "m" | "mb" | "mi" | "mib" => 20,
        "g" | "gb" | "gi" | "gib" => 30,
        _ => return Err(format!("invalid size unit in {s:?} (use KiB, MiB or GiB)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_slots_come_back_on_drop() {
        let budget = Arc::new(FlowBudget::new(2));
        let a = budget.try_acquire().unwrap();
        let _b = budget.try_acquire().unwrap();
        assert!(budget.try_acquire().is_none());
        assert_eq!(budget.used(), 2);
        drop(a);
        assert_eq!(budget.used(), 1);
        assert!(budget.try_acquire().is_some());
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tsvc-proxy\nVmPeak:\t  20000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(12345 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert!(resident_bytes().is_some_and(|b| b > 0));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("100Mi"), Ok(100 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert!(parse_bytes("2T").is_err());
        assert!(parse_bytes("MiB").is_err());
    }
}
