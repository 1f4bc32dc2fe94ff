//! Stored responses: what `previous_response_id` continues and `GET`/`DELETE
//! /v1/responses/{id}` read. Each keeps its response object and its conversation (chat
//! messages, the answer included, without instructions). Bounded: at most [`MAX_ENTRY_BYTES`]
//! each, the newest `memory` bytes in memory, and on disk (one private file per response, in a
//! private folder) at most `disk` bytes, oldest removed first; none outlives `ttl`. A restart
//! finds them on disk.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The largest stored response, in bytes of JSON: a longer conversation is answered but not
/// kept.
pub const MAX_ENTRY_BYTES: usize = 8 << 20;
/// The most bytes of stored responses kept in memory (the newest); the rest are read from disk.
pub const MEMORY_BYTES: usize = 64 << 20;
/// How long a stored response is kept (OpenAI keeps them 30 days).
pub const TTL: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stored {
    /// The response object as `GET` returns it.
    pub response: Value,
    /// The conversation a continued turn starts from.
    pub messages: Vec<Value>,
    /// Seconds since the epoch.
    pub created_at: u64,
}

/// Where and how much is kept.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Folder for the files; `None`: memory only.
    pub dir: Option<PathBuf>,
    pub memory: usize,
    pub disk: u64,
    pub ttl: Duration,
}

pub struct Store {
    limits: Limits,
    mem: Mutex<Mem>,
}

#[derive(Default)]
struct Mem {
    entries: HashMap<String, (Stored, usize)>,
    /// Insertion order, oldest first.
    order: VecDeque<String>,
    bytes: usize,
}

