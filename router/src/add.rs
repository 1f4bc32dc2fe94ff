//! Adding a file to the bucket by path (the CLI's `add`, `POST /admin/models`). The file is
//! opened once, without following a final symbolic link and without blocking (a FIFO swapped in
//! behind the path cannot hang a thread), and everything after reads that handle: its type,
//! owner, mode and size (`fstat`), its GGUF header, and the copy. It is hard-linked into the
//! models folder only when it is a regular file of the server's own user that nobody else may
//! write (another user could otherwise change a model's bytes behind its ID); otherwise it is
//! copied, holes kept as holes, after checking the folder has room, under a temporary name
//! renamed once whole. Errors never quote the file's bytes.

use model_bucket_shared::catalog::{add_custom_id, valid_custom_id};
use model_bucket_shared::{gguf, hash, Catalog};
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The largest file added, in bytes.
pub const MAX_ADD_BYTES: u64 = 512 << 30;

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
    #[error("the models folder {dir} has {free} bytes free; {need} are needed")]
    NoRoom { dir: PathBuf, need: u64, free: u64 },
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
        !matches!(self, AddError::Io { .. } | AddError::NoRoom { .. })
    }
}

fn io_err(what: String) -> impl FnOnce(io::Error) -> AddError {
    move |source| AddError::Io { what, source }
}

/// A file to add, opened once.
pub struct Source {
    file: File,
    meta: fs::Metadata,
}

/// Opens `src` and checks it on the handle: a regular file (not a link, folder, device or
/// FIFO), at most [`MAX_ADD_BYTES`], owned by this process's user when `own_only`, with a GGUF
/// model's header.
pub fn open(src: &Path, own_only: bool) -> Result<Source, AddError> {
    let unusable = |why: String| AddError::Unusable { path: src.to_path_buf(), why };
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(src)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => unusable("a symbolic link; give the path of the file itself".into()),
            _ => unusable(e.to_string()),
        })?;
    let meta = file.metadata().map_err(|e| unusable(e.to_string()))?;
    if !meta.is_file() {
        return Err(unusable("not a regular file".into()));
    }
    if meta.len() > MAX_ADD_BYTES {
        return Err(unusable(format!("{} bytes; at most {MAX_ADD_BYTES} are added", meta.len())));
    }
    if own_only && meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(unusable(
            "owned by another user: without the admin key only files of the server's own user are added".into(),
        ));
    }
    gguf::read_header_from(&file, meta.len()).map_err(|e| unusable(format!("not a usable GGUF model: {e}")))?;
    Ok(Source { file, meta })
}

/// What [`place_file`] did.
pub struct Placed {
    pub path: PathBuf,
    pub sha256: String,
    /// Whether the file is new in the folder (a same file already there was kept).
    pub new: bool,
}

