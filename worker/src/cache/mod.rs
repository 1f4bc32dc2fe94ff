//! Prompt caching beyond the slots: a bounded host-memory cache of sequence states
//! ([`memory`]) and files that outlive the worker ([`disk`], in the format of [`file`]).
//! Which prefix a request reuses is decided in `engine::reuse`.

pub mod disk;
pub mod file;
pub mod memory;

use llama_cpp_2::context::session::LlamaStateSeqFlags;
use llama_cpp_2::context::LlamaContext;
use std::path::PathBuf;

/// Where and how much to cache.
pub struct CacheConfig {
    /// Bytes of sequence states the host-memory cache may hold (0: off).
    pub memory_bytes: usize,
    /// The disk cache's root folder and byte limit (none: off).
    pub disk: Option<(PathBuf, u64)>,
    /// The most time a stopping worker spends writing prefixes to the disk cache.
    pub disk_write_time: std::time::Duration,
    /// What a state depends on: model file hash, context settings, build. States written under
    /// another key are never loaded.
    pub key: String,
}

/// The serialized state (KV cells) of sequence `seq`.
pub fn seq_state(ctx: &LlamaContext<'_>, seq: i32) -> Option<Vec<u8>> {
    let flags = LlamaStateSeqFlags::empty();
    let size = ctx.state_seq_get_size_ext(seq, flags);
    let mut buf = vec![0u8; size];
    // SAFETY: `buf` holds the `size` bytes llama.cpp reported for this sequence and flags; the
    // crate passes no bound, so the size query above is what keeps the write in bounds.
    let n = unsafe { ctx.state_seq_get_data_ext(buf.as_mut_ptr(), seq, flags) };
    (n == size && n > 0).then_some(buf)
}

/// Loads a state made by [`seq_state`] into sequence `seq` (whose cells must be empty).
///
/// `state` must come from [`seq_state`] of this build with the same model and context settings:
/// the memory cache holds only such states, and the disk cache only returns files whose key and
/// checksum match.
pub fn restore(ctx: &mut LlamaContext<'_>, seq: i32, state: &[u8]) -> bool {
    // SAFETY: per the contract above, the bytes are llama.cpp's own serialization for this
    // model and context shape, which its reader validates again (cell counts, layer shapes).
    unsafe { ctx.state_seq_set_data_ext(state, seq, LlamaStateSeqFlags::empty()) }
}

/// The build part of the cache key: the worker's version, backend and executable (size and
/// modification time, so any rebuild starts a new cache).
pub fn build_id() -> String {
    let exe = std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|m| {
            let t = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
            format!("{}-{}", m.len(), t.as_nanos())
        })
        .unwrap_or_default();
    let backend = if cfg!(feature = "cuda") { "cuda" } else { "cpu" };
    format!("{} {backend} exe {exe}", env!("CARGO_PKG_VERSION"))
}
