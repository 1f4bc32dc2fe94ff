//! Adding a file to the bucket by path (the CLI's `add`, `POST /admin/models`): checked to be a
//! readable regular GGUF file, then hard-linked into the models folder, or copied (under a
//! temporary name, renamed once whole) when a link cannot be made, e.g. across filesystems.

use model_bucket_shared::catalog::{add_custom_id, valid_custom_id};
use model_bucket_shared::{gguf, hash, Catalog};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("custom ID {0:?} must be 1-128 characters of [A-Za-z0-9._:-]")]
    BadId(String),
    #[error("the path must be absolute: {0}")]
    Relative(PathBuf),
    #[error("{path}: {why}")]
    Unusable { path: PathBuf, why: String },
    #[error("{0} already exists with other content; rename the file first")]
    Clash(PathBuf),
    #[error("the ID {id:?} already names {other}")]
    IdTaken { id: String, other: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl AddError {
    /// Whether the caller's input is at fault (a 400), rather than the server's folder.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, AddError::Io { .. })
    }
}

fn io_err(what: String) -> impl FnOnce(io::Error) -> AddError {
    move |source| AddError::Io { what, source }
}

/// Checks that `src` is a regular file (not a folder, device or FIFO, which could block the
/// reader), readable, and a GGUF model whose header parses.
pub fn check(src: &Path) -> Result<(), AddError> {
    let unusable = |why: String| AddError::Unusable { path: src.to_path_buf(), why };
    let meta = fs::metadata(src).map_err(|e| unusable(e.to_string()))?;
    if !meta.is_file() {
        return Err(unusable("not a regular file".into()));
    }
    gguf::read_header(src).map_err(|e| unusable(format!("not a usable GGUF model: {e}")))?;
    Ok(())
}

/// Places `src` (an absolute path) in `dir` under its own file name and records `custom_id` for
/// it; `copied(done, total)` reports a copy's progress in bytes. A file of the same name and
/// content already there is kept. `cat` is the current catalog, for the ID's uniqueness.
/// Returns the placed file and its SHA-256.
pub fn place_file(
    dir: &Path,
    src: &Path,
    custom_id: Option<&str>,
    cat: &Catalog,
    copied: &mut dyn FnMut(u64, u64),
) -> Result<(PathBuf, String), AddError> {
    if let Some(id) = custom_id.filter(|id| !valid_custom_id(id)) {
        return Err(AddError::BadId(id.to_string()));
    }
    if !src.is_absolute() {
        return Err(AddError::Relative(src.to_path_buf()));
    }
    check(src)?;
    fs::create_dir_all(dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
    let name = src.file_name().ok_or_else(|| AddError::Unusable { path: src.into(), why: "no file name".into() })?;
    let dest = dir.join(name);
    if dest.exists() {
        if !same_content(src, &dest).map_err(io_err(format!("cannot compare with {}", dest.display())))? {
            return Err(AddError::Clash(dest));
        }
    } else {
        link_or_copy(src, &dest, copied).map_err(io_err(format!(
            "cannot copy {} to {}",
            src.display(),
            dest.display()
        )))?;
    }
    let sha = hash::sha256_file(&dest, None).map_err(io_err(format!("cannot read {}", dest.display())))?;
    if let Some(id) = custom_id {
        if let Some(other) = cat.resolve(id).filter(|m| m.sha256 != sha) {
            return Err(AddError::IdTaken { id: id.to_string(), other: other.id.to_string() });
        }
        add_custom_id(dir, &sha, id).map_err(io_err("cannot record the custom ID".into()))?;
    }
    Ok((dest, sha))
}

fn link_or_copy(src: &Path, dest: &Path, copied: &mut dyn FnMut(u64, u64)) -> io::Result<()> {
    if fs::hard_link(src, dest).is_ok() {
        return Ok(());
    }
    let tmp = dest.with_file_name(format!(".{}.partial", dest.file_name().unwrap_or_default().to_string_lossy()));
    let total = fs::metadata(src)?.len();
    let mut copy = || -> io::Result<()> {
        let mut from = fs::File::open(src)?;
        let mut to = fs::File::create(&tmp)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0;
        loop {
            let n = from.read(&mut buf)?;
            if n == 0 {
                break;
            }
            to.write_all(&buf[..n])?;
            done += n as u64;
            copied(done, total);
        }
        to.sync_all()?;
        fs::rename(&tmp, dest)
    };
    let result = copy();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    if fs::metadata(a)?.len() != fs::metadata(b)?.len() {
        return Ok(false);
    }
    Ok(hash::sha256_file(a, None)? == hash::sha256_file(b, None)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_gguf_files_are_taken() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::default();
        let mut none = |_: u64, _: u64| {};
        let bucket = dir.path().join("bucket");
        let text = dir.path().join("notes.gguf");
        fs::write(&text, "not a model").unwrap();
        let fifo = dir.path().join("pipe.gguf");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        for (src, why) in [
            (text.as_path(), "not a usable GGUF"),
            (fifo.as_path(), "not a regular file"),
            (dir.path(), "not a regular file"),
            (Path::new("/nonexistent/x.gguf"), "No such file"),
        ] {
            let e = place_file(&bucket, src, None, &cat, &mut none).unwrap_err();
            assert!(e.is_client_error() && e.to_string().contains(why), "{src:?}: {e}");
        }
        let e = place_file(&bucket, Path::new("x.gguf"), None, &cat, &mut none).unwrap_err();
        assert!(matches!(e, AddError::Relative(_)), "{e}");
        let e = place_file(&bucket, &text, Some("bad id!"), &cat, &mut none).unwrap_err();
        assert!(matches!(e, AddError::BadId(_)), "{e}");
        assert!(!bucket.join("notes.gguf").exists(), "nothing was placed");
    }
}
