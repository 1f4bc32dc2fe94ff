//! A model file in the page cache: read ahead of its load (while the model it replaces
//! drains, the load then maps pages already in memory), or dropped from it (to measure a load
//! from disk).

use std::path::Path;

/// Asks the kernel to read all of `path` into the page cache (`posix_fadvise(WILLNEED)`); it
/// returns once the reads are queued.
pub fn page_in(path: &Path) -> std::io::Result<()> {
    advise(path, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED)
}

/// Tells the kernel `path`'s cached pages are not needed (`posix_fadvise(DONTNEED)`): the next
/// read comes from the disk. For measuring loads from disk.
pub fn page_out(path: &Path) -> std::io::Result<()> {
    advise(path, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED)
}

fn advise(path: &Path, advice: nix::fcntl::PosixFadviseAdvice) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path)?;
    nix::fcntl::posix_fadvise(f.as_raw_fd(), 0, 0, advice).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advises_files_and_reports_missing_ones() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![7u8; 1 << 20]).unwrap();
        page_out(f.path()).unwrap();
        page_in(f.path()).unwrap();
        assert_eq!(std::fs::read(f.path()).unwrap().len(), 1 << 20);
        assert!(page_in(Path::new("/nonexistent/model.gguf")).is_err());
    }
}