/// Places `src` (an absolute path) in `dir` under its own file name and records `custom_id` for
/// it; `copied(done, total)` reports a copy's progress in bytes. A file of the same name and
/// content already there is kept. `cat` is the current catalog, for the ID's uniqueness;
/// `own_only` refuses files of other users (see [`open`]).
pub fn place_file(
    dir: &Path,
    src: &Path,
    custom_id: Option<&str>,
    cat: &Catalog,
    own_only: bool,
    copied: &mut dyn FnMut(u64, u64),
) -> Result<Placed, AddError> {
    if let Some(id) = custom_id.filter(|id| !valid_custom_id(id)) {
        return Err(AddError::BadId(id.to_string()));
    }
    if !src.is_absolute() {
        return Err(AddError::Relative(src.to_path_buf()));
    }
    let mut source = open(src, own_only)?;
    fs::create_dir_all(dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
    let name = src.file_name().ok_or_else(|| AddError::Unusable { path: src.into(), why: "no file name".into() })?;
    let dest = dir.join(name);
    let new = !dest.exists();
    if !new {
        let same =
            same_content(&mut source, &dest).map_err(io_err(format!("cannot compare with {}", dest.display())))?;
        if !same {
            return Err(AddError::Clash(dest));
        }
    } else if !linkable(&source.meta) || link(&source, &dest).is_err() {
        let need = source.meta.blocks() * 512;
        check_room(dir, need)?;
        copy(&mut source, &dest, copied).map_err(io_err(format!(
            "cannot copy {} to {}",
            src.display(),
            dest.display()
        )))?;
    }
    let sha = hash::sha256_file(&dest, None).map_err(io_err(format!("cannot read {}", dest.display())))?;
    if let Some(id) = custom_id {
        if let Some(other) = cat.resolve(id).filter(|m| m.sha256 != sha) {
            if new {
                let _ = fs::remove_file(&dest);
            }
            return Err(AddError::IdTaken { id: id.to_string(), other: other.id.to_string() });
        }
        add_custom_id(dir, &sha, id).map_err(io_err("cannot record the custom ID".into()))?;
    }
    Ok(Placed { path: dest, sha256: sha, new })
}

/// Whether a file may be linked rather than copied: this user's, and writable by nobody else.
fn linkable(meta: &fs::Metadata) -> bool {
    meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o022 == 0
}

/// Links the opened file (not whatever its path names now) as `dest`, and checks that `dest` is it.
fn link(source: &Source, dest: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let by_fd = format!("/proc/self/fd/{}", source.file.as_raw_fd());
    nix::unistd::linkat(None, Path::new(&by_fd), None, dest, nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW)
        .map_err(io::Error::from)?;
    let placed = fs::symlink_metadata(dest)?;
    if (placed.dev(), placed.ino()) != (source.meta.dev(), source.meta.ino()) {
        let _ = fs::remove_file(dest);
        return Err(io::Error::other("the linked file is not the one opened"));
    }
    Ok(())
}

/// Fails when `dir`'s filesystem has less than `need` bytes free.
fn check_room(dir: &Path, need: u64) -> Result<(), AddError> {
    let free =
        crate::disk::free_bytes(dir).map_err(io_err(format!("cannot read the free space of {}", dir.display())))?;
    if free < need {
        return Err(AddError::NoRoom { dir: dir.to_path_buf(), need, free });
    }
    Ok(())
}

/// Copies the opened file to `dest` through a temporary name; blocks of zeros become holes.
fn copy(source: &mut Source, dest: &Path, copied: &mut dyn FnMut(u64, u64)) -> io::Result<()> {
    let tmp = dest.with_file_name(format!(".{}.partial", dest.file_name().unwrap_or_default().to_string_lossy()));
    let total = source.meta.len();
    let mut copy = || -> io::Result<()> {
        source.file.rewind()?;
        let mut to = File::create(&tmp)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0;
        loop {
            let n = source.file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            if buf[..n].iter().all(|&b| b == 0) {
                to.seek(io::SeekFrom::Current(n as i64))?;
            } else {
                to.write_all(&buf[..n])?;
            }
            done += n as u64;
            copied(done, total);
        }
        // A file that ends in a hole still has its length.
        to.set_len(done)?;
        to.sync_all()?;
        fs::rename(&tmp, dest)
    };
    let result = copy();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn same_content(a: &mut Source, b: &Path) -> io::Result<bool> {
    if a.meta.len() != fs::metadata(b)?.len() {
        return Ok(false);
    }
    a.file.rewind()?;
    Ok(hash::sha256_reader(&mut a.file)? == hash::sha256_file(b, None)?)
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
            let e = place_file(&bucket, src, None, &cat, false, &mut none).err().unwrap();
            assert!(e.is_client_error() && e.to_string().contains(why), "{src:?}: {e}");
        }
        let e = place_file(&bucket, Path::new("x.gguf"), None, &cat, false, &mut none).err().unwrap();
        assert!(matches!(e, AddError::Relative(_)), "{e}");
        let e = place_file(&bucket, &text, Some("bad id!"), &cat, false, &mut none).err().unwrap();
        assert!(matches!(e, AddError::BadId(_)), "{e}");
        assert!(!bucket.join("notes.gguf").exists(), "nothing was placed");
        // The bytes of a file that is not a model are not quoted.
        let e = place_file(&bucket, &text, None, &cat, false, &mut none).err().unwrap().to_string();
        // (The file's path, a random temporary one, may hold anything.)
        let e = e.replace(&text.display().to_string(), "FILE");
        assert!(!e.contains("110") && !e.contains("6e"), "{e}");
        // A symbolic link is not followed.
        let link = dir.path().join("link.gguf");
        std::os::unix::fs::symlink(&text, &link).unwrap();
        let e = place_file(&bucket, &link, None, &cat, false, &mut none).err().unwrap().to_string();
        assert!(e.contains("symbolic link"), "{e}");
    }

    #[test]
    fn a_copy_keeps_holes_as_holes() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("sparse.gguf");
        let mut header = b"GGUF".to_vec();
        header.extend(3u32.to_le_bytes());
        header.extend([0u8; 16]);
        fs::write(&src, &header).unwrap();
        File::options().write(true).open(&src).unwrap().set_len(256 << 20).unwrap();
        // Writable by others: copied, not linked.
        fs::set_permissions(&src, fs::Permissions::from_mode(0o666)).unwrap();
        let bucket = dir.path().join("bucket");
        let placed = place_file(&bucket, &src, None, &Catalog::default(), false, &mut |_, _| {}).ok().unwrap();
        let meta = fs::metadata(&placed.path).unwrap();
        assert_eq!(meta.len(), 256 << 20);
        assert_ne!(meta.ino(), fs::metadata(&src).unwrap().ino());
        assert!(meta.blocks() * 512 < 8 << 20, "{} bytes written for a 256 MiB hole", meta.blocks() * 512);
        assert_eq!(fs::read(&placed.path).unwrap()[..header.len()], header[..]);
    }
}
