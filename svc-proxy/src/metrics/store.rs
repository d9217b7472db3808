//! The store's freshness and the dataplane's state, read at scrape time.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use svc_core::store::{ResourceKind, LAG_BUCKETS};
use svc_core::Store;

use crate::listeners::Status;

/// Reads the store's freshness and the dataplane's state at scrape time.
#[derive(Debug)]
pub(super) struct StoreCollector {
    pub(super) store: Store,
    pub(super) dataplane: Arc<Status>,
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let fresh = self.store.freshness();
        let kinds = [ResourceKind::Service, ResourceKind::EndpointSlice];
        let stats: Vec<_> = kinds
            .iter()
            .map(|k| (k.as_str(), fresh.watch(*k).stats()))
            .collect();

        let mut g = encoder.encode_descriptor(
            "watch_seconds_since_activity",
            "Seconds since the watch's last event or bookmark (NaN before the first)",
            None,
            MetricType::Gauge,
        )?;
        for (kind, s) in &stats {
            let v = s.since_last_activity.map_or(f64::NAN, |d| d.as_secs_f64());
            ConstGauge::new(v).encode(g.encode_family(&[("resource", *kind)])?)?;
        }
        type Field = fn(&svc_core::store::WatchStats) -> u64;
        let counters: [(&str, &str, Field); 5] = [
            ("watch_events", "Objects received by the watch", |s| {
                s.events
            }),
            ("watch_bookmarks", "Bookmarks received by the watch", |s| {
                s.bookmarks
            }),
            (
                "watch_relists",
                "Full lists (the first one included)",
                |s| s.relists,
            ),
            (
                "watch_stall_restarts",
                "Watches restarted after going silent",
                |s| s.stall_restarts,
            ),
            ("watch_errors", "Failed watch or list requests", |s| {
                s.errors
            }),
        ];
        for (name, help, field) in counters {
            let mut e = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (kind, s) in &stats {
                ConstCounter::new(field(s)).encode(e.encode_family(&[("resource", *kind)])?)?;
            }
        }

        let lag = fresh.lag.snapshot();
        let buckets: Vec<(f64, u64)> = LAG_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(lag.counts.iter().copied())
            .collect();
        let mut e = encoder.encode_descriptor(
            "propagation_lag_seconds",
            "Time from an endpoint change (last-change-trigger-time) to its arrival in the store",
            None,
            MetricType::Histogram,
        )?;
        e.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            lag.sum_seconds,
            lag.count(),
            &buckets,
            None,
        )?;

        let e = encoder.encode_descriptor(
            "services",
            "Services in the store",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.store.len() as i64).encode(e)?;
        let e = encoder.encode_descriptor(
            "synced",
            "1 once the initial lists are applied",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(self.store.is_synced())).encode(e)?;
        let mut e = encoder.encode_descriptor(
            "listeners",
            "Listening sockets, and listeners failing (retried with backoff; see /readyz?verbose)",
            None,
            MetricType::Gauge,
        )?;
        let failing = self.dataplane.failing().len();
        ConstGauge::new(self.dataplane.listening() as i64)
            .encode(e.encode_family(&[("state", "listening")])?)?;
        ConstGauge::new(failing as i64).encode(e.encode_family(&[("state", "failing")])?)?;
        let e = encoder.encode_descriptor(
            "dataplane_programmed",
            "1 once every Service of the initial lists has been through the listeners",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(self.dataplane.is_programmed())).encode(e)?;
        Ok(())
    }
}
