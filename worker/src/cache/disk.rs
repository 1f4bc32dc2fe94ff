//! Prefixes kept on disk between workers: written when a worker stops, read back by the next
//! worker for the same model, context and build when a request matches one.
//!
//! Layout: `ROOT/KEYHASH/TOKENHASH.kv`, one [`file`](super::file) per prefix, where `KEYHASH`
//! names the key (model file hash, context settings, build) and `TOKENHASH` the tokens. Files
//! are written under a unique temporary name, synced, then renamed, so a reader sees a whole
//! file or none. The whole of `ROOT` is kept under its byte limit by removing the files used
//! least recently (their modification time is refreshed on use). A file that fails to read or
//! verify is logged, removed and never loaded.

use llama_cpp_2::token::LlamaToken;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::file;
use crate::engine::reuse::common_prefix;

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
    hex::encode(&Sha256::digest(bytes)[..12])
}

fn private_dir(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(p)
}

impl DiskCache {
    /// Opens (creating) the folder for `key` under `root` and indexes the files in it. Files that
    /// are not valid entries for this key are logged and removed.
    pub fn open(root: &Path, key: String, max_bytes: u64) -> std::io::Result<DiskCache> {
        let dir = root.join(hex_of(key.as_bytes()));
        private_dir(&dir)?;
        let mut c = DiskCache { root: root.to_path_buf(), dir, key, max_bytes, index: Vec::new(), scanned: None };
        c.refresh();
        tracing::info!(dir = %c.dir.display(), entries = c.index.len(), "prompt cache on disk");
        Ok(c)
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
            if path.extension().is_none_or(|x| x != "kv") {
                continue;
            }
            if let Some(known) = self.index.iter().position(|x| x.path == path) {
                index.push(self.index.swap_remove(known));
                continue;
            }
            let read = fs::File::open(&path)
                .map_err(file::FileError::from)
                .and_then(|f| file::read_tokens(BufReader::new(f), &self.key));
            match read {
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

    /// The file sharing the longest prefix with `prompt`, as `(index, shared tokens)`.
    pub fn best(&self, prompt: &[LlamaToken]) -> Option<(usize, usize)> {
        self.index
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, prompt)))
            .filter(|&(_, n)| n > 0)
            .max_by_key(|&(_, n)| n)
    }

    /// Reads and verifies file `i`. A file that fails is logged, removed and forgotten.
    pub fn load(&mut self, i: usize) -> Option<(Vec<LlamaToken>, Vec<u8>)> {
        let path = self.index[i].path.clone();
        let read = fs::File::open(&path).map_err(file::FileError::from).and_then(|f| {
            let len = f.metadata()?.len();
            file::read_entry(BufReader::with_capacity(1 << 20, f), &self.key, len)
        });
        match read {
            Ok((tokens, state)) if tokens == self.index[i].tokens => {
                let _ = fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(SystemTime::now()));
                Some((tokens, state))
            }
            Ok(_) => {
                discard(&path, "its tokens changed since it was indexed");
                self.index.swap_remove(i);
                None
            }
            Err(e) => {
                discard(&path, &e.to_string());
                self.index.swap_remove(i);
                None
            }
        }
    }

    /// Whether a file already holds `tokens` (as a prefix of its own).
    pub fn covers(&self, tokens: &[LlamaToken]) -> bool {
        self.index.iter().any(|e| e.tokens.starts_with(tokens))
    }

    /// Writes an entry atomically and indexes it; files it supersedes (its own prefixes) are
    /// removed.
    pub fn save(&mut self, tokens: &[LlamaToken], state: &[u8]) -> std::io::Result<()> {
        let raw: Vec<u8> = tokens.iter().flat_map(|t| t.0.to_le_bytes()).collect();
        let name = format!("{}.kv", hex_of(&raw));
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let written = (|| {
            let f = fs::File::options().write(true).create_new(true).open(&tmp)?;
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
        Ok(())
    }

    /// Removes the least recently used files of the whole cache root until it fits its limit.
    pub fn prune(&mut self) {
        let mut files = Vec::new();
        for d in fs::read_dir(&self.root).into_iter().flatten().flatten() {
            for f in fs::read_dir(d.path()).into_iter().flatten().flatten() {
                if let Ok(m) = f.metadata() {
                    if m.is_file() {
                        files.push((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), f.path()));
                    }
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
        let (i, n) = again.best(&toks(0..60)).unwrap();
        assert_eq!(n, 60);
        assert_eq!(again.load(i).unwrap(), (toks(0..80), vec![8; 100]));
        // Another key sees nothing.
        assert_eq!(DiskCache::open(root.path(), "k2".into(), 1 << 20).unwrap().len(), 0);
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
        let (i, _) = again.best(&toks(0..40)).unwrap();
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
    fn pruning_keeps_the_root_under_its_limit() {
        let root = tempfile::tempdir().unwrap();
        let mut a = DiskCache::open(root.path(), "a".into(), 5000).unwrap();
        let mut b = DiskCache::open(root.path(), "b".into(), 5000).unwrap();
        for k in 0..4 {
            a.save(&toks(k * 100..k * 100 + 40), &[1; 1000]).unwrap();
            b.save(&toks(k * 100..k * 100 + 40), &[1; 1000]).unwrap();
        }
        b.prune();
        let total: u64 = walk(root.path()).iter().map(|p| fs::metadata(p).unwrap().len()).sum();
        assert!(total <= 5000, "{total}");
        assert!(b.len() < 4);
    }

    fn walk(root: &Path) -> Vec<PathBuf> {
        fs::read_dir(root)
            .unwrap()
            .flatten()
            .flat_map(|d| fs::read_dir(d.path()).unwrap().flatten().map(|f| f.path()))
            .collect()
    }
}
