//! The pulls a server runs at once: at most [`MAX_PULLS`], and one per destination file.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Downloads one server runs at once.
pub const MAX_PULLS: usize = 2;

#[derive(Default)]
pub struct ActivePulls {
    /// (pulls running, destination files claimed).
    inner: Mutex<(usize, HashSet<String>)>,
}

/// A running pull's place; dropping it gives the place (and its file) back.
pub struct PullTicket {
    pulls: Arc<ActivePulls>,
    file: Option<String>,
}

impl ActivePulls {
    /// A place for one more pull, or `None` when [`MAX_PULLS`] run already.
    pub fn start(self: &Arc<Self>) -> Option<PullTicket> {
        let mut g = self.inner.lock().expect("pulls lock");
        if g.0 >= MAX_PULLS {
            return None;
        }
        g.0 += 1;
        Some(PullTicket { pulls: self.clone(), file: None })
    }
}

impl PullTicket {
    /// Claims destination `file`; false when another pull has it.
    pub fn claim(&mut self, file: &str) -> bool {
        let mut g = self.pulls.inner.lock().expect("pulls lock");
        if !g.1.insert(file.to_string()) {
            return false;
        }
        self.file = Some(file.to_string());
        true
    }
}

impl Drop for PullTicket {
    fn drop(&mut self) {
        let mut g = self.pulls.inner.lock().expect("pulls lock");
        g.0 -= 1;
        if let Some(f) = self.file.take() {
            g.1.remove(&f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_at_once_and_one_per_file() {
        let pulls = Arc::new(ActivePulls::default());
        let mut a = pulls.start().unwrap();
        let mut b = pulls.start().unwrap();
        assert!(pulls.start().is_none(), "a third waits for a place");
        assert!(a.claim("x.gguf"));
        assert!(!b.claim("x.gguf"), "one pull per file");
        drop(a);
        assert!(b.claim("x.gguf"), "freed with its ticket");
        assert!(pulls.start().is_some());
    }
}
