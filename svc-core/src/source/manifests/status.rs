//! What the manifests source reports to the outside: per-file health for readiness checks and
//! metrics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;

/// The state of one manifests file, as last looked at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileStatus {
    /// Why the file's current version is not applied (it does not parse, cannot be read, or is
    /// missing), while its last good version keeps being served. `None` when it is applied.
    pub error: Option<String>,
    /// Objects in the applied version that failed validation and were skipped (their last good
    /// version, if any, stays).
    pub invalid_objects: usize,
    /// A change seen but not applied yet, and why (a writer still has the file open, it has
    /// not been stable for a poll yet, or it turned empty and gets a second look).
    pub pending: Option<&'static str>,
}

#[derive(Debug, Default)]
struct Inner {
    files: Mutex<BTreeMap<PathBuf, FileStatus>>,
    path_error: Mutex<Option<(PathBuf, String)>>,
    polls: AtomicU64,
    reads: AtomicU64,
    bytes_read: AtomicU64,
}

/// Health of a manifests source: cheap to clone, shared with the admin server.
#[derive(Clone, Debug, Default)]
pub struct Status(Arc<Inner>);

impl Status {
    /// A fresh status (no files known yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// Every known file and its state, by path.
    pub fn files(&self) -> BTreeMap<PathBuf, FileStatus> {
        self.0.files.lock().clone()
    }

    /// The files whose current version is rejected, with the reason; empty when all is well.
    /// A failure to read the path itself (a missing file or directory) is reported first,
    /// under that path.
    pub fn failing(&self) -> Vec<(PathBuf, String)> {
        let mut out: Vec<(PathBuf, String)> = self
            .0
            .files
            .lock()
            .iter()
            .filter_map(|(p, s)| s.error.clone().map(|e| (p.clone(), e)))
            .collect();
        if let Some(e) = self.0.path_error.lock().clone() {
            out.insert(0, e);
        }
        out
    }

    /// How many times the source looked for changes.
    pub fn polls(&self) -> u64 {
        self.0.polls.load(Relaxed)
    }

    /// How many times a file's contents were read (only changed files are read).
    pub fn reads(&self) -> u64 {
        self.0.reads.load(Relaxed)
    }

    /// Bytes read from manifests files in total.
    pub fn bytes_read(&self) -> u64 {
        self.0.bytes_read.load(Relaxed)
    }

    pub(super) fn set_files(&self, files: BTreeMap<PathBuf, FileStatus>) {
        *self.0.files.lock() = files;
    }

    pub(super) fn path_error(&self) -> Option<String> {
        self.0.path_error.lock().as_ref().map(|(_, e)| e.clone())
    }

    pub(super) fn set_path_error(&self, path: &Path, error: Option<String>) {
        *self.0.path_error.lock() = error.map(|e| (path.to_path_buf(), e));
    }

    pub(super) fn count_poll(&self) {
        self.0.polls.fetch_add(1, Relaxed);
    }

    pub(super) fn count_read(&self, bytes: u64) {
        self.0.reads.fetch_add(1, Relaxed);
        self.0.bytes_read.fetch_add(bytes, Relaxed);
    }
}
