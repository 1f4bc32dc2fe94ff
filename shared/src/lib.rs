//! Model Bucket's shared vocabulary: the model catalog (GGUF headers, stable IDs, hashing,
//! config) and, later, the router–worker protocol.

pub mod catalog;
pub mod config;
pub mod cpus;
pub mod gguf;
pub mod hash;
pub mod index;
pub mod mem;
pub mod model_id;
pub mod model_info;
pub mod naming;
pub mod protocol;
pub mod state_file;

pub use catalog::{Catalog, Skipped};
pub use config::{Config, ModelConfig};
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
