//! Prefixes kept on disk between workers: written when a worker stops, read back by the next
//! worker for the same model, context and build when a request matches one.
//!
//! Layout: `ROOT/KEYHASH/TOKENHASH.kv`, one [`file`](super::file) per prefix, where `KEYHASH`
//! names the key (model file hash, context settings, build) and `TOKENHASH` the tokens (24 hex
//! digits each). Files are written under a unique temporary name with mode 0600, synced, then
//! renamed, so a reader sees a whole file or none.
//!
//! Trust: the root must belong to this user and be writable by no one else, and the key folder
//! is 0700; a file is read only if it is a regular file of this user (never through a symlink),
//! at most [`DiskCache::max_entry`] bytes, and it verifies end to end. A file that fails is
//! logged, removed and never loaded. Pruning touches only names of this layout, so pointing
//! `ROOT` at a folder that holds anything else costs nothing of it.
//!
//! Bounds: the whole of `ROOT` is kept under its byte limit by removing the files used least
//! recently (their modification time is refreshed on use); no entry may take more than a
//! quarter of the limit.

use llama_cpp_2::token::LlamaToken;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{BufReader, BufWriter};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::file;
use crate::engine::reuse::common_prefix;

/// Length of the hex names of key folders and files.
const NAME_LEN: usize = 24;
/// A temporary file older than this was left by a worker that was killed while writing.
const STALE_TMP: Duration = Duration::from_secs(120);

struct Indexed {
    path: PathBuf,
    tokens: Vec<LlamaToken>,
}

pub struct DiskCache {
    root: PathBuf,
    dir: PathBuf,
    key: String,
    /// Bytes all of `root` may hold.
    max_bytes: u64,
    index: Vec<Indexed>,
    /// The folder's modification time when it was last indexed.
    scanned: Option<SystemTime>,
}

fn hex_of(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..NAME_LEN / 2])
}

fn is_hex_name(s: &str) -> bool {
    s.len() == NAME_LEN && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Creates `p` (0700) if needed and checks that it is a real folder of this user that no one
/// else may write to.
fn private_dir(p: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(p)?;
    let m = fs::symlink_metadata(p)?;
    if !m.is_dir() || m.uid() != uid() || m.mode() & 0o022 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is not a folder of this user closed to others (mode {:o}, owner {})",
            p.display(),
            m.mode() & 0o7777,
            m.uid()
        )));
    }
    Ok(())
}

/// Opens a cache file for reading: a regular file of this user, not through a symlink, and
/// never blocking on a FIFO.
fn open_entry(path: &Path) -> Result<fs::File, file::FileError> {
    let f = fs::File::options().read(true).custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK).open(path)?;
    let m = f.metadata()?;
    if !m.is_file() || m.uid() != uid() {
        return Err(file::FileError::Io(std::io::Error::other("not a regular file of this user")));
    }
    Ok(f)
}

impl DiskCache {
    /// Opens (creating) the folder for `key` under `root` and indexes the files in it. Files that
    /// are not valid entries for this key are logged and removed.
    pub fn open(root: &Path, key: String, max_bytes: u64) -> std::io::Result<DiskCache> {
        private_dir(root)?;
        let dir = root.join(hex_of(key.as_bytes()));
        private_dir(&dir)?;
        let mut c = DiskCache { root: root.to_path_buf(), dir, key, max_bytes, index: Vec::new(), scanned: None };
        c.refresh();
        tracing::info!(dir = %c.dir.display(), entries = c.index.len(), "prompt cache on disk");
        Ok(c)
    }

    /// The largest state one file may hold, in bytes.
    pub fn max_entry(&self) -> u64 {
        self.max_bytes / 4
    }

