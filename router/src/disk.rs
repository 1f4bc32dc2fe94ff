//! Free space on a filesystem, for what writes large files into the models folder (pulls,
//! `add`'s copies): they check first rather than fail halfway.

use std::path::Path;

/// Bytes an unprivileged user may still write on `dir`'s filesystem.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}
