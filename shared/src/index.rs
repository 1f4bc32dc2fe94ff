//! The hash index: remembers each file's SHA-256 by name, size, modification time, device,
//! inode and inode change time so that a restart or `list` does not re-read gigabytes. The
//! inode's change time is what a file's owner cannot set back after rewriting it (the mtime
//! they can), and a file renamed into the name has another inode.
//!
//! It lives in the models folder as `.model-bucket-index.json`. It is only a cache: a missing,
//! unreadable or stale entry means the file is hashed again; a folder that cannot be written
//! just means the next scan hashes again too.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::state_file::{write_atomic, FolderLock};

pub const INDEX_FILE: &str = ".model-bucket-index.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    mtime_ns: u128,
    /// Device, inode and inode change time (ns); absent in indexes written before they were
    /// recorded, whose files are then hashed once again.
    #[serde(default)]
    dev: u64,
    #[serde(default)]
    ino: u64,
    #[serde(default)]
    ctime_ns: i128,
    sha256: String,
}

/// File name → what its content hashed to.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct HashIndex {
    #[serde(default)]
    files: BTreeMap<String, Entry>,
    #[serde(skip)]
    dirty: bool,
    #[serde(skip)]
    path: PathBuf,
}

/// A file's identity as the index sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub size: u64,
    pub mtime_ns: u128,
    pub dev: u64,
    pub ino: u64,
    pub ctime_ns: i128,
}

/// The stamp of a file from its metadata.
pub fn stamp(meta: &fs::Metadata) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
    Stamp {
        size: meta.len(),
        mtime_ns: mtime,
        dev: meta.dev(),
        ino: meta.ino(),
        ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
    }
}

impl HashIndex {
    /// Loads the index of `dir`; an absent or unreadable index is an empty one.
    pub fn load(dir: &Path) -> HashIndex {
        let path = dir.join(INDEX_FILE);
        let mut index: HashIndex =
            fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        index.path = path;
        index
    }

    /// The remembered hash of `name` if its stamp is unchanged.
    pub fn get(&self, name: &str, s: &Stamp) -> Option<&str> {
        self.files
            .get(name)
            .filter(|e| {
                e.size == s.size
                    && e.mtime_ns == s.mtime_ns
                    && e.dev == s.dev
                    && e.ino == s.ino
                    && e.ctime_ns == s.ctime_ns
            })
            .map(|e| e.sha256.as_str())
    }

    /// Whether `path` (a file of this folder) has an entry for its current size and mtime.
    pub fn knows(&self, path: &Path) -> bool {
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else { return false };
        fs::metadata(path).is_ok_and(|m| self.get(&name, &stamp(&m)).is_some())
    }

    pub fn put(&mut self, name: &str, s: &Stamp, sha256: &str) {
        let e = Entry {
            size: s.size,
            mtime_ns: s.mtime_ns,
            dev: s.dev,
            ino: s.ino,
            ctime_ns: s.ctime_ns,
            sha256: sha256.to_string(),
        };
        if self.files.get(name) != Some(&e) {
            self.files.insert(name.to_string(), e);
            self.dirty = true;
        }
    }

    /// Forgets every file not in `present`.
    pub fn retain(&mut self, present: &dyn Fn(&str) -> bool) {
        let before = self.files.len();
        self.files.retain(|k, _| present(k));
        self.dirty |= self.files.len() != before;
    }

    /// Writes the index back if it changed: under the folder's lock, merged with what other
    /// processes wrote meanwhile (for files still present), atomically.
    pub fn save(&mut self) {
        if !self.dirty {
            return;
        }
        let dir = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let result = FolderLock::acquire(&dir).and_then(|_lock| {
            let theirs = HashIndex::load(&dir);
            for (name, e) in theirs.files {
                if !self.files.contains_key(&name) && dir.join(&name).exists() {
                    self.files.insert(name, e);
                }
            }
            let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
            write_atomic(&self.path, &bytes)
        });
        match result {
            Ok(()) => self.dirty = false,
            Err(e) => tracing::debug!(path = %self.path.display(), error = %e, "hash index not saved"),
        }
    }
}
