//! The manifests source: v1 Services and discovery.k8s.io/v1 EndpointSlices from a YAML file
//! or a directory of them, reloaded when they change.
//!
//! A file that does not parse is rejected whole and the last good state stays. An object that
//! parses but is invalid is skipped and its last good version (if any) stays, as with the API.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::discovery::v1 as discoveryv1;
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::model::{EndpointSlice, Service, ServiceKey, SliceKey};
use crate::store::Event;

/// Why a manifests file or directory could not be loaded.
#[derive(Debug, Error)]
pub enum Error {
    /// Reading a file or listing the directory failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A document is not valid YAML, or not a valid object of its kind.
    #[error("{origin}: document {document}: {message}")]
    Parse {
        /// The file (or `<string>`).
        origin: String,
        /// The 1-based document number in the file.
        document: usize,
        /// What the parser said.
        message: String,
    },
}

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The objects in a set of manifests, converted; invalid objects are listed by key so that
/// their last good version can be kept.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Valid Services.
    pub services: Vec<Service>,
    /// Valid EndpointSlices.
    pub slices: Vec<EndpointSlice>,
    /// Services that failed conversion.
    pub bad_services: Vec<ServiceKey>,
    /// Slices that failed conversion.
    pub bad_slices: Vec<SliceKey>,
}

impl Parsed {
    /// The two events that replace the store's state with these manifests.
    pub fn into_events(self) -> [Event; 2] {
        [
            Event::ReplaceServices {
                services: self.services,
                retain: self.bad_services,
            },
            Event::ReplaceSlices {
                slices: self.slices,
                retain: self.bad_slices,
            },
        ]
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ServiceKey {
    ServiceKey::new(
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or(""),
    )
}

fn parse_into(text: &str, origin: &str, out: &mut Parsed) -> Result<()> {
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let err = |message: String| Error::Parse {
            origin: origin.to_string(),
            document: i + 1,
            message,
        };
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| err(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let items = match serde_yaml::from_value::<TypeMeta>(value.clone()) {
            Ok(tm) if tm.kind == "List" || tm.kind.ends_with("List") => value
                .get("items")
                .and_then(|v| v.as_sequence())
                .cloned()
                .unwrap_or_default(),
            Ok(_) => vec![value],
            Err(e) => return Err(err(e.to_string())),
        };
        for item in items {
            let tm: TypeMeta =
                serde_yaml::from_value(item.clone()).map_err(|e| err(e.to_string()))?;
            match (tm.api_version.as_str(), tm.kind.as_str()) {
                ("v1", "Service") => {
                    let mut svc: corev1::Service =
                        serde_yaml::from_value(item).map_err(|e| err(e.to_string()))?;
                    svc.metadata
                        .namespace
                        .get_or_insert_with(|| "default".into());
                    match super::convert(&svc, "Service") {
                        Ok(s) => out.services.push(s),
                        Err(_) => out.bad_services.push(key_of(&svc.metadata)),
                    }
                }
                ("discovery.k8s.io/v1", "EndpointSlice") => {
                    let mut es: discoveryv1::EndpointSlice =
                        serde_yaml::from_value(item).map_err(|e| err(e.to_string()))?;
                    es.metadata
                        .namespace
                        .get_or_insert_with(|| "default".into());
                    match super::convert(&es, "EndpointSlice") {
                        Ok(s) => out.slices.push(s),
                        Err(_) => out.bad_slices.push(key_of(&es.metadata)),
                    }
                }
                (api_version, kind) => {
                    tracing::debug!(origin, api_version, kind, "ignoring object of another kind");
                }
            }
        }
    }
    Ok(())
}

/// Parses multi-document YAML text.
///
/// # Errors
/// [`Error::Parse`] when a document is not valid YAML or not a valid Service/EndpointSlice.
pub fn parse_str(text: &str) -> Result<Parsed> {
    let mut out = Parsed::default();
    parse_into(text, "<string>", &mut out)?;
    Ok(out)
}

/// The files a path stands for: itself, or the `.yaml`/`.yml`/`.json` files of a directory
/// (not recursive), sorted by name.
fn files(path: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        let p = entry.map_err(io)?.path();
        let is_manifest = matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        );
        // Skip hidden files: editors' swap files and Kubernetes ConfigMap `..data` links.
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if is_manifest && !hidden && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads every file of `path` and returns their contents, keyed by file.
fn read_all(path: &Path) -> Result<Vec<(PathBuf, String)>> {
    files(path)?
        .into_iter()
        .map(|f| {
            std::fs::read_to_string(&f)
                .map(|text| (f.clone(), text))
                .map_err(|source| Error::Io { path: f, source })
        })
        .collect()
}

fn parse_all(contents: &[(PathBuf, String)]) -> Result<Parsed> {
    let mut out = Parsed::default();
    for (file, text) in contents {
        parse_into(text, &file.display().to_string(), &mut out)?;
    }
    Ok(out)
}

/// Loads a file or directory once.
///
/// # Errors
/// [`Error::Io`] or [`Error::Parse`].
pub fn load(path: &Path) -> Result<Parsed> {
    parse_all(&read_all(path)?)
}

/// Watches a manifests path: loads it, sends its state to `events`, then re-reads it every
/// `interval` and sends the new state whenever the contents changed. An invalid edit is logged
/// and ignored, so the last good state stays. Returns when the receiver is gone.
///
/// Polling the contents, rather than subscribing to inotify, also catches the atomic symlink
/// swap that Kubernetes uses to update mounted ConfigMaps, and costs nothing for a few files.
///
/// # Errors
/// The first load's error: a source that cannot start should say so at once.
pub async fn run(path: PathBuf, interval: Duration, events: mpsc::Sender<Event>) -> Result<()> {
    let mut last: HashMap<PathBuf, String> = HashMap::new();
    let mut first = true;
    loop {
        let loaded = tokio::task::spawn_blocking({
            let path = path.clone();
            move || read_all(&path)
        })
        .await
        .unwrap_or_else(|join| {
            Err(Error::Io {
                path: path.clone(),
                source: std::io::Error::other(join),
            })
        });
        match loaded {
            Ok(contents) => {
                let changed = first
                    || contents.len() != last.len()
                    || contents.iter().any(|(f, t)| last.get(f) != Some(t));
                if changed {
                    match parse_all(&contents) {
                        Ok(parsed) => {
                            tracing::info!(
                                path = %path.display(),
                                services = parsed.services.len(),
                                slices = parsed.slices.len(),
                                "loaded manifests"
                            );
                            for event in parsed.into_events() {
                                if events.send(event).await.is_err() {
                                    return Ok(());
                                }
                            }
                            first = false;
                        }
                        Err(e) if first => return Err(e),
                        Err(error) => {
                            tracing::error!(%error, "invalid manifests edit ignored; keeping the last good state");
                        }
                    }
                    last = contents.into_iter().collect();
                }
            }
            Err(e) if first => return Err(e),
            Err(error) => {
                tracing::error!(%error, "cannot re-read manifests; keeping the last good state")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = events.closed() => return Ok(()),
        }
    }
}
