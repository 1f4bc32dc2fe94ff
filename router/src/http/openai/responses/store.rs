//! Stored responses: what `previous_response_id` continues and `GET`/`DELETE
//! /v1/responses/{id}` read. Each keeps its response object and its conversation (chat
//! messages, the answer included, without instructions). Bounded: at most [`MAX_ENTRY_BYTES`]
//! each, the newest `memory` bytes in memory, and on disk (one file per response, `0600`, in a
//! folder of the server user's own, `0700`) at most `disk` bytes, oldest removed first; none
//! outlives `ttl`. A restart finds them on disk.
//!
//! The folder is trusted only when it is a real directory (no symbolic link) owned by the
//! server's user and closed to everyone else; files are written under a fresh name
//! (`O_EXCL`, no links followed), then renamed, and read without following links. Only files
//! named as this store names them are ever removed.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The largest stored response, in bytes of JSON: a longer conversation is answered but not
/// kept (the response says `"store": false`).
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
    /// The files on disk, by name, oldest first, and their bytes; read from the folder once.
    disk: Mutex<Option<Disk>>,
}

#[derive(Default)]
struct Mem {
    entries: HashMap<String, (Stored, usize)>,
    /// Insertion order, oldest first.
    order: VecDeque<String>,
    bytes: usize,
}

#[derive(Default)]
struct Disk {
    files: VecDeque<(String, u64, SystemTime)>,
    bytes: u64,
}

