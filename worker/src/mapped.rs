//! The model file's mapping after load. llama.cpp maps the file and reads every weight through
//! the mapping; the weights it repacks for the CPU's kernels (most of a Q4_K model's on AVX2)
//! are copied into buffers of their own, yet their file pages stay mapped and counted in the
//! worker's resident memory: a real model's worker would hold its weights twice in what the
//! router measures, though one copy is clean page cache. Once loaded, the worker lets go of the
//! mapping's pages (`madvise(MADV_DONTNEED)`); those still read at inference come back from the
//! page cache at their first use, and only they count again.

use std::path::Path;

/// Lets go of the pages of every mapping of `path` in this process; returns the bytes of the
/// ranges it advised.
pub fn release(path: &Path) -> std::io::Result<u64> {
    let file = std::fs::canonicalize(path)?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut released = 0;
    for (start, end) in ranges_of(&maps, &file.to_string_lossy()) {
        let len = end - start;
        // SAFETY: the range is a whole mapping of the model file, read-only, that this process
        // made (llama.cpp's); MADV_DONTNEED on a file mapping drops its pages from this
        // process only, and a later read maps them again from the file's pages.
        let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        if rc == 0 {
            released += len as u64;
        }
    }
    Ok(released)
}

/// The address ranges of `/proc/self/maps` lines that map `file` read-only.
fn ranges_of(maps: &str, file: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(6, ' ');
            let range = fields.next()?;
            let perms = fields.next()?;
            let path = fields.nth(3)?.trim_start();
            if path != file || perms.contains('w') {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            Some((usize::from_str_radix(a, 16).ok()?, usize::from_str_radix(b, 16).ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_read_only_mappings_of_one_file() {
        let maps = "\
7f00a0000000-7f00b0000000 r--s 00000000 103:02 1234                      /models/m.gguf
7f00b0000000-7f00b0001000 rw-p 00000000 103:02 1234                      /models/m.gguf
7f00c0000000-7f00c0002000 r--s 00000000 103:02 99                        /models/other.gguf
7f00d0000000-7f00d0001000 r-xp 00000000 00:00 0 
";
        assert_eq!(ranges_of(maps, "/models/m.gguf"), vec![(0x7f00a0000000, 0x7f00b0000000)]);
        assert!(ranges_of(maps, "/models/none.gguf").is_empty());
    }

    #[test]
    fn resident_memory_falls_once_a_mapping_is_released() {
        use std::os::fd::AsRawFd;
        let f = tempfile::NamedTempFile::new().unwrap();
        let len = 64usize << 20;
        std::fs::write(f.path(), vec![1u8; len]).unwrap();
        let file = std::fs::File::open(f.path()).unwrap();
        // SAFETY: a fresh read-only shared mapping of a file this test wrote, unmapped below.
        let p =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0) };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: reads within the mapping made above.
        let sum: u64 = (0..len).step_by(4096).map(|i| u64::from(unsafe { *(p as *const u8).add(i) })).sum();
        assert_eq!(sum, (len / 4096) as u64);
        let before = model_bucket_shared::mem::rss_bytes(None).unwrap();
        assert_eq!(release(f.path()).unwrap(), len as u64);
        let after = model_bucket_shared::mem::rss_bytes(None).unwrap();
        assert!(before - after > (len as u64) / 2, "{before} -> {after}");
        // SAFETY: the mapping is still valid; its pages come back from the file.
        assert_eq!(unsafe { *(p as *const u8).add(len - 1) }, 1);
        // SAFETY: unmaps the mapping made above.
        unsafe { libc::munmap(p, len) };
    }
}