    /// Indexes the folder again if it changed since the last look (a worker that stopped a
    /// moment ago may still have been writing when this one started). Costs one `stat` when
    /// nothing changed.
    pub fn refresh(&mut self) {
        let now = fs::metadata(&self.dir).and_then(|m| m.modified()).ok();
        if now.is_some() && now == self.scanned {
            return;
        }
        self.scanned = now;
        let mut index = Vec::new();
        for e in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".tmp") {
                remove_if_stale(&path);
                continue;
            }
            if !name.strip_suffix(".kv").is_some_and(is_hex_name) {
                continue;
            }
            if let Some(known) = self.index.iter().position(|x| x.path == path) {
                index.push(self.index.swap_remove(known));
                continue;
            }
            match open_entry(&path).and_then(|f| file::read_tokens(BufReader::new(f), &self.key)) {
                Ok(tokens) => index.push(Indexed { path, tokens }),
                Err(e) => discard(&path, &e.to_string()),
            }
        }
        self.index = index;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// The file sharing the longest prefix with `prompt` among those `usable(entry length,
    /// shared)` accepts, as `(index, shared tokens)`.
    pub fn best(&self, prompt: &[LlamaToken], usable: impl Fn(usize, usize) -> bool) -> Option<(usize, usize)> {
        self.index
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, prompt), e.tokens.len()))
            .filter(|&(_, n, len)| n > 0 && usable(len, n))
            .map(|(i, n, _)| (i, n))
            .max_by_key(|&(_, n)| n)
    }

    /// Reads and verifies file `i`. A file that fails is logged, removed and forgotten.
    pub fn load(&mut self, i: usize) -> Option<(Vec<LlamaToken>, Vec<u8>)> {
        let path = self.index[i].path.clone();
        let limit = self.max_entry() + (1 << 20);
        let read =
            open_entry(&path).and_then(|f| file::read_entry(BufReader::with_capacity(1 << 20, f), &self.key, limit));
        let why = match read {
            Ok((tokens, state)) if tokens == self.index[i].tokens => {
                let _ = fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(SystemTime::now()));
                return Some((tokens, state));
            }
            Ok(_) => "its tokens changed since it was indexed".to_string(),
            Err(e) => e.to_string(),
        };
        discard(&path, &why);
        self.index.swap_remove(i);
        None
    }

    /// Removes the file holding exactly `tokens` (one llama.cpp refused to restore).
    pub fn remove(&mut self, tokens: &[LlamaToken], why: &str) {
        if let Some(i) = self.index.iter().position(|e| e.tokens == tokens) {
            discard(&self.index[i].path, why);
            self.index.swap_remove(i);
        }
    }

    /// Whether a file already holds `tokens` (as a prefix of its own).
    pub fn covers(&self, tokens: &[LlamaToken]) -> bool {
        self.index.iter().any(|e| e.tokens.starts_with(tokens))
    }

    /// Writes an entry atomically and indexes it; files it supersedes (its own prefixes) are
    /// removed. A state over [`Self::max_entry`] is not written; returns whether it was.
    pub fn save(&mut self, tokens: &[LlamaToken], state: &[u8]) -> std::io::Result<bool> {
        if state.len() as u64 > self.max_entry() {
            return Ok(false);
        }
        let raw: Vec<u8> = tokens.iter().flat_map(|t| t.0.to_le_bytes()).collect();
        let name = format!("{}.kv", hex_of(&raw));
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let written = (|| {
            let f = fs::File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&tmp)?;
            let w = file::write_entry(BufWriter::with_capacity(1 << 20, f), &self.key, tokens, state)?;
            let f = w.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let mut i = 0;
        while i < self.index.len() {
            let e = &self.index[i];
            if e.path == path || tokens.starts_with(&e.tokens) {
                if e.path != path {
                    let _ = fs::remove_file(&e.path);
                }
                self.index.swap_remove(i);
            } else {
                i += 1;
            }
        }
        self.index.push(Indexed { path, tokens: tokens.to_vec() });
        Ok(true)
    }

    /// Removes the least recently used cache files of the whole root until it fits its limit.
    /// Only names of this layout are counted or removed, and symlinks are never followed.
    pub fn prune(&mut self) {
        let mut files = Vec::new();
        for d in fs::read_dir(&self.root).into_iter().flatten().flatten() {
            let is_dir = fs::symlink_metadata(d.path()).is_ok_and(|m| m.is_dir());
            if !is_dir || !is_hex_name(&d.file_name().to_string_lossy()) {
                continue;
            }
            for f in fs::read_dir(d.path()).into_iter().flatten().flatten() {
                let name = f.file_name();
                let name = name.to_string_lossy();
                let ours = name.strip_suffix(".kv").is_some_and(is_hex_name)
                    || (name.starts_with('.') && name.ends_with(".tmp"));
                match fs::symlink_metadata(f.path()) {
                    Ok(m) if ours && m.is_file() => {
                        files.push((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), f.path()))
                    }
                    _ => {}
                }
            }
        }
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total -= len;
                self.index.retain(|e| e.path != path);
                tracing::debug!(path = %path.display(), "prompt cache file removed to stay under the limit");
            }
        }
    }
}

fn remove_if_stale(path: &Path) {
    let old = fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE_TMP));
    if old {
        let _ = fs::remove_file(path);
    }
}

