//! The host-memory prompt cache: KV states of prefixes pushed out of the slots, bounded in bytes.
//!
//! An entry is a sequence's serialized state (from llama.cpp) and the tokens it holds, from
//! position 0. Invariants: `bytes` is the sum of the entries' state lengths and never exceeds
//! `limit`; no entry's tokens are a prefix of another's (the longer one serves both).

use llama_cpp_2::token::LlamaToken;

use crate::engine::reuse::common_prefix;

pub struct Entry {
    pub tokens: Vec<LlamaToken>,
    /// Serialized sequence state, as llama.cpp wrote it.
    pub state: Vec<u8>,
    /// Last use (larger is more recent).
    pub used: u64,
}

pub struct MemoryCache {
    entries: Vec<Entry>,
    bytes: usize,
    limit: usize,
}

impl MemoryCache {
    /// A cache holding at most `limit` bytes of states (0 turns it off).
    pub fn new(limit: usize) -> MemoryCache {
        MemoryCache { entries: Vec::new(), bytes: 0, limit }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Bytes of states it may hold.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes of states held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The entry sharing the longest prefix with `prompt` among those `usable(entry length,
    /// shared)` accepts, as `(index, shared tokens)`; ties go to the shorter state (cheaper to
    /// restore). `None` when nothing is shared.
    pub fn best(&self, prompt: &[LlamaToken], usable: impl Fn(usize, usize) -> bool) -> Option<(usize, usize)> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, prompt), e.state.len(), e.tokens.len()))
            .filter(|&(_, n, _, len)| n > 0 && usable(len, n))
            .map(|(i, n, bytes, _)| (i, n, bytes))
            .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
            .map(|(i, n, _)| (i, n))
    }

    /// Whether some entry already holds `tokens` (as a prefix of its own); marks it used.
    pub fn covers(&mut self, tokens: &[LlamaToken], now: u64) -> bool {
        match self.entries.iter_mut().find(|e| e.tokens.starts_with(tokens)) {
            Some(e) => {
                e.used = now;
                true
            }
            None => false,
        }
    }

    /// Stores a state, dropping the entries it supersedes (its own prefixes) and then the least
    /// recently used until it fits. A state larger than the whole cache is not stored; returns
    /// whether it was.
    pub fn insert(&mut self, tokens: Vec<LlamaToken>, state: Vec<u8>, now: u64) -> bool {
        if state.len() > self.limit {
            return false;
        }
        let mut i = 0;
        while i < self.entries.len() {
            if tokens.starts_with(&self.entries[i].tokens) {
                self.remove(i);
            } else {
                i += 1;
            }
        }
        while self.bytes + state.len() > self.limit {
            let oldest =
                (0..self.entries.len()).min_by_key(|&i| self.entries[i].used).expect("over the limit means not empty");
            self.remove(oldest);
        }
        self.bytes += state.len();
        self.entries.push(Entry { tokens, state, used: now });
        true
    }

    /// Changes the bytes it may hold; entries beyond it must be taken out first
    /// ([`MemoryCache::pop_oldest`]), so that they can be written elsewhere before they go.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Takes out the least recently used entry, if any.
    pub fn pop_oldest(&mut self) -> Option<Entry> {
        let oldest = (0..self.entries.len()).min_by_key(|&i| self.entries[i].used)?;
        Some(self.take(oldest))
    }

    /// Takes entry `i` out (its state moves into a slot, which holds it from then on).
    pub fn take(&mut self, i: usize) -> Entry {
        let e = self.entries.swap_remove(i);
        self.bytes -= e.state.len();
        e
    }

    fn remove(&mut self, i: usize) {
        let e = self.entries.swap_remove(i);
        self.bytes -= e.state.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(v: &[i32]) -> Vec<LlamaToken> {
        v.iter().map(|&t| LlamaToken(t)).collect()
    }

    #[test]
    fn best_match_is_the_longest_shared_prefix() {
        let mut c = MemoryCache::new(100);
        assert!(c.insert(toks(&[1, 2, 3]), vec![0; 10], 1));
        assert!(c.insert(toks(&[1, 2, 9, 9]), vec![0; 10], 2));
        assert!(c.insert(toks(&[7, 7]), vec![0; 10], 3));
        let (i, n) = c.best(&toks(&[1, 2, 9, 4]), |_, _| true).unwrap();
        assert_eq!((c.entries()[i].tokens.clone(), n), (toks(&[1, 2, 9, 9]), 3));
        assert_eq!(c.best(&toks(&[5]), |_, _| true), None);
    }

    #[test]
    fn stays_within_its_limit_dropping_the_least_recently_used() {
        let mut c = MemoryCache::new(25);
        c.insert(toks(&[1]), vec![0; 10], 1);
        c.insert(toks(&[2]), vec![0; 10], 2);
        assert!(c.covers(&toks(&[1]), 5), "a use refreshes it");
        c.insert(toks(&[3]), vec![0; 10], 6);
        assert_eq!(c.bytes(), 20);
        let kept: Vec<_> = c.entries().iter().map(|e| e.tokens[0].0).collect();
        assert!(kept.contains(&1) && kept.contains(&3) && !kept.contains(&2), "{kept:?}");
        assert!(!c.insert(toks(&[4]), vec![0; 26], 7), "larger than the cache");
        assert_eq!(c.bytes(), 20);
    }

    #[test]
    fn a_longer_prefix_supersedes_its_own_prefixes() {
        let mut c = MemoryCache::new(100);
        c.insert(toks(&[1, 2]), vec![0; 10], 1);
        c.insert(toks(&[1, 3]), vec![0; 10], 2);
        c.insert(toks(&[1, 2, 3]), vec![0; 12], 3);
        assert_eq!(c.entries().len(), 2);
        assert_eq!(c.bytes(), 22);
        assert!(c.covers(&toks(&[1, 2]), 4));
        assert!(!c.covers(&toks(&[1, 2, 3, 4]), 4));
    }

    #[test]
    fn taking_an_entry_frees_its_room() {
        let mut c = MemoryCache::new(20);
        c.insert(toks(&[1]), vec![0; 10], 1);
        c.insert(toks(&[2]), vec![0; 10], 2);
        let e = c.take(0);
        assert_eq!((e.tokens, c.bytes(), c.entries().len()), (toks(&[1]), 10, 1));
        assert!(c.insert(toks(&[3]), vec![0; 10], 3));
        assert_eq!(c.entries().len(), 2, "nothing else had to go");
    }

    #[test]
    fn shrinking_takes_the_least_recently_used_out_first() {
        let mut c = MemoryCache::new(30);
        c.insert(toks(&[1]), vec![0; 10], 1);
        c.insert(toks(&[2]), vec![0; 10], 3);
        c.insert(toks(&[3]), vec![0; 10], 2);
        c.set_limit(15);
        let mut out = vec![];
        while c.bytes() > c.limit() {
            out.push(c.pop_oldest().expect("over the limit").tokens[0].0);
        }
        assert_eq!((out, c.bytes()), (vec![1, 3], 10));
        assert!(!c.insert(toks(&[4]), vec![0; 16], 4), "the new limit holds");
        assert!(c.pop_oldest().is_some() && c.pop_oldest().is_none());
    }

    #[test]
    fn a_zero_limit_stores_nothing() {
        let mut c = MemoryCache::new(0);
        assert!(!c.insert(toks(&[1]), vec![0; 1], 1));
        assert!(c.entries().is_empty());
    }
}
