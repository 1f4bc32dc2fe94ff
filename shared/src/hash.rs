//! SHA-256 of whole model files, with progress for the multi-GiB ones.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Progress of a long file operation: `(bytes done, bytes total)`.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// Returns the lowercase hex SHA-256 of the file at `path`, calling `progress` after every
/// 8 MiB read (and once at the end).
pub fn sha256_file(path: &Path, progress: Option<Progress<'_>>) -> io::Result<String> {
    let mut file = File::open(path)?;
    let total = file.metadata()?.len();
    hash_all(&mut file, total, progress)
}

/// Returns the lowercase hex SHA-256 of what `r` holds from where it is to its end.
pub fn sha256_reader(r: &mut impl Read) -> io::Result<String> {
    hash_all(r, 0, None)
}

fn hash_all(r: &mut impl Read, total: u64, progress: Option<Progress<'_>>) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let mut last_report = 0u64;
    let mut progress = progress;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        if let Some(p) = progress.as_mut() {
            if done - last_report >= 8 << 20 {
                p(done, total);
                last_report = done;
            }
        }
    }
    if let Some(p) = progress.as_mut() {
        p(done, total);
    }
    Ok(hex::encode(hasher.finalize()))
}
