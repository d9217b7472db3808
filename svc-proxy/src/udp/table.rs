//! The flow table of one UDP listener: flows by client address, with eviction.
//!
//! When a ceiling is reached (too many flows from one client IP, or the proxy-wide budget is
//! spent), a new flow takes the place of an old one rather than being refused, as conntrack
//! does when its table is full: most UDP flows are one query and one answer (DNS), and the
//! client closed its socket long before the idle timeout would end the flow. The victim is
//! chosen with the *second chance* (CLOCK) rule: flows queue in creation order; the oldest is
//! evicted unless it was active since it was queued, in which case it goes to the back. That
//! costs O(1) amortized per eviction and keeps busy, long-lived flows (a QUIC connection, a
//! game session) over finished one-shot ones.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};

/// How a flow reports its last activity (any monotonic stamp; larger is more recent).
pub(crate) trait Activity {
    fn last_active(&self) -> u64;
}

struct Entry<F> {
    id: u64,
    flow: F,
    /// The activity stamp when the flow was last (re)queued, per queue: global and client.
    /// [`NEW`] until first examined: a flow just opened is waiting for its first answer and
    /// gets its second chance like a busy one (CLOCK's reference bit, set on entry).
    queued_at: [u64; 2],
}

const NEW: u64 = u64::MAX;

/// A queue of eviction candidates, oldest first; stale entries are skipped when met.
struct Queue<K> {
    items: VecDeque<(K, u64)>,
}

impl<K: Copy> Queue<K> {
    fn new() -> Self {
        Self {
            items: VecDeque::new(),
        }
    }
}

#[derive(Default)]
struct Client {
    flows: usize,
    queue: Option<Queue<u16>>,
}

/// The flows of one listener.
pub(crate) struct FlowTable<F> {
    flows: HashMap<SocketAddr, Entry<F>>,
    queue: Queue<SocketAddr>,
    clients: HashMap<IpAddr, Client>,
    per_client: usize,
    next_id: u64,
}

const GLOBAL: usize = 0;
const CLIENT: usize = 1;

impl<F: Activity> FlowTable<F> {
    /// A table allowing at most `per_client` flows from one client IP.
    pub(crate) fn new(per_client: usize) -> Self {
        Self {
            flows: HashMap::new(),
            queue: Queue::new(),
            clients: HashMap::new(),
            per_client: per_client.max(1),
            next_id: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.flows.len()
    }

    /// The id the next [`insert`](Self::insert) will return.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id
    }

    pub(crate) fn get(&self, client: &SocketAddr) -> Option<&F> {
        self.flows.get(client).map(|e| &e.flow)
    }

    /// Whether a new flow from `ip` needs one of its flows evicted first.
    pub(crate) fn client_full(&self, ip: IpAddr) -> bool {
        self.clients
            .get(&ip)
            .is_some_and(|c| c.flows >= self.per_client)
    }

    /// Adds a flow for `client` (which must have none); returns its id.
    pub(crate) fn insert(&mut self, client: SocketAddr, flow: F) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let old = self.flows.insert(
            client,
            Entry {
                id,
                flow,
                queued_at: [NEW; 2],
            },
        );
        debug_assert!(old.is_none(), "one flow per client address");
        self.queue.items.push_back((client, id));
        let c = self.clients.entry(client.ip()).or_default();
        c.flows += 1;
        let queue = c.queue.get_or_insert_with(Queue::new);
        queue.items.push_back((client.port(), id));
        if queue.items.len() > 2 * c.flows + 16 {
            let (ip, flows) = (client.ip(), &self.flows);
            queue
                .items
                .retain(|(port, id)| live(flows, &SocketAddr::new(ip, *port), *id));
        }
        if self.queue.items.len() > 2 * self.flows.len() + 64 {
            let flows = &self.flows;
            self.queue.items.retain(|(c, id)| live(flows, c, *id));
        }
        id
    }

    /// Removes `client`'s flow if it is still the one with `id` (it may have been replaced).
    pub(crate) fn remove(&mut self, client: SocketAddr, id: u64) -> Option<F> {
        if self.flows.get(&client)?.id != id {
            return None;
        }
        self.take(client)
    }

    /// Removes every flow for which `keep` is false; returns how many.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&SocketAddr, &F) -> bool) -> usize {
        let gone: Vec<SocketAddr> = self
            .flows
            .iter()
            .filter(|(c, e)| !keep(c, &e.flow))
            .map(|(c, _)| *c)
            .collect();
        for c in &gone {
            self.take(*c);
        }
        gone.len()
    }

    /// Evicts one of `ip`'s flows (second chance among them).
    pub(crate) fn evict_from_client(&mut self, ip: IpAddr) -> Option<(SocketAddr, F)> {
        let mut queue = self.clients.get_mut(&ip)?.queue.take()?;
        let victim = second_chance(&mut queue, &mut self.flows, CLIENT, |port| {
            SocketAddr::new(ip, *port)
        });
        if let Some(c) = self.clients.get_mut(&ip) {
            c.queue = Some(queue);
        }
        let client = victim?;
        self.take(client).map(|f| (client, f))
    }

    /// Evicts one flow of the listener (second chance over all of them).
    pub(crate) fn evict_oldest(&mut self) -> Option<(SocketAddr, F)> {
        let client = second_chance(&mut self.queue, &mut self.flows, GLOBAL, |c| *c)?;
        self.take(client).map(|f| (client, f))
    }

    fn take(&mut self, client: SocketAddr) -> Option<F> {
        let entry = self.flows.remove(&client)?;
        if let Some(c) = self.clients.get_mut(&client.ip()) {
            c.flows -= 1;
            if c.flows == 0 {
                self.clients.remove(&client.ip());
            }
        }
        Some(entry.flow)
    }
}

