//! Prompt reuse decisions, as pure functions over token lists: which slot a prompt goes to, how
//! much of what it holds is kept, where a longer cached prefix comes from, and whether a slot's
//! tokens are worth keeping when it is taken over.

/// Tokens a kept prefix must hold to be worth saving to the host cache or to disk. Shorter
/// prefixes cost less to prefill again than to copy.
pub const MIN_SAVED_TOKENS: usize = 32;

/// Length of the common prefix of `a` and `b`.
pub fn common_prefix<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// A free slot as the choice sees it.
#[derive(Debug, Clone, Copy)]
pub struct FreeSlot<'a, T> {
    pub index: usize,
    /// Tokens whose KV cells the slot holds, from position 0.
    pub cached: &'a [T],
    /// When the slot was last used (larger is more recent).
    pub used: u64,
}

/// The smallest share of a prompt, in tenths, that a slot's cached prefix must cover for the
/// prompt to go to that slot rather than to the least recently used one: a few shared template
/// tokens are not worth pushing another task's long prefix out of its slot.
pub const MIN_SIMILARITY_TENTHS: usize = 1;

/// The slot for `prompt`: the free slot whose cached tokens share the longest prefix with it,
/// when that prefix covers at least a tenth of the prompt; otherwise (and for ties) the least
/// recently used. Returns the slot's index and the shared length, or `None` when no slot is
/// free.
pub fn choose_slot<'a, T: PartialEq + 'a>(
    free: impl IntoIterator<Item = FreeSlot<'a, T>>,
    prompt: &[T],
) -> Option<(usize, usize)> {
    let slots: Vec<(usize, usize, u64)> =
        free.into_iter().map(|s| (s.index, common_prefix(s.cached, prompt), s.used)).collect();
    // Longest prefix first, then the oldest use.
    let best = slots.iter().max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))?;
    if best.1 * 10 >= prompt.len() * MIN_SIMILARITY_TENTHS && best.1 > 0 {
        return Some((best.0, best.1));
    }
    slots.iter().min_by_key(|s| (s.2, s.0)).map(|s| (s.0, s.1))
}

/// How many cached tokens a prompt of `prompt_len` tokens may keep when it shares `shared` with
/// them: at least its last token is always decoded again, because its logits are what the first
/// sampled token comes from.
pub fn keep_len(shared: usize, prompt_len: usize) -> usize {
    shared.min(prompt_len.saturating_sub(1))
}

/// Whether a saved state of `saved` tokens can serve a request that keeps its first `keep`.
/// A model with a sliding attention window of `n_swa` tokens saves only the window's positions
/// (the last `n_swa`), while the next token, at position `keep`, attends to `keep + 1 - n_swa`
/// on: so a state longer than the window serves only a continuation from its end.
pub fn restorable(saved: usize, keep: usize, n_swa: usize) -> bool {
    n_swa == 0 || saved <= n_swa || keep + 1 >= saved
}

/// Where the prefix a request starts from comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The chosen slot's own cells.
    Slot,
    /// An entry of the host-memory cache, by index.
    Memory(usize),
    /// A file of the disk cache, by index.
    Disk(usize),
}

/// Picks the longest usable prefix among the slot's (`slot` tokens), the best host-memory entry
/// and the best disk entry (each `(index, shared tokens)`). Ties go to the cheaper source: the
/// slot costs nothing, memory a copy, disk a read.
pub fn choose_source(slot: usize, memory: Option<(usize, usize)>, disk: Option<(usize, usize)>) -> (Source, usize) {
    let mut best = (Source::Slot, slot);
    if let Some((i, n)) = memory {
        if n > best.1 {
            best = (Source::Memory(i), n);
        }
    }
    if let Some((i, n)) = disk {
        if n > best.1 {
            best = (Source::Disk(i), n);
        }
    }
    best
}

