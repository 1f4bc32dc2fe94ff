//! Memory of processes, read from `/proc`.

/// Resident set size of process `pid` (or this process when `None`), in bytes; `None` when it
/// cannot be read (the process is gone, or this is not Linux).
pub fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_string(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_rss() {
        let rss = super::rss_bytes(None).expect("linux /proc");
        assert!(rss > 1 << 20);
        assert!(super::rss_bytes(Some(u32::MAX)).is_none());
    }
}
