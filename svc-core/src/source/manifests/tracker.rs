//! Per-file state of the manifests source, and the rules for when a changed file is applied.
//!
//! Each look first `stat`s every file and reads only those whose metadata (device, inode, size,
//! mtime, ctime) changed, so an unchanged 100 MB file costs one `stat` per poll. A changed file
//! is applied when:
//! - it parses as a whole (otherwise its last good version stays, and only that file's);
//! - and its writer is done: inotify saw it renamed into place or closed after writing, or it
//!   has been stable for one poll interval and no writer has it open (a writer that keeps it
//!   open is trusted after [`WRITER_PATIENCE`] of stability);
//! - and, if it turned empty (no objects at all) while it had some, it stays empty for two
//!   poll intervals: truncating a file by mistake must not delete every Service in it.
//!
//! A reload (SIGHUP) or the first look applies whatever parses at once.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hasher;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use super::activity::View;
use super::status::{FileStatus, Status};
use super::{parse_file, Error, Parsed, Result};

/// How long a file that a writer still holds open must be stable before it is applied anyway.
pub(super) const WRITER_PATIENCE: Duration = Duration::from_secs(30);

/// What a `stat` says about a file: enough to tell any write, truncation or replacement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Meta {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Meta {
    fn of(m: &std::fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// `None`: the file is missing.
type Seen = Option<Meta>;

#[derive(Debug)]
struct Tracked {
    /// The metadata at the last look, and since when it has not changed.
    seen: Seen,
    since: Instant,
    /// The version last read and judged (applied or rejected): its metadata and content hash.
    judged: Option<(Seen, u64)>,
    /// The objects of the last good version, which is what this file serves.
    good: Parsed,
    status: FileStatus,
    /// An empty version was reported and waits for its second look.
    empty_warned: bool,
}

/// How one look goes.
pub(super) struct Look<'a> {
    pub(super) now: Instant,
    /// The first look, or a reload: apply whatever parses, without waiting.
    pub(super) at_once: bool,
    /// The first look: an unreadable single file is an error then, not a warning.
    pub(super) first: bool,
    pub(super) activity: &'a View,
}

/// Every file of a manifests path and what each serves.
pub(super) struct Tracker {
    root: PathBuf,
    interval: Duration,
    files: BTreeMap<PathBuf, Tracked>,
    status: Status,
}

impl Tracker {
    pub(super) fn new(root: PathBuf, interval: Duration, status: Status) -> Self {
        Self {
            root,
            interval,
            files: BTreeMap::new(),
            status,
        }
    }

    /// Every good object of every file.
    pub(super) fn state(&self) -> Parsed {
        let mut out = Parsed::default();
        for t in self.files.values() {
            out.services.extend(t.good.services.iter().cloned());
            out.slices.extend(t.good.slices.iter().cloned());
            out.bad_services.extend(t.good.bad_services.iter().cloned());
            out.bad_slices.extend(t.good.bad_slices.iter().cloned());
        }
        out
    }