/// Whether a slot holding `cached` tokens should be saved to the host cache before a new request
/// keeps only `kept` of them: when what would be lost is a long enough prefix of its own.
pub fn worth_saving(cached: usize, kept: usize) -> bool {
    cached >= MIN_SAVED_TOKENS && cached - kept >= MIN_SAVED_TOKENS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(index: usize, cached: &[u32], used: u64) -> FreeSlot<'_, u32> {
        FreeSlot { index, cached, used }
    }

    #[test]
    fn common_prefix_counts_equal_leading_tokens() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4]), 2);
        assert_eq!(common_prefix(&[1, 2], &[1, 2, 3]), 2);
        assert_eq!(common_prefix::<u32>(&[], &[1]), 0);
        assert_eq!(common_prefix(&[5], &[1]), 0);
    }

    #[test]
    fn longest_prefix_wins() {
        let a = [1, 2, 3, 4];
        let b = [1, 2, 9];
        let slots = [slot(0, &b, 1), slot(1, &a, 5)];
        assert_eq!(choose_slot(slots, &[1, 2, 3, 4, 5]), Some((1, 4)));
    }

    #[test]
    fn a_small_shared_head_does_not_take_over_another_tasks_slot() {
        let task = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        let prompt = [1, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30];
        // 1 of 12 tokens shared: under a tenth, so the older (empty) slot.
        assert_eq!(choose_slot([slot(0, &task, 5), slot(1, &[], 0)], &prompt), Some((1, 0)));
        // 2 of 12: enough.
        assert_eq!(
            choose_slot([slot(0, &task, 5), slot(1, &[], 0)], &[1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Some((0, 2))
        );
        // The least recently used keeps what it shares.
        assert_eq!(choose_slot([slot(0, &task, 1), slot(1, &[], 3)], &prompt), Some((0, 1)));
    }

    #[test]
    fn ties_and_strangers_take_the_least_recently_used() {
        let a = [1, 2];
        let b = [1, 2];
        let c = [7];
        // Equal prefixes: the older slot.
        assert_eq!(choose_slot([slot(0, &a, 9), slot(1, &b, 3)], &[1, 2, 3]), Some((1, 2)));
        // Nothing shared: the oldest of all, even an empty one that is newer is not preferred.
        assert_eq!(choose_slot([slot(0, &a, 9), slot(1, &c, 2), slot(2, &[], 4)], &[5, 6]), Some((1, 0)));
        assert_eq!(choose_slot::<u32>([], &[1]), None);
    }

    #[test]
    fn the_last_prompt_token_is_always_decoded() {
        assert_eq!(keep_len(10, 10), 9);
        assert_eq!(keep_len(10, 20), 10);
        assert_eq!(keep_len(4, 3), 2);
        assert_eq!(keep_len(0, 1), 0);
        assert_eq!(keep_len(5, 0), 0);
    }

    #[test]
    fn the_longest_source_wins_and_ties_stay_cheap() {
        assert_eq!(choose_source(10, Some((0, 10)), Some((1, 10))), (Source::Slot, 10));
        assert_eq!(choose_source(10, Some((2, 11)), Some((1, 11))), (Source::Memory(2), 11));
        assert_eq!(choose_source(10, Some((2, 11)), Some((1, 12))), (Source::Disk(1), 12));
        assert_eq!(choose_source(0, None, None), (Source::Slot, 0));
    }

    #[test]
    fn a_windowed_state_serves_only_what_its_window_covers() {
        assert!(restorable(5000, 10, 0), "no window: any prefix");
        assert!(restorable(400, 10, 512), "shorter than the window");
        assert!(!restorable(653, 641, 512), "cut before its end");
        assert!(restorable(653, 652, 512), "continued from its last token");
        assert!(restorable(653, 700, 512));
    }

    #[test]
    fn only_long_losses_are_saved() {
        assert!(worth_saving(100, 0));
        assert!(worth_saving(100, 68));
        assert!(!worth_saving(100, 69));
        assert!(!worth_saving(31, 0));
    }
}
