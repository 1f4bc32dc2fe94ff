//! IDs for responses and tool calls: unique within this process, and across restarts by the
//! clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// `prefix` followed by the time in nanoseconds and a sequence number, in hex.
pub fn unique(prefix: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{:x}{seq:x}", now_nanos())
}

/// `prefix` followed by 128 random bits in hex: an ID nobody can guess (`None` when the
/// system's random source cannot be read).
pub fn random(prefix: &str) -> Option<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).ok()?;
    Some(format!("{prefix}{:032x}", u128::from_le_bytes(bytes)))
}

/// Nanoseconds since the Unix epoch.
pub fn now_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_differ() {
        assert_ne!(super::unique("msg_"), super::unique("msg_"));
        assert!(super::unique("toolu_").starts_with("toolu_"));
        let (a, b) = (super::random("resp_").unwrap(), super::random("resp_").unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 5 + 32);
    }
}
