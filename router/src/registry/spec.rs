//! How a model's worker is started and what it is expected to hold: the spec from the config
//! and the server's defaults, the automatic core spread, the memory estimate.

use model_bucket_shared::{ModelConfig, ModelInfo};

use super::{Defaults, Registry};
use crate::supervisor::budget;
use crate::worker::WorkerSpec;

/// How `m`'s worker is started: its config settings first, then the defaults.
pub fn worker_spec(m: &ModelInfo, mc: &ModelConfig, d: &Defaults) -> WorkerSpec {
    WorkerSpec {
        model_id: m.id.to_string(),
        model_path: m.path.clone(),
        worker_bin: d.worker_bin.clone(),
        ctx: mc.ctx.or(d.ctx),
        threads: mc.threads.or(d.threads),
        parallel: mc.parallel.unwrap_or(d.parallel),
        cpus: mc.cpus.clone(),
        gpus: mc.gpus.clone(),
        gpu_layers: mc.gpu_layers.unwrap_or(0),
        chat_template: mc.chat_template.clone(),
        load_timeout: d.load_timeout,
        max_queue: d.max_queue,
        max_sampling: d.max_sampling,
        // By default as much again as the slots' own KV cache.
        prompt_cache: mc.prompt_cache_mib.map(|mib| mib << 20).or(d.prompt_cache).unwrap_or_else(|| {
            let ctx = ctx_slot(m, mc.ctx.or(d.ctx));
            budget::kv_bytes(m.size_bytes, m.kv_bytes_per_token, ctx * mc.parallel.unwrap_or(d.parallel) as u64)
        }),
        model_sha256: m.sha256.clone(),
        kv_cache: d.kv_cache.clone(),
        lora: m.adapters.iter().map(|a| a.path.clone()).collect(),
        speculative: mc.speculative.unwrap_or_default() != model_bucket_shared::config::Speculative::Off,
    }
}

/// Context per slot of `m`'s worker, in tokens, as the worker decides it.
pub fn ctx_slot(m: &ModelInfo, configured: Option<u32>) -> u64 {
    model_bucket_shared::ctx_per_slot(configured, m.context_length) as u64
}

/// Bytes `m`'s worker holds with `spec` whatever it serves: weights, the slots' KV cache,
/// compute buffers, and its LoRA adapters (held in full, as their files). Its evictable memory
/// (the host prompt cache and the embedding context) is counted apart, for what it holds
/// ([`evictable`]).
pub fn estimate(m: &ModelInfo, spec: &WorkerSpec) -> u64 {
    let ctx = ctx_slot(m, spec.ctx) * spec.parallel as u64;
    budget::estimate(m.size_bytes, m.kv_bytes_per_token, m.n_vocab, m.embedding_length, ctx)
        .saturating_add(m.adapters.iter().map(|a| a.size_bytes).sum())
        .saturating_add(if spec.speculative { budget::draft_bytes(m.n_vocab) } else { 0 })
}

/// What `m`'s embedding context holds once its buffers are full (it is made on the first
/// embeddings request and is evictable): its KV cache and one chunk of tokens × the
/// vocabulary of logits, in f32, in its output and its compute buffer.
pub fn embedding_context(m: &ModelInfo, spec: &WorkerSpec) -> u64 {
    let embed_ctx = ctx_slot(m, spec.ctx).min(model_bucket_shared::EMBED_CTX_TOKENS as u64);
    let embed_logits = 2 * model_bucket_shared::EMBED_CHUNK_TOKENS as u64 * m.n_vocab.unwrap_or(128_000) * 4;
    budget::kv_bytes(m.size_bytes, m.kv_bytes_per_token, embed_ctx).saturating_add(embed_logits)
}

impl Registry {
    /// The spec `m`'s worker starts with now: config and defaults, plus cores from the
    /// automatic spread (away from `taken`, the other workers' cores) when the config pins
    /// none and it runs fewer threads than there are cores.
    pub(super) fn spec_for(&self, m: &ModelInfo, taken: &[Vec<usize>]) -> (WorkerSpec, Option<Vec<usize>>) {
        let mut spec = worker_spec(m, &self.model_config(m), &self.defaults);
        let cores = match (&spec.cpus, spec.threads) {
            (Some(list), _) => model_bucket_shared::cpus::parse_cpu_list(list).ok(),
            (None, Some(t)) if (t as usize) < self.all_cores.len() => {
                let picked = crate::supervisor::cores::assign(&self.all_cores, taken, t as usize);
                spec.cpus = Some(model_bucket_shared::cpus::format_cpu_list(&picked));
                Some(picked)
            }
            _ => None,
        };
        (spec, cores)
    }
}