/// Whether a queue entry still names a live flow. Flows that end by idling out leave their
/// entries behind; they are dropped once they outnumber the live ones.
fn live<F>(flows: &HashMap<SocketAddr, Entry<F>>, client: &SocketAddr, id: u64) -> bool {
    flows.get(client).is_some_and(|e| e.id == id)
}

/// Pops queue entries until one names a flow idle since it was queued; busy ones are
/// requeued at the back with their new stamp. After a full round of busy flows, the oldest
/// is taken anyway.
fn second_chance<K: Copy + Eq + Hash, F: Activity>(
    queue: &mut Queue<K>,
    flows: &mut HashMap<SocketAddr, Entry<F>>,
    which: usize,
    addr: impl Fn(&K) -> SocketAddr,
) -> Option<SocketAddr> {
    let mut budget = queue.items.len();
    while let Some((key, id)) = queue.items.pop_front() {
        let client = addr(&key);
        let Some(entry) = flows.get_mut(&client).filter(|e| e.id == id) else {
            continue; // ended or replaced
        };
        let now = entry.flow.last_active();
        let seen = entry.queued_at[which];
        if budget > 0 && (seen == NEW || now > seen) {
            budget -= 1;
            entry.queued_at[which] = now;
            queue.items.push_back((key, id));
            continue;
        }
        return Some(client);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[derive(Clone)]
    struct Fake(Rc<Cell<u64>>);

    impl Activity for Fake {
        fn last_active(&self) -> u64 {
            self.0.get()
        }
    }

    fn fake(t: u64) -> Fake {
        Fake(Rc::new(Cell::new(t)))
    }

    fn addr(ip: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, ip], port))
    }

    #[test]
    fn the_oldest_idle_flow_is_evicted_and_busy_ones_get_a_second_chance() {
        let mut t = FlowTable::new(100);
        let flows: Vec<Fake> = (0..4).map(|_| fake(1)).collect();
        for (i, f) in flows.iter().enumerate() {
            t.insert(addr(1, 1000 + i as u16), f.clone());
        }
        // New flows (waiting for their first answer) all get a second chance: after one
        // round, the oldest goes.
        assert_eq!(t.evict_oldest().unwrap().0, addr(1, 1000));
        // 1001 was active since; 1002 was not.
        flows[1].0.set(5);
        assert_eq!(t.evict_oldest().unwrap().0, addr(1, 1002));
        assert_eq!(t.len(), 2);
        assert_eq!(t.evict_oldest().unwrap().0, addr(1, 1003));
        assert_eq!(t.evict_oldest().unwrap().0, addr(1, 1001));
        assert!(t.evict_oldest().is_none());
    }

    #[test]
    fn a_new_flow_outlives_older_answered_ones() {
        let mut t = FlowTable::new(100);
        let old = fake(1);
        t.insert(addr(1, 1), old.clone());
        t.evict_oldest(); // examined once: no longer new
        t.insert(addr(1, 2), old.clone());
        t.evict_oldest();
        t.insert(addr(1, 3), fake(1));
        t.insert(addr(1, 4), fake(1));
        // Only the two new flows are left; a third new one pushes out the oldest of them,
        // never the newest.
        t.insert(addr(1, 5), fake(1));
        assert_eq!(t.evict_oldest().unwrap().0, addr(1, 3));
        assert!(t.get(&addr(1, 5)).is_some());
    }

    #[test]
    fn when_every_flow_is_busy_the_oldest_goes_anyway() {
        let mut t = FlowTable::new(100);
        let flows: Vec<Fake> = (0..3).map(|_| fake(1)).collect();
        for (i, f) in flows.iter().enumerate() {
            t.insert(addr(1, 1000 + i as u16), f.clone());
        }
        for f in &flows {
            f.0.set(9);
        }
        assert_eq!(t.evict_oldest().unwrap().0, addr(1, 1000));
    }

    #[test]
    fn a_client_at_its_limit_evicts_only_its_own_flows() {
        let mut t = FlowTable::new(2);
        t.insert(addr(9, 1), fake(1)); // another client, oldest of all
        t.insert(addr(1, 1), fake(1));
        assert!(!t.client_full(addr(1, 0).ip()));
        t.insert(addr(1, 2), fake(1));
        assert!(t.client_full(addr(1, 0).ip()));
        assert!(!t.client_full(addr(9, 0).ip()));
        let (victim, _) = t.evict_from_client(addr(1, 0).ip()).unwrap();
        assert_eq!(victim, addr(1, 1));
        assert!(!t.client_full(addr(1, 0).ip()));
        assert!(t.get(&addr(9, 1)).is_some());
    }

    #[test]
    fn removing_by_id_ignores_a_replaced_flow() {
        let mut t = FlowTable::new(10);
        let first = t.insert(addr(1, 1), fake(1));
        t.remove(addr(1, 1), first).unwrap();
        let second = t.insert(addr(1, 1), fake(2));
        assert!(t.remove(addr(1, 1), first).is_none(), "stale id");
        assert_eq!(t.len(), 1);
        // The stale queue entry of the first flow is skipped.
        assert_eq!(t.evict_oldest().unwrap().0, addr(1, 1));
        assert!(t.remove(addr(1, 1), second).is_none());
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn queues_stay_bounded_when_flows_idle_out() {
        let mut t = FlowTable::new(10);
        for i in 0..10_000u16 {
            let id = t.insert(addr((i % 200) as u8, i), fake(1));
            t.remove(addr((i % 200) as u8, i), id);
        }
        assert_eq!(t.len(), 0);
        assert!(t.queue.items.len() <= 64 + 1, "{}", t.queue.items.len());
        assert!(t.clients.len() <= 64 + 1);
    }
}
