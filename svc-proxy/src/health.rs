//! Health of the proxy's inputs (the manifests files, or the API watches): readiness checks in
//! the apiserver's `/readyz?verbose` format (`[+]name ok`, `[-]name failed: reason`) and the
//! metrics that report them.
//!
//! A manifests file whose current version is rejected fails its check (its last good version
//! is still served, but the edit did not take), and so does a watch that cannot reach the API
//! (the routing state is frozen on its last known version).

use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use svc_core::source::kube::{ApiHealth, Reachability};
use svc_core::source::manifests;
use svc_core::store::{Connection, ResourceKind};
use svc_core::Store;

/// Where the proxy's state comes from, and how that source is doing.
#[derive(Clone, Debug)]
pub enum SourceHealth {
    /// A manifests file or directory.
    Manifests(manifests::Status),
    /// The Kubernetes API.
    Kube(ApiHealth),
}

/// One named readiness check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// The check's name, e.g. `watch-services` or `manifests:/etc/svc/web.yaml`.
    pub name: String,
    /// Why it fails; `None` when it passes.
    pub failure: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            failure: None,
        }
    }

    fn failed(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            failure: Some(reason.into()),
        }
    }

    /// The `/readyz?verbose` line: `[+]name ok` or `[-]name failed: reason`.
    pub fn line(&self) -> String {
        match &self.failure {
            None => format!("[+]{} ok", self.name),
            Some(reason) => format!("[-]{} failed: {reason}", self.name),
        }
    }
}

fn watch_name(kind: ResourceKind) -> String {
    format!("watch-{}", kind.as_str())
}

/// The checks of the source: one for the manifests (or one per failing file), or one per
/// watch.
pub fn source_checks(source: &SourceHealth, store: &Store) -> Vec<Check> {
    match source {
        SourceHealth::Manifests(status) => {
            let failing = status.failing();
            if failing.is_empty() {
                return vec![Check::ok("manifests")];
            }
            failing
                .into_iter()
                .map(|(path, error)| {
                    // One line per check: a YAML error may span several.
                    let reason = error.split_whitespace().collect::<Vec<_>>().join(" ");
                    Check::failed(
                        format!("manifests:{}", path.display()),
                        format!("{reason} (serving its last good version)"),
                    )
                })
                .collect()
        }
        SourceHealth::Kube(_) => [ResourceKind::Service, ResourceKind::EndpointSlice]
            .into_iter()
            .map(|kind| {
                let name = watch_name(kind);
                match store.freshness().watch(kind).connection() {
                    Connection::Connected => Check::ok(name),
                    Connection::Starting => Check::failed(name, "not connected yet"),
                    Connection::Disconnected { since, error } => Check::failed(
                        name,
                        format!(
                            "cannot reach the API for {}s (serving the last known state): {}",
                            since.elapsed().as_secs(),
                            error.split_whitespace().collect::<Vec<_>>().join(" ")
                        ),
                    ),
                    // A state this version does not know is not a healthy one.
                    other => Check::failed(name, format!("{other:?}")),
                }
            })
            .collect(),
    }
}

/// Exports the source's health at scrape time.
#[derive(Debug)]
pub struct SourceCollector {
    source: SourceHealth,
    store: Store,
}

impl SourceCollector {
    /// A collector for `source`, whose watch states live in `store`'s freshness.
    pub fn new(source: SourceHealth, store: Store) -> Self {
        Self { source, store }
    }
}

/// Encodes one gauge family: `(label value, value)` per sample, under `label` (or no label).
fn gauge<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (&'a str, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value_of_label, value) in samples {
        ConstGauge::new(value).encode(e.encode_family(&[(label, value_of_label)])?)?;
    }
    Ok(())
}

/// Encodes one unlabelled gauge.
fn single_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(e)
}

fn flag(b: bool) -> f64 {
    f64::from(u8::from(b))
}

impl Collector for SourceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        match &self.source {
            SourceHealth::Manifests(status) => {
                let files: Vec<(String, manifests::FileStatus)> = status
                    .files()
                    .into_iter()
                    .map(|(p, s)| (p.display().to_string(), s))
                    .collect();
                gauge(
                    &mut encoder,
                    "manifest_file_failing",
                    "1 while a manifests file's current version is rejected (its last good version is served)",
                    "file",
                    files.iter().map(|(f, s)| (f.as_str(), flag(s.error.is_some()))),
                )?;
                gauge(
                    &mut encoder,
                    "manifest_invalid_objects",
                    "Objects of a manifests file skipped because they failed validation",
                    "file",
                    files
                        .iter()
                        .map(|(f, s)| (f.as_str(), s.invalid_objects as f64)),
                )?;
                let known = status.files();
                let path_failing = status.failing().iter().any(|(p, _)| !known.contains_key(p));
                single_gauge(
                    &mut encoder,
                    "manifest_path_failing",
                    "1 while the manifests path itself cannot be read",
                    flag(path_failing),
                )?;
                let counters: [(&str, &str, u64); 3] = [
                    (
                        "manifest_polls",
                        "Looks at the manifests for changes",
                        status.polls(),
                    ),
                    (
                        "manifest_reads",
                        "Manifests files read (only changed files are read)",
                        status.reads(),
                    ),
                    (
                        "manifest_read_bytes",
                        "Bytes read from manifests files",
                        status.bytes_read(),
                    ),
                ];
                for (name, help, value) in counters {
                    let e = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
                    ConstCounter::new(value).encode(e)?;
                }
            }
            SourceHealth::Kube(api) => {
                single_gauge(
                    &mut encoder,
                    "apiserver_up",
                    "1 while the apiserver answers; 0 while it is probed",
                    flag(api.reachability() == Reachability::Up),
                )?;
                let states: Vec<(&str, Connection)> =
                    [ResourceKind::Service, ResourceKind::EndpointSlice]
                        .iter()
                        .map(|k| (k.as_str(), self.store.freshness().watch(*k).connection()))
                        .collect();
                gauge(
                    &mut encoder,
                    "watch_connected",
                    "1 while the watch's last request succeeded",
                    "resource",
                    states
                        .iter()
                        .map(|(k, c)| (*k, flag(*c == Connection::Connected))),
                )?;
                gauge(
                    &mut encoder,
                    "watch_disconnected_seconds",
                    "Seconds since the watch's requests started failing (0 while connected)",
                    "resource",
                    states.iter().map(|(k, c)| {
                        let down = match c {
                            Connection::Disconnected { since, .. } => since.elapsed(),
                            _ => Duration::ZERO,
                        };
                        (*k, down.as_secs_f64())
                    }),
                )?;
            }
        }
        Ok(())
    }
}
