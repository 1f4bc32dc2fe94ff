//! Model Bucket's shared vocabulary: the model catalog (GGUF headers, stable IDs, hashing,
//! config) and, later, the router–worker protocol.

pub mod adapter;
pub mod catalog;
pub mod config;
pub mod cpus;
pub mod gguf;
pub mod hash;
pub mod index;
pub mod lora_catalog;
pub mod mem;
pub mod model_id;
pub mod model_info;
pub mod naming;
pub mod page_cache;
pub mod protocol;
pub mod state_file;

pub use catalog::{Catalog, Skipped};
pub use config::{Config, LoraEntry, ModelConfig, Priority, Task};
pub use model_id::ModelId;
pub use model_info::{Capability, ModelInfo};

/// The embedding context of a worker holds at most this many tokens per input (fewer when the
/// context per request, `--ctx`, is smaller). It is created on the first embeddings request and
/// its KV cache is part of the model's memory estimate.
pub const EMBED_CTX_TOKENS: u32 = 2048;
/// A generative model's embedding input is decoded this many tokens at a time: llama.cpp keeps
/// logits for every token of a batch, in its output buffer and again in its compute buffer, so
/// this bounds those to `2 × chunk × vocabulary` floats (counted in the memory estimate).
pub const EMBED_CHUNK_TOKENS: u32 = 32;
/// The most tokens speculation proposes in one decode step, all sequences together.
pub const DRAFT_OUTPUTS: u32 = 16;
/// Bytes of logits the proposals of one step may take: a large vocabulary proposes fewer.
pub const DRAFT_LOGITS_BYTES: u64 = 8 << 20;

/// Tokens speculation may propose in one step for a vocabulary of `n_vocab` tokens: each needs
/// its logits (f32), which size a speculating worker's logits buffer and its memory estimate.
pub fn draft_outputs(n_vocab: u64) -> u32 {
    (DRAFT_LOGITS_BYTES / n_vocab.max(1).saturating_mul(4)).clamp(1, DRAFT_OUTPUTS as u64) as u32
}

/// Context per slot a worker uses when neither its settings nor the model say otherwise, in
/// tokens.
pub const DEFAULT_CTX_TOKENS: u32 = 4096;

/// Context per slot of a worker, in tokens: the configured one, else the model's training
/// context up to [`DEFAULT_CTX_TOKENS`]; at least 16. The worker sizes its context by this
/// and the router its memory estimate.
pub fn ctx_per_slot(configured: Option<u32>, trained: Option<u64>) -> u32 {
    let trained = trained.map_or(DEFAULT_CTX_TOKENS, |t| t.clamp(1, u32::MAX as u64) as u32);
    configured.unwrap_or(DEFAULT_CTX_TOKENS.min(trained)).max(16)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_large_vocabulary_proposes_fewer_tokens_a_step() {
        use super::{draft_outputs, DRAFT_OUTPUTS};
        assert_eq!(draft_outputs(49_152), DRAFT_OUTPUTS, "SmolLM2: 3 MiB of logits for 16");
        assert_eq!(draft_outputs(128_256), 16);
        assert_eq!(draft_outputs(262_144), 8, "Gemma 3");
        assert_eq!(draft_outputs(u64::MAX), 1);
        assert_eq!(draft_outputs(0), DRAFT_OUTPUTS);
    }

    #[test]
    fn context_per_slot() {
        use super::ctx_per_slot;
        assert_eq!(ctx_per_slot(None, Some(131_072)), 4096);
        assert_eq!(ctx_per_slot(None, Some(2048)), 2048);
        assert_eq!(ctx_per_slot(None, None), 4096);
        assert_eq!(ctx_per_slot(Some(8192), Some(2048)), 8192, "the setting wins");
        assert_eq!(ctx_per_slot(Some(1), None), 16);
    }
}