fn discard(path: &Path, why: &str) {
    tracing::warn!(path = %path.display(), reason = why, "ignoring a prompt-cache file");
    let _ = fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(v: std::ops::Range<i32>) -> Vec<LlamaToken> {
        v.map(LlamaToken).collect()
    }

    #[test]
    fn saved_entries_are_found_again_by_a_new_cache() {
        let root = tempfile::tempdir().unwrap();
        let mut c = DiskCache::open(root.path(), "k1".into(), 1 << 20).unwrap();
        c.save(&toks(0..40), &[7; 100]).unwrap();
        c.save(&toks(0..80), &[8; 100]).unwrap();
        assert_eq!(c.len(), 1, "the longer prefix supersedes the shorter");
        let mut again = DiskCache::open(root.path(), "k1".into(), 1 << 20).unwrap();
        let (i, n) = again.best(&toks(0..60), |_, _| true).unwrap();
        assert_eq!(n, 60);
        assert_eq!(again.load(i).unwrap(), (toks(0..80), vec![8; 100]));
        // Another key sees nothing.
        assert_eq!(DiskCache::open(root.path(), "k2".into(), 1 << 20).unwrap().len(), 0);
    }

    #[test]
    fn files_are_private_and_oversized_states_are_not_written() {
        let root = tempfile::tempdir().unwrap();
        let mut c = DiskCache::open(root.path(), "k".into(), 4000).unwrap();
        assert!(c.save(&toks(0..40), &[1; 1000]).unwrap());
        assert!(!c.save(&toks(0..50), &[1; 1001]).unwrap(), "over a quarter of the limit");
        let m = fs::metadata(&c.index[0].path).unwrap();
        assert_eq!(m.mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&c.dir).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_corrupt_file_is_ignored_and_removed() {
        let root = tempfile::tempdir().unwrap();
        let mut c = DiskCache::open(root.path(), "k".into(), 1 << 20).unwrap();
        c.save(&toks(0..40), &[7; 1000]).unwrap();
        let path = c.index[0].path.clone();
        let mut bytes = fs::read(&path).unwrap();
        let at = bytes.len() - 100;
        bytes[at] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let mut again = DiskCache::open(root.path(), "k".into(), 1 << 20).unwrap();
        let (i, _) = again.best(&toks(0..40), |_, _| true).unwrap();
        assert!(again.load(i).is_none());
        assert_eq!(again.len(), 0);
        assert!(!path.exists());
        // A truncated one is dropped at once.
        c.save(&toks(5..50), &[7; 1000]).unwrap();
        let path = c.index.last().unwrap().path.clone();
        fs::write(&path, &fs::read(&path).unwrap()[..30]).unwrap();
        assert_eq!(DiskCache::open(root.path(), "k".into(), 1 << 20).unwrap().len(), 0);
    }

    #[test]
    fn symlinks_and_foreign_folders_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let mut c = DiskCache::open(root.path(), "k".into(), 1 << 20).unwrap();
        c.save(&toks(0..40), &[7; 100]).unwrap();
        let target = c.index[0].path.clone();
        let link = c.dir.join(format!("{}.kv", "a".repeat(NAME_LEN)));
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let again = DiskCache::open(root.path(), "k".into(), 1 << 20).unwrap();
        assert_eq!(again.len(), 1, "the link is not read");
        assert!(!link.exists() && target.exists());
        // A root others may write to is refused.
        let open = tempfile::tempdir().unwrap();
        fs::set_permissions(open.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        assert!(DiskCache::open(open.path(), "k".into(), 1 << 20).is_err());
    }

    #[test]
    fn pruning_keeps_the_root_under_its_limit_and_touches_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let mut a = DiskCache::open(root.path(), "a".into(), 20000).unwrap();
        let mut b = DiskCache::open(root.path(), "b".into(), 20000).unwrap();
        let other = root.path().join("photos");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("old.jpg"), [0; 50000]).unwrap();
        fs::write(a.dir.join("notes.txt"), [0; 50000]).unwrap();
        for k in 0..8 {
            a.save(&toks(k * 100..k * 100 + 40), &[1; 4000]).unwrap();
            b.save(&toks(k * 100..k * 100 + 40), &[1; 4000]).unwrap();
        }
        b.prune();
        let ours: u64 = kv_files(root.path()).iter().map(|p| fs::metadata(p).unwrap().len()).sum();
        assert!(ours <= 20000, "{ours}");
        assert!(b.len() < 8);
        assert!(other.join("old.jpg").exists() && a.dir.join("notes.txt").exists());
    }

    fn kv_files(root: &Path) -> Vec<PathBuf> {
        fs::read_dir(root)
            .unwrap()
            .flatten()
            .flat_map(|d| fs::read_dir(d.path()).unwrap().flatten().map(|f| f.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "kv"))
            .collect()
    }
}
