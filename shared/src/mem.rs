//! Memory: of processes, read from `/proc`, and sizes as people read them.

/// Resident set size of process `pid` (or this process when `None`), in bytes; `None` when it
/// cannot be read (the process is gone, or this is not Linux).
pub fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// The anonymous part of [`rss_bytes`]: memory the process allocated, without the pages of
/// files it maps (a model's weights come and go there as they are used).
pub fn anon_rss_bytes(pid: Option<u32>) -> Option<u64> {
    status_kib(pid, "RssAnon:")
}

/// A `kB` line of a process's `/proc/PID/status`, in bytes.
fn status_kib(pid: Option<u32>, key: &str) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_string(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Memory this machine (or this process's cgroup, when it is limited) has, in bytes.
pub fn total_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let total = line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024;
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|s| s.trim().parse::<u64>().ok());
    Some(cgroup.map_or(total, |c| c.min(total)))
}

/// Renders bytes for people: `512 B`, `93.8 MiB`, `1.2 GiB` (binary units, one decimal).
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_rss() {
        let rss = super::rss_bytes(None).expect("linux /proc");
        assert!(rss > 1 << 20);
        assert!(super::rss_bytes(Some(u32::MAX)).is_none());
        assert!(super::total_memory().expect("linux /proc") > rss);
    }
}