/// Whether `id` is one this server makes (`resp_` and hex): anything else is no file name.
pub fn valid_id(id: &str) -> bool {
    id.strip_prefix("resp_").is_some_and(|h| !h.is_empty() && h.len() <= 48 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Store {
    pub fn new(limits: Limits) -> Store {
        Store { limits, mem: Mutex::new(Mem::default()) }
    }

    /// Where and how much it keeps.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn path(&self, id: &str) -> Option<PathBuf> {
        self.limits.dir.as_ref().filter(|_| valid_id(id)).map(|d| d.join(format!("{id}.json")))
    }

    fn expired(&self, s: &Stored) -> bool {
        now_secs().saturating_sub(s.created_at) > self.limits.ttl.as_secs()
    }

    /// Keeps `s` under `id`; false when it is over [`MAX_ENTRY_BYTES`]. Blocking (disk): call
    /// off the runtime.
    pub fn put(&self, id: &str, s: Stored) -> bool {
        let Ok(json) = serde_json::to_vec(&s) else { return false };
        if json.len() > MAX_ENTRY_BYTES || !valid_id(id) {
            return false;
        }
        self.remember(id, s, json.len());
        if let Some(path) = self.path(id) {
            if let Err(e) = self.write(&path, &json) {
                tracing::warn!(path = %path.display(), error = %e, "a stored response could not be written to disk");
            }
            self.prune();
        }
        true
    }

    fn remember(&self, id: &str, s: Stored, size: usize) {
        let mut m = self.mem.lock().expect("store lock");
        if let Some((_, old)) = m.entries.remove(id) {
            m.bytes -= old;
            m.order.retain(|k| k != id);
        }
        m.entries.insert(id.to_string(), (s, size));
        m.order.push_back(id.to_string());
        m.bytes += size;
        while m.bytes > self.limits.memory && m.order.len() > 1 {
            let Some(oldest) = m.order.pop_front() else { break };
            if let Some((_, n)) = m.entries.remove(&oldest) {
                m.bytes -= n;
            }
        }
    }

    fn write(&self, path: &std::path::Path, json: &[u8]) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        // Written whole, then renamed: a reader never sees half a file, and a killed server
        // loses nothing the kernel has (only a machine that loses power may).
        f.write_all(json)?;
        std::fs::rename(&tmp, path)
    }

    /// The response stored under `id`, from memory or disk. Blocking: call off the runtime.
    pub fn get(&self, id: &str) -> Option<Stored> {
        if !valid_id(id) {
            return None;
        }
        let hit = self.mem.lock().expect("store lock").entries.get(id).map(|(s, _)| s.clone());
        let s = match hit {
            Some(s) => s,
            None => {
                let path = self.path(id)?;
                let meta = std::fs::metadata(&path).ok()?;
                if meta.len() > MAX_ENTRY_BYTES as u64 {
                    return None;
                }
                let s: Stored = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
                self.remember(id, s.clone(), meta.len() as usize);
                s
            }
        };
        if self.expired(&s) {
            self.delete(id);
            return None;
        }
        Some(s)
    }

    /// Forgets `id`; whether it was there. Blocking: call off the runtime.
    pub fn delete(&self, id: &str) -> bool {
        if !valid_id(id) {
            return false;
        }
        let in_mem = {
            let mut m = self.mem.lock().expect("store lock");
            match m.entries.remove(id) {
                Some((_, n)) => {
                    m.bytes -= n;
                    m.order.retain(|k| k != id);
                    true
                }
                None => false,
            }
        };
        let on_disk = self.path(id).is_some_and(|p| std::fs::remove_file(p).is_ok());
        in_mem || on_disk
    }

    /// Removes expired files, then the oldest until the folder holds at most `disk` bytes.
    fn prune(&self) {
        let Some(dir) = &self.limits.dir else { return };
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".json")))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        files.sort();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        let cutoff = SystemTime::now() - self.limits.ttl;
        for (modified, len, path) in files {
            if modified >= cutoff && total <= self.limits.disk {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(n: usize) -> Stored {
        Stored {
            response: json!({ "id": n }),
            messages: vec![json!({ "role": "user", "content": "x".repeat(n) })],
            created_at: now_secs(),
        }
    }

    fn store(dir: Option<PathBuf>, memory: usize, disk: u64) -> Store {
        Store::new(Limits { dir, memory, disk, ttl: Duration::from_secs(3600) })
    }

    #[test]
    fn ids_are_checked_before_any_path_is_made() {
        assert!(valid_id("resp_18ef0a"));
        for bad in ["resp_", "resp_../x", "../resp_1", "resp_1/2", "msg_1", "resp_xyz"] {
            assert!(!valid_id(bad), "{bad}");
        }
        let s = store(Some(PathBuf::from("/nonexistent")), 1 << 20, 1 << 20);
        assert!(s.get("resp_../../etc/passwd").is_none());
        assert!(!s.put("../x", entry(1)));
    }

    #[test]
    fn memory_keeps_the_newest_and_disk_brings_back_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(Some(dir.path().to_path_buf()), 300, 1 << 20);
        for i in 1..=5 {
            assert!(s.put(&format!("resp_{i}"), entry(100)));
        }
        assert!(s.mem.lock().unwrap().bytes <= 300);
        assert!(!s.mem.lock().unwrap().entries.contains_key("resp_1"), "the oldest left memory");
        assert_eq!(s.get("resp_1").map(|e| e.messages), Some(entry(100).messages), "and came back from disk");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("resp_1.json")).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // A new store on the same folder (a restart) finds it.
        let again = store(Some(dir.path().to_path_buf()), 300, 1 << 20);
        assert!(again.get("resp_3").is_some());
        assert!(again.delete("resp_3"));
        assert!(again.get("resp_3").is_none() && s.path("resp_3").is_some_and(|p| !p.exists()));
    }

    #[test]
    fn disk_and_size_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(Some(dir.path().to_path_buf()), 1 << 20, 1000);
        for i in 1..=10 {
            s.put(&format!("resp_{i:x}"), entry(200));
            std::thread::sleep(Duration::from_millis(5));
        }
        let held: u64 = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
        assert!(held <= 1000, "{held}");
        assert!(!s.put("resp_ff", entry(MAX_ENTRY_BYTES)));
        let old = Stored { created_at: 0, ..entry(1) };
        s.put("resp_0", old);
        assert!(s.get("resp_0").is_none(), "an expired response is gone");
    }
}
