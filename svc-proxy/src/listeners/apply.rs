//! The end of a reconcile round: close what was removed, make addresses local, bind what was
//! added, and publish the outcome.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use tokio::time::Instant;

use super::failure::{backoff, Cause, Failed};
use super::{FailingListener, ListenKey, Reconciler, State};
use crate::target::Mode;
use crate::{http, tcp, udp};

impl Reconciler {
    /// Ends a round: waits for the stopped listeners to close their sockets (so that an
    /// address that moved can be bound again at once), releases and adds interface addresses in
    /// one batch each, binds the pending listeners, then publishes the status and logs.
    pub(super) async fn apply(&mut self) {
        // Every task was cancelled when it was stopped; they end together.
        for task in std::mem::take(&mut self.stopping) {
            let _ = task.await;
        }
        let unheld = std::mem::take(&mut self.unheld);
        if let (Some(iface), false) = (self.addresses.interface.as_mut(), unheld.is_empty()) {
            for (ip, error) in iface.release(&unheld).await {
                tracing::warn!(%ip, %error, interface = iface.name(), "cannot remove an address");
            }
        }
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_unstable();
        pending.dedup();
        pending.retain(|lk| {
            matches!(
                self.listeners.get(lk).map(|a| &a.state),
                Some(State::Pending)
            )
        });
        let unavailable = self.acquire_addresses(&pending).await;
        for lk in pending {
            self.start(lk, &unavailable);
        }
        self.publish();
    }

    /// Adds the interface addresses the pending listeners need; returns those that failed.
    async fn acquire_addresses(&mut self, pending: &[ListenKey]) -> HashMap<IpAddr, String> {
        let needed: Vec<(ListenKey, IpAddr)> = pending
            .iter()
            .filter_map(|lk| {
                let active = self.listeners.get(lk)?;
                let ip = lk.addr.ip();
                (active.iface_ip.is_none() && self.addresses.needs_address(ip, active.route.kind))
                    .then_some((*lk, ip))
            })
            .collect();
        let Some(iface) = self.addresses.interface.as_mut() else {
            return HashMap::new();
        };
        if needed.is_empty() {
            return HashMap::new();
        }
        let ips: Vec<IpAddr> = needed.iter().map(|(_, ip)| *ip).collect();
        let failed: HashMap<IpAddr, String> = iface
            .acquire(&ips)
            .await
            .into_iter()
            .map(|(ip, e)| (ip, e.to_string()))
            .collect();
        for (lk, ip) in needed {
            if !failed.contains_key(&ip) {
                if let Some(active) = self.listeners.get_mut(&lk) {
                    active.iface_ip = Some(ip);
                }
            }
        }
        failed
    }

    /// Binds one pending listener and starts serving it, or records why it failed.
    fn start(&mut self, lk: ListenKey, unavailable: &HashMap<IpAddr, String>) {
        let Some(active) = self.listeners.get(&lk) else {
            return;
        };
        let route = active.route.clone();
        let needs_address = self.addresses.needs_address(lk.addr.ip(), route.kind);
        if needs_address && active.iface_ip.is_none() {
            let error = unavailable
                .get(&lk.addr.ip())
                .cloned()
                .unwrap_or_else(|| "no interface address".into());
            return self.fail(lk, Cause::InterfaceAddress, error);
        }
        if self.sockets >= self.budget {
            let error = format!(
                "the open-file limit leaves room for {} listening sockets, all in use",
                self.budget
            );
            return self.fail(lk, Cause::FdLimit, error);
        }
        // An address just added to the interface may not be usable yet (IPv6 duplicate
        // address detection): bind it all the same.
        let freebind = needs_address;
        let target = self.target(&route);
        let cancel = self.ctx.drain.child_token();
        let (workers, drain) = (&self.ctx.workers, self.ctx.drain.clone());
        let started = match route.mode {
            Mode::Tcp => tcp::listen(lk.addr, freebind).map(|socket| {
                let target = target.clone();
                workers.serve(socket, cancel.clone(), drain, move || {
                    let target = target.clone();
                    move |stream, peer| tcp::forward::forward(target.clone(), stream, peer)
                })
            }),
            Mode::Http | Mode::H2c => tcp::listen(lk.addr, freebind).map(|socket| {
                let (target, mode) = (target.clone(), route.mode);
                workers.serve(socket, cancel.clone(), drain, move || {
                    let handler = http::Handler::new(target.clone(), mode);
                    move |stream, peer| handler.connection(stream, peer)
                })
            }),
            // One socket, one flow table: UDP stays on the control-plane runtime.
            Mode::Udp => udp::bind(lk.addr, freebind)
                .map(|socket| tokio::spawn(udp::serve(socket, target.clone(), cancel.clone()))),
        };
        match started {
            Ok(task) => {
                if let Some(active) = self.listeners.get_mut(&lk) {
                    active.state = State::Listening { cancel, task };
                    active.attempts = 0;
                }
                self.sockets += 1;
                self.started += 1;
                tracing::debug!(addr = %lk.addr, protocol = lk.protocol.as_str(), service = %route.service,
                    mode = ?route.mode, "listening");
            }
            Err(error) => {
                self.release_target(&route);
                self.fail(lk, Cause::of(&error), error.to_string());
            }
        }
    }

    fn fail(&mut self, lk: ListenKey, cause: Cause, error: String) {
        let Some(active) = self.listeners.get_mut(&lk) else {
            return;
        };
        active.attempts += 1;
        let retry_at = Instant::now() + backoff(active.attempts);
        self.ctx.metrics.listener_error(cause);
        self.log.failed(cause, || Failed {
            what: format!(
                "{}/{} ({})",
                lk.addr,
                lk.protocol.as_str(),
                active.route.service
            ),
            error: error.clone(),
        });
        active.state = State::Failing {
            cause,
            error,
            retry_at,
        };
        self.failing.insert(lk);
    }

    /// Publishes the listeners' state for `/readyz` and `/metrics`, and logs the round.
    fn publish(&mut self) {
        let failing: Vec<FailingListener> = self
            .failing
            .iter()
            .filter_map(|lk| {
                let active = self.listeners.get(lk)?;
                match &active.state {
                    State::Failing {
                        cause,
                        error,
                        retry_at,
                    } => Some(FailingListener {
                        service: active.route.service.clone(),
                        addr: lk.addr,
                        protocol: lk.protocol,
                        cause: *cause,
                        error: error.clone(),
                        attempts: active.attempts,
                        retry_at: *retry_at,
                    }),
                    _ => None,
                }
            })
            .collect();
        let mut by_cause = BTreeMap::new();
        for f in &failing {
            *by_cause.entry(f.cause).or_insert(0usize) += 1;
        }
        self.log.flush(&by_cause, self.next_retry());
        if self.started + self.stopped > 0 {
            tracing::info!(
                started = self.started,
                stopped = self.stopped,
                listening = self.sockets,
                failing = failing.len(),
                "listeners updated"
            );
            (self.started, self.stopped) = (0, 0);
        }
        self.ctx.dataplane.publish(self.sockets, failing);
    }
}
