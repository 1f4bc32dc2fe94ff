//! The download itself: into `.NAME.part` in the bucket (a name the catalog and the watcher
//! ignore), resumed with `Range` after a cut or a restart, checked for size and SHA-256, then
//! renamed into place. A failed check removes the partial file: nothing half-written stays.

use model_bucket_shared::hash::sha256_file;
use model_bucket_shared::index::{stamp, HashIndex};
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Hub, PullError};

/// Tries per download before giving up (each resumes where the last stopped).
const ATTEMPTS: u32 = 5;

/// One file to download.
#[derive(Debug, Clone)]
pub struct Target {
    pub repo: String,
    pub revision: String,
    /// Path inside the repo.
    pub file: String,
    /// Bytes.
    pub size: u64,
    pub sha256: Option<String>,
}

impl Target {
    /// The name the file gets in the bucket (the last part of its repo path).
    pub fn file_name(&self) -> &str {
        self.file.rsplit('/').next().unwrap_or(&self.file)
    }
}

/// What a download reports while it runs.
pub trait Progress {
    /// The download of `total` bytes starts (again) with `done` already on disk.
    fn start(&mut self, total: u64, done: u64);
    fn advance(&mut self, done: u64);
    /// All bytes are in; the SHA-256 is being checked.
    fn verifying(&mut self);
    /// Whether whoever asked has gone: the download stops (its part stays, to resume).
    fn cancelled(&self) -> bool {
        false
    }
}

/// The partial file of `name` in `dir`.
pub fn part_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.part"))
}

/// Downloads `t` into `dir`; returns the final path. A file already there with the same content
/// is left alone.
pub fn fetch(hub: &Hub, t: &Target, dir: &Path, progress: &mut dyn Progress) -> Result<PathBuf, PullError> {
    fs::create_dir_all(dir)?;
    let name = t.file_name().to_string();
    let dest = dir.join(&name);
    if dest.exists() {
        return already_there(&dest, t);
    }
    let part = part_path(dir, &name);
    let mut have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    if have > t.size {
        fs::remove_file(&part)?;
        have = 0;
    }
    check_space(dir, t.size - have)?;

    let mut buf = vec![0u8; 1 << 20];
    let mut attempt = 0;
    while have < t.size {
        attempt += 1;
        match copy_from(hub, t, &part, have, &mut buf, progress) {
            Ok(n) => have = n,
            Err(e @ (PullError::Io(_) | PullError::Network { .. })) if attempt < ATTEMPTS => {
                have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
                tracing::warn!(attempt, have, error = %e, "download interrupted; resuming");
                std::thread::sleep(Duration::from_millis(300 * attempt as u64));
            }
            Err(PullError::Io(e)) => return Err(PullError::Interrupted { attempts: attempt, message: e.to_string() }),
            Err(e) => {
                if matches!(e, PullError::Size { .. }) {
                    let _ = fs::remove_file(&part);
                }
                return Err(e);
            }
        }
    }
    let got = fs::metadata(&part)?.len();
    if got != t.size {
        let _ = fs::remove_file(&part);
        return Err(PullError::Size { file: name, expected: t.size, got });
    }
    progress.verifying();
    let sha = sha256_file(&part, None)?;
    if let Some(expected) = &t.sha256 {
        if !sha.eq_ignore_ascii_case(expected) {
            let _ = fs::remove_file(&part);
            return Err(PullError::Checksum { file: name, expected: expected.clone(), got: sha });
        }
    }
    fs::rename(&part, &dest)?;
    // The catalog need not hash it again.
    let mut index = HashIndex::load(dir);
    index.put(&name, &stamp(&fs::metadata(&dest)?), &sha);
    index.save();
    Ok(dest)
}

/// Appends the body from `have` on to `part`; returns the bytes on disk when the body ended.
fn copy_from(
    hub: &Hub,
    t: &Target,
    part: &Path,
    have: u64,
    buf: &mut [u8],
    progress: &mut dyn Progress,
) -> Result<u64, PullError> {
    let mut body = hub.open(&t.repo, &t.revision, &t.file, have)?;
    // A server that ignores the range sends everything again: start over.
    let mut out = OpenOptions::new().create(true).write(true).truncate(body.offset == 0).open(part)?;
    let mut done = body.offset;
    if done > 0 {
        use std::io::Seek;
        out.seek(std::io::SeekFrom::Start(done))?;
    }
    progress.start(t.size, done);
    loop {
        let n = body.reader.read(buf)?;
        if n == 0 {
            break;
        }
        if done + n as u64 > t.size {
            return Err(PullError::Size { file: t.file_name().into(), expected: t.size, got: done + n as u64 });
        }
        out.write_all(&buf[..n])?;
        done += n as u64;
        progress.advance(done);
        if progress.cancelled() {
            return Err(PullError::Cancelled);
        }
    }
    out.sync_all()?;
    if done < t.size {
        return Err(PullError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the connection closed at {done} of {} bytes", t.size),
        )));
    }
    Ok(done)
}

/// `dest` exists: fine when it is the same file (by SHA-256 when the hub gives one, else size).
fn already_there(dest: &Path, t: &Target) -> Result<PathBuf, PullError> {
    let same = match &t.sha256 {
        Some(expected) => sha256_file(dest, None)?.eq_ignore_ascii_case(expected),
        None => fs::metadata(dest)?.len() == t.size,
    };
    if same {
        Ok(dest.to_path_buf())
    } else {
        Err(PullError::Exists { path: dest.display().to_string() })
    }
}

/// Fails before downloading when `dir`'s filesystem has less than `need` bytes free.
fn check_space(dir: &Path, need: u64) -> Result<(), PullError> {
    let free = crate::disk::free_bytes(dir)?;
    if free < need {
        return Err(PullError::DiskFull { dir: dir.display().to_string(), need, free });
    }
    Ok(())
}