/// Whether `id` is one this server makes (`resp_` and hex): anything else is no file name.
pub fn valid_id(id: &str) -> bool {
    id.strip_prefix("resp_").is_some_and(|h| !h.is_empty() && h.len() <= 48 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `dir` may hold stored responses: missing (it is made, private), or a real
/// directory of this user's that nobody else may enter. Blocking.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", dir.display())),
        Ok(m) if !m.file_type().is_dir() => Err(format!("{} is not a folder (or is a symbolic link)", dir.display())),
        // SAFETY: geteuid has no preconditions and cannot fail.
        Ok(m) if m.uid() != unsafe { libc::geteuid() } => Err(format!("{} belongs to another user", dir.display())),
        Ok(m) if m.permissions().mode() & 0o077 != 0 => Err(format!(
            "{} may be read by other users (mode {:o}); make it private (chmod 700) or name another folder",
            dir.display(),
            m.permissions().mode() & 0o777
        )),
        Ok(_) => Ok(()),
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Store {
    pub fn new(limits: Limits) -> Store {
        Store { limits, mem: Mutex::new(Mem::default()), disk: Mutex::new(None) }
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

    /// Keeps `s` under `id`; false when it is over [`MAX_ENTRY_BYTES`] or cannot be kept.
    /// Blocking (disk): call off the runtime.
    pub fn put(&self, id: &str, s: Stored) -> bool {
        let Ok(json) = serde_json::to_vec(&s) else { return false };
        if json.len() > MAX_ENTRY_BYTES || !valid_id(id) {
            return false;
        }
        self.remember(id, s, json.len());
        // One entry over the whole disk budget is kept in memory only.
        if let Some(path) = self.path(id).filter(|_| json.len() as u64 <= self.limits.disk) {
            if let Err(e) = self.write(&path, &json) {
                tracing::warn!(path = %path.display(), error = %e, "a stored response could not be written to disk");
                return true;
            }
            self.written(id, json.len() as u64);
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

    fn write(&self, path: &Path, json: &[u8]) -> std::io::Result<()> {
        let dir = path.parent().expect("a file in the folder");
        check_dir(dir).map_err(std::io::Error::other)?;
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // Made private here, or (made by someone else meanwhile) checked again.
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => check_dir(dir).map_err(std::io::Error::other)?,
            other => other?,
        }
        let mut nonce = [0u8; 8];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut nonce)?;
        let tmp = path.with_extension(format!("{:016x}.tmp", u64::from_le_bytes(nonce)));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        // Written whole, then renamed: a reader never sees half a file, and a killed server
        // loses nothing the kernel has (only a machine that loses power may).
        let done = f.write_all(json).and_then(|()| std::fs::rename(&tmp, path));
        if done.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        done
    }

    /// Reads a stored file without following links, at most [`MAX_ENTRY_BYTES`].
    fn read(path: &Path) -> Option<Stored> {
        let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path).ok()?;
        let mut bytes = Vec::new();
        f.take(MAX_ENTRY_BYTES as u64 + 1).read_to_end(&mut bytes).ok()?;
        if bytes.len() > MAX_ENTRY_BYTES {
            return None;
        }
        serde_json::from_slice(&bytes).ok()
    }

    /// The response stored under `id`, from memory or disk. Blocking: call off the runtime.
    pub fn get(&self, id: &str) -> Option<Stored> {
        if !valid_id(id) {
            return None;
        }
        // Held while a file is read back, so a delete meanwhile cannot be undone by it.
        let _disk = self.disk.lock().expect("disk lock");
        let hit = self.mem.lock().expect("store lock").entries.get(id).map(|(s, _)| s.clone());
        let s = match hit {
            Some(s) => s,
            None => {
                let s = Store::read(&self.path(id)?)?;
                let size = serde_json::to_vec(&s).map_or(0, |j| j.len());
                self.remember(id, s.clone(), size);
                s
            }
        };
        if self.expired(&s) {
            drop(_disk);
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
        let mut disk = self.disk.lock().expect("disk lock");
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
        if on_disk {
            if let Some(d) = disk.as_mut() {
                if let Some(at) = d.files.iter().position(|f| f.0 == id) {
                    let (_, n, _) = d.files.remove(at).expect("found");
                    d.bytes -= n;
                }
            }
        }
        in_mem || on_disk
    }

    /// The folder's own files (`resp_….json`, and `.tmp` files a crash left), oldest first.
    fn scan(dir: &Path) -> Disk {
        let mut files: Vec<(String, u64, SystemTime)> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let id = name.split('.').next()?;
                let json = name == format!("{id}.json");
                let tmp = name.ends_with(".tmp") && name.split('.').count() == 3;
                let m = e.metadata().ok().filter(|m| valid_id(id) && (json || tmp) && m.file_type().is_file())?;
                let modified = m.modified().ok()?;
                if tmp {
                    // Left by a write that never finished (one under way is younger).
                    if modified.elapsed().is_ok_and(|age| age > Duration::from_secs(60)) {
                        let _ = std::fs::remove_file(e.path());
                    }
                    return None;
                }
                Some((id.to_string(), m.len(), modified))
            })
            .collect();
        files.sort_by_key(|f| f.2);
        let bytes = files.iter().map(|f| f.1).sum();
        Disk { files: files.into(), bytes }
    }

    /// Notes a file written, then removes expired files and the oldest beyond `disk` bytes.
    fn written(&self, id: &str, len: u64) {
        let Some(dir) = &self.limits.dir else { return };
        let mut guard = self.disk.lock().expect("disk lock");
        let d = guard.get_or_insert_with(|| Store::scan(dir));
        if let Some(at) = d.files.iter().position(|f| f.0 == id) {
            let (_, n, _) = d.files.remove(at).expect("found");
            d.bytes -= n;
        }
        d.files.push_back((id.to_string(), len, SystemTime::now()));
        d.bytes += len;
        let cutoff = SystemTime::now() - self.limits.ttl;
        while let Some((oldest, n, at)) = d.files.front().cloned() {
            // The file just written is never its own write's victim.
            if (at >= cutoff && d.bytes <= self.limits.disk) || oldest == id {
                break;
            }
            d.files.pop_front();
            d.bytes -= n;
            let _ = std::fs::remove_file(dir.join(format!("{oldest}.json")));
            let mut m = self.mem.lock().expect("store lock");
            if let Some((_, size)) = m.entries.remove(&oldest) {
                m.bytes -= size;
                m.order.retain(|k| k != &oldest);
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

    fn private_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    #[test]
    fn ids_are_checked_before_any_path_is_made() {
        assert!(valid_id("resp_18ef0a"));
        for bad in ["resp_", "resp_../x", "../resp_1", "resp_1/2", "msg_1", "resp_xyz", "resp_1.json"] {
            assert!(!valid_id(bad), "{bad}");
        }
        let s = store(Some(PathBuf::from("/nonexistent")), 1 << 20, 1 << 20);
        assert!(s.get("resp_../../etc/passwd").is_none());
        assert!(!s.put("../x", entry(1)));
    }

    #[test]
    fn memory_keeps_the_newest_and_disk_brings_back_the_rest() {
        let dir = private_dir();
        let s = store(Some(dir.path().to_path_buf()), 300, 1 << 20);
        for i in 1..=5 {
            assert!(s.put(&format!("resp_{i}"), entry(100)));
        }
        assert!(s.mem.lock().unwrap().bytes <= 300);
        assert!(!s.mem.lock().unwrap().entries.contains_key("resp_1"), "the oldest left memory");
        assert_eq!(s.get("resp_1").map(|e| e.messages), Some(entry(100).messages), "and came back from disk");
        let mode = std::fs::metadata(dir.path().join("resp_1.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A new store on the same folder (a restart) finds it.
        let again = store(Some(dir.path().to_path_buf()), 300, 1 << 20);
        assert!(again.get("resp_3").is_some());
        assert!(again.delete("resp_3"));
        assert!(again.get("resp_3").is_none() && s.path("resp_3").is_some_and(|p| !p.exists()));
    }

    #[test]
    fn the_oldest_of_its_own_files_go_and_nothing_else() {
        let dir = private_dir();
        std::fs::write(dir.path().join("notes.json"), "{}").unwrap();
        let stale = dir.path().join("resp_aa.9.tmp");
        std::fs::write(&stale, "half").unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options().write(true).open(&stale).unwrap().set_modified(old).unwrap();
        std::fs::write(dir.path().join("resp_bb.json.json"), "{}").unwrap();
        let s = store(Some(dir.path().to_path_buf()), 1 << 20, 1000);
        for i in 1..=10 {
            s.put(&format!("resp_{i:x}"), entry(200));
            std::thread::sleep(Duration::from_millis(5));
        }
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(names.contains(&"notes.json".to_string()), "not the store's: kept");
        assert!(names.contains(&"resp_bb.json.json".to_string()), "not named as the store names: kept");
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "a crash's leftovers are cleared: {names:?}");
        let held: u64 = names
            .iter()
            .filter(|n| n.starts_with("resp_"))
            .map(|n| std::fs::metadata(dir.path().join(n)).unwrap().len())
            .sum();
        assert!(held <= 1000, "{held}");
        assert!(names.contains(&"resp_a.json".to_string()) && !names.contains(&"resp_1.json".to_string()), "{names:?}");
        assert!(s.get("resp_1").is_none(), "gone from memory too");
        assert!(!s.put("resp_ff", entry(MAX_ENTRY_BYTES)));
        // One entry over the whole disk budget is kept, in memory only.
        assert!(s.put("resp_fe", entry(2000)));
        assert!(s.get("resp_fe").is_some() && !dir.path().join("resp_fe.json").exists());
        let old = Stored { created_at: 0, ..entry(1) };
        s.put("resp_0", old);
        assert!(s.get("resp_0").is_none(), "an expired response is gone");
    }

    #[test]
    fn a_folder_others_can_reach_or_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_dir(dir.path()).is_err());
        let s = store(Some(dir.path().to_path_buf()), 1 << 20, 1 << 20);
        assert!(s.put("resp_1", entry(1)), "kept in memory");
        assert!(!dir.path().join("resp_1.json").exists(), "but not written there");
        let private = private_dir();
        assert!(check_dir(private.path()).is_ok());
        assert!(check_dir(&private.path().join("new")).is_ok(), "a missing folder is made private");
        let link = private.path().join("link");
        std::os::unix::fs::symlink(private.path(), &link).unwrap();
        assert!(check_dir(&link).is_err());
        // A link planted where a response's file goes is not followed when read.
        let target = private.path().join("secret");
        std::fs::write(&target, serde_json::to_vec(&entry(1)).unwrap()).unwrap();
        std::os::unix::fs::symlink(&target, private.path().join("resp_7.json")).unwrap();
        let s = store(Some(private.path().to_path_buf()), 1 << 20, 1 << 20);
        assert!(s.get("resp_7").is_none());
    }
}
