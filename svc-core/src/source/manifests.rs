//! The manifests source: v1 Services and discovery.k8s.io/v1 EndpointSlices from a YAML file
//! or a directory of them, reloaded when they change.
//!
//! Each file stands on its own: a file that does not parse is rejected whole and keeps serving
//! its last good version while the other files still reload, and [`Status`] reports it. An
//! object that parses but is invalid is skipped and its last good version (if any) stays, as
//! with the API. When a changed file is applied (only once its writer is done, and an emptied
//! file only after a second look) is described in `tracker`.

mod activity;
mod status;
mod tracker;
mod watch;

pub use status::{FileStatus, Status};
pub use watch::{run, run_with, start, Options};

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1 as corev1;
use k8s_openapi::api::discovery::v1 as discoveryv1;
use serde::Deserialize;
use thiserror::Error;

use crate::model::{EndpointSlice, ModelError, Service, ServiceKey, SliceKey};
use crate::store::Event;

/// Why a manifests file or directory could not be loaded.
#[derive(Debug, Error)]
#[non_exhaustive]
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

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The objects in a set of manifests, converted; invalid objects are listed by key so that
/// their last good version can be kept.
#[derive(Debug, Default, PartialEq)]
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
    /// Whether there is nothing at all, not even an invalid object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many objects there are, invalid ones included.
    pub fn len(&self) -> usize {
        self.services.len() + self.slices.len() + self.bad_services.len() + self.bad_slices.len()
    }

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

/// `apiVersion` and `kind`, read without copying the document.
struct TypeMeta {
    api_version: String,
    kind: String,
}

impl TypeMeta {
    fn of(value: &serde_yaml::Value) -> Result<Self, String> {
        if !value.is_mapping() {
            return Err("expected a mapping (an object with apiVersion and kind)".into());
        }
        let field = |name: &str| match value.get(name) {
            None | Some(serde_yaml::Value::Null) => Ok(String::new()),
            Some(serde_yaml::Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("{name}: expected a string")),
        };
        Ok(Self {
            api_version: field("apiVersion")?,
            kind: field("kind")?,
        })
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ServiceKey {
    ServiceKey::new(
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or(""),
    )
}

/// Converts one object, logging a failure with the file and document it came from.
fn convert<K, T>(
    obj: &K,
    kind: &'static str,
    origin: &str,
    document: usize,
) -> Result<T, ModelError>
where
    K: k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
    T: for<'a> TryFrom<&'a K, Error = ModelError>,
{
    T::try_from(obj).inspect_err(|error| {
        let meta = obj.metadata();
        tracing::warn!(
            file = origin,
            document,
            kind,
            namespace = meta.namespace.as_deref().unwrap_or(""),
            name = meta.name.as_deref().unwrap_or(""),
            %error,
            "skipping invalid object; keeping its last good version, if any"
        );
    })
}

fn parse_into(text: &str, origin: &str, out: &mut Parsed) -> Result<()> {
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let err = |message: String| Error::Parse {
            origin: origin.to_string(),
            document,
            message,
        };
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| err(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let tm = TypeMeta::of(&value).map_err(err)?;
        let items = if tm.kind.ends_with("List") {
            match value.get("items") {
                None | Some(serde_yaml::Value::Null) => Vec::new(),
                Some(serde_yaml::Value::Sequence(items)) => items.clone(),
                Some(_) => return Err(err("items: expected a sequence".into())),
            }
        } else {
            vec![value]
        };
        for item in items {
            let tm = TypeMeta::of(&item).map_err(err)?;
            match (tm.api_version.as_str(), tm.kind.as_str()) {
                ("v1", "Service") => {
                    let mut svc: corev1::Service =
                        serde_yaml::from_value(item).map_err(|e| err(e.to_string()))?;
                    svc.metadata
                        .namespace
                        .get_or_insert_with(|| "default".into());
                    match convert(&svc, "Service", origin, document) {
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
                    match convert(&es, "EndpointSlice", origin, document) {
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

/// Parses one file's text; `origin` names it in errors and logs.
pub(crate) fn parse_file(text: &str, origin: &str) -> Result<Parsed> {
    let mut out = Parsed::default();
    parse_into(text, origin, &mut out)?;
    Ok(out)
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

/// Loads a file or directory once, every file at once (no stability wait).
///
/// # Errors
/// [`Error::Io`] or [`Error::Parse`], for the first file that fails.
pub fn load(path: &Path) -> Result<Parsed> {
    let mut out = Parsed::default();
    for file in tracker::list(path)? {
        let text = std::fs::read_to_string(&file).map_err(|source| Error::Io {
            path: file.clone(),
            source,
        })?;
        parse_into(&text, &file.display().to_string(), &mut out)?;
    }
    Ok(out)
}
