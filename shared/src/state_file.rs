//! The models folder's own small files (the hash index, the custom IDs) are shared by every
//! process that opens the folder (`serve`, `add`, `list`, a second server). Each update is a
//! read-modify-write under [`FolderLock`], written with [`write_atomic`], so two processes never
//! lose each other's entries and a reader never sees half a file.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The lock file in a models folder.
pub const LOCK_FILE: &str = ".model-bucket.lock";

/// An exclusive lock on a models folder's state files, held until dropped.
pub struct FolderLock(#[allow(dead_code)] File);

impl FolderLock {
    /// Waits for the folder's lock (`flock`, released when the holder exits, however it exits).
    pub fn acquire(dir: &Path) -> io::Result<FolderLock> {
        let f = File::options().create(true).truncate(false).write(true).open(dir.join(LOCK_FILE))?;
        f.lock()?;
        Ok(FolderLock(f))
    }
}

/// Writes `bytes` to `path` through a temporary file of a name no other writer uses, synced,
/// then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.{}.tmp", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    let written = (|| {
        let mut f = File::create_new(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_under_the_lock_never_lose_an_update() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counter");
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..25 {
                        let _lock = FolderLock::acquire(dir.path()).unwrap();
                        let n: u64 = fs::read_to_string(&path).ok().and_then(|t| t.parse().ok()).unwrap_or(0);
                        write_atomic(&path, (n + 1).to_string().as_bytes()).unwrap();
                    }
                });
            }
        });
        assert_eq!(fs::read_to_string(&path).unwrap(), "200");
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