    /// Looks at every file once; returns whether what the files serve changed.
    ///
    /// # Errors
    /// Only on the first look: the path cannot be read, or it is a single file that cannot be
    /// read or does not parse. Later failures are logged and reported in the [`Status`].
    pub(super) fn look(&mut self, look: &Look<'_>) -> Result<bool> {
        self.status.count_poll();
        let listed = match list(&self.root) {
            Ok(files) => {
                self.status.set_path_error(&self.root, None);
                files
            }
            Err(e) if look.first => return Err(e),
            Err(e) => {
                let message = e.to_string();
                if self.status.path_error().as_ref() != Some(&message) {
                    tracing::warn!(error = %message, "cannot read the manifests path; keeping the last good state");
                }
                self.status.set_path_error(&self.root, Some(message));
                return Ok(false);
            }
        };
        let single = !self.root.is_dir();
        let listed: BTreeSet<PathBuf> = listed.into_iter().collect();
        let mut paths: Vec<PathBuf> = self.files.keys().cloned().collect();
        paths.extend(
            listed
                .iter()
                .filter(|p| !self.files.contains_key(*p))
                .cloned(),
        );
        let mut changed = false;
        for path in paths {
            // A file no longer listed (removed, or no longer a regular file) counts as missing.
            let seen = if listed.contains(&path) {
                match std::fs::metadata(&path) {
                    Ok(m) => Some(Meta::of(&m)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(source) => {
                        let e = Error::Io {
                            path: path.clone(),
                            source,
                        };
                        if look.first && single {
                            return Err(e);
                        }
                        self.fail(&path, look.now, e.to_string());
                        continue;
                    }
                }
            } else {
                None
            };
            changed |= self.look_at(&path, seen, single, look)?;
        }
        self.status.set_files(
            self.files
                .iter()
                .map(|(p, t)| (p.clone(), t.status.clone()))
                .collect(),
        );
        Ok(changed)
    }

    fn tracked(&mut self, path: &Path, now: Instant) -> &mut Tracked {
        self.files
            .entry(path.to_path_buf())
            .or_insert_with(|| Tracked {
                seen: None,
                since: now,
                judged: None,
                good: Parsed::default(),
                status: FileStatus::default(),
                empty_warned: false,
            })
    }

    /// Records that a file's current version is rejected; logs only a new reason.
    fn fail(&mut self, path: &Path, now: Instant, error: String) {
        let t = self.tracked(path, now);
        if t.status.error.as_ref() != Some(&error) {
            tracing::warn!(file = %path.display(), %error, objects = t.good.len(),
                "manifests file rejected; keeping its last good version");
        }
        t.status.error = Some(error);
        t.status.pending = None;
    }

    /// Judges one file; returns whether what it serves changed.
    fn look_at(&mut self, path: &Path, seen: Seen, single: bool, look: &Look<'_>) -> Result<bool> {
        let interval = self.interval;
        let t = self.tracked(path, look.now);
        if t.seen != seen {
            t.seen = seen;
            t.since = look.now;
        }
        if t.judged.is_some_and(|(m, _)| m == seen) {
            t.status.pending = None;
            return Ok(false);
        }
        let stable_for = look.now.saturating_duration_since(t.since);
        let name = path.file_name().unwrap_or_default();
        let writing = look.activity.writing(name);
        let ready = look.at_once
            || match seen {
                // A missing file may be mid-replace by an editor; give it a poll to come back.
                None => stable_for >= interval,
                Some(_) if writing => stable_for >= WRITER_PATIENCE,
                Some(_) => look.activity.completed(name) || stable_for >= interval,
            };
        if !ready {
            t.status.pending = Some(if writing {
                "a writer still has it open"
            } else {
                "changed; applied once stable for one poll"
            });
            return Ok(false);
        }
        if writing && !look.at_once {
            tracing::warn!(file = %path.display(), patience = ?WRITER_PATIENCE,
                "a writer has kept this manifests file open, unchanged; applying it");
        }
        let Some(meta) = seen else {
            return Ok(self.missing(path, single, look));
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(source) => {
                let e = Error::Io {
                    path: path.to_path_buf(),
                    source,
                };
                if look.first && single {
                    return Err(e);
                }
                self.fail(path, look.now, e.to_string());
                self.tracked(path, look.now).judged = Some((seen, 0));
                return Ok(false);
            }
        };
        self.status.count_read(bytes.len() as u64);
        // A writer that started after the `stat` would leave us a torn read: look again later.
        if std::fs::metadata(path).ok().map(|m| Meta::of(&m)) != Some(meta) && !look.at_once {
            let t = self.tracked(path, look.now);
            t.seen = None;
            t.status.pending = Some("changed while being read");
            return Ok(false);
        }
        let hash = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            h.write(&bytes);
            h.finish()
        };
        let t = self.tracked(path, look.now);
        if t.judged.is_some_and(|(_, h)| h == hash) && t.status.error.is_none() {
            // Touched, not changed.
            t.judged = Some((seen, hash));
            t.status.pending = None;
            return Ok(false);
        }
        let parsed = std::str::from_utf8(&bytes)
            .map_err(|e| Error::Parse {
                origin: path.display().to_string(),
                document: 0,
                message: format!("not UTF-8: {e}"),
            })
            .and_then(|text| parse_file(text, &path.display().to_string()));
        drop(bytes);
        let parsed = match parsed {
            Ok(p) => p,
            Err(e) if look.first && single => return Err(e),
            Err(e) => {
                self.fail(path, look.now, e.to_string());
                self.tracked(path, look.now).judged = Some((seen, hash));
                return Ok(false);
            }
        };
        let t = self.tracked(path, look.now);
        if parsed.is_empty() && !t.good.is_empty() && !look.at_once {
            if stable_for < 2 * interval {
                if !t.empty_warned {
                    tracing::warn!(file = %path.display(), objects = t.good.len(),
                        "manifests file is empty; keeping its objects unless it stays empty for two polls");
                    t.empty_warned = true;
                }
                t.status.pending = Some("empty; applied only if it stays empty for two polls");
                return Ok(false);
            }
            tracing::warn!(file = %path.display(), objects = t.good.len(),
                "manifests file stayed empty for two polls; removing its objects");
        }
        let invalid_objects = parsed.bad_services.len() + parsed.bad_slices.len();
        tracing::info!(file = %path.display(), services = parsed.services.len(),
            slices = parsed.slices.len(), invalid = invalid_objects, "manifests file applied");
        t.status = FileStatus {
            error: None,
            invalid_objects,
            pending: None,
        };
        let changed = t.good != parsed;
        t.good = parsed;
        t.judged = Some((seen, hash));
        t.empty_warned = false;
        Ok(changed)
    }

    /// A file that is gone: in a directory its objects go with it; a single file keeps serving
    /// its last good version (a missing path is an error, not an instruction).
    fn missing(&mut self, path: &Path, single: bool, look: &Look<'_>) -> bool {
        if single {
            self.fail(
                path,
                look.now,
                format!("{}: file not found", path.display()),
            );
            self.tracked(path, look.now).judged = Some((None, 0));
            return false;
        }
        let Some(t) = self.files.remove(path) else {
            return false;
        };
        if !t.good.is_empty() {
            tracing::info!(file = %path.display(), objects = t.good.len(),
                "manifests file removed; removing its objects");
        }
        !t.good.is_empty()
    }
}

/// The files a path stands for: itself, or the `.yaml`/`.yml`/`.json` files of a directory
/// (not recursive), sorted by name.
pub(super) fn list(path: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_dir() {
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
