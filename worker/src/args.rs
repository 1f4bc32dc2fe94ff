//! Command-line arguments of `model-bucket-worker`.

use clap::Parser;
use std::path::PathBuf;

/// `--version` names the GPU backend compiled in: `0.1.0 (backend cuda)` or `(backend cpu)`.
#[cfg(feature = "cuda")]
const LONG_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (backend cuda)");
#[cfg(not(feature = "cuda"))]
const LONG_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (backend cpu)");

/// Model Bucket worker: serves one GGUF model over a local socket, with continuous batching.
/// Normally started by `model-bucket`; logs go to stderr as JSON lines.
#[derive(Debug, Parser)]
#[command(name = "model-bucket-worker", version, long_version = LONG_VERSION)]
pub struct Args {
    /// The GGUF model file.
    #[arg(long)]
    pub model: PathBuf,
    /// Local socket path the router listens on; the worker connects to it.
    #[arg(long)]
    pub socket: PathBuf,
    /// Context per slot, in tokens (default: the model's training context, at most 4096).
    #[arg(long)]
    pub ctx: Option<u32>,
    /// Threads for decoding and prompt processing (default: the cores this worker may use).
    #[arg(long)]
    pub threads: Option<u32>,
    /// Concurrent sequences served in one batch.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallel: u32,
    /// CPU cores to pin to before llama.cpp starts its threads, e.g. `0-3,8`.
    #[arg(long)]
    pub cpus: Option<String>,
    /// Model layers to offload to the GPU (needs a `cuda` build).
    #[arg(long, default_value_t = 0)]
    pub gpu_layers: u32,
    /// A chat template: a built-in name (`chatml`, `gemma`, `llama3`) or a Jinja file. Default:
    /// the GGUF's own `tokenizer.chat_template`.
    #[arg(long)]
    pub chat_template: Option<String>,
    /// Tokens per decode call.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(16..=65536))]
    pub batch: u32,
    /// Requests allowed to wait for a free slot.
    #[arg(long, default_value_t = 1024)]
    pub max_queue: usize,
    /// Bytes of host memory for KV states of prompt prefixes pushed out of the slots (0: none).
    #[arg(long, default_value_t = 0)]
    pub prompt_cache_bytes: u64,
    /// Folder for prompt prefixes kept between workers (none: not kept).
    #[arg(long, requires = "model_sha256")]
    pub kv_cache_dir: Option<PathBuf>,
    /// Bytes the whole `--kv-cache-dir` may hold.
    #[arg(long, default_value_t = 4 << 30)]
    pub kv_cache_max: u64,
    /// The most time, in milliseconds, a stopping worker spends writing its prefixes to
    /// `--kv-cache-dir` (most recently used first; what does not fit in it is not kept).
    #[arg(long, default_value_t = 2000)]
    pub kv_cache_write_ms: u64,
    /// SHA-256 of the model file, hex: part of the key of files in `--kv-cache-dir`.
    #[arg(long)]
    pub model_sha256: Option<String>,
    /// The most time, in milliseconds, one request may use on the helper threads: reading its
    /// prompt (the chat template) and constraint, and sampling under its grammar. Past it the
    /// request ends with an error.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_sampling_ms: u64,
    /// A LoRA adapter GGUF to load with the model (repeatable); requests name it by this path.
    #[arg(long, value_name = "PATH")]
    pub lora: Vec<PathBuf>,
    /// Speculation: `ngram` (generating sequences propose what followed their recent tokens
    /// before, checked in the same batch) or `off`.
    #[arg(long, value_enum, default_value_t = Speculative::Ngram)]
    pub speculative: Speculative,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Speculative {
    Off,
    Ngram,
}
