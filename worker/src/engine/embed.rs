//! Embeddings: a second llama.cpp context of the same model, with embeddings on, created on the
//! first embeddings request (a worker that never embeds never pays for it).
//!
//! Each input is decoded on its own as one sequence and pooled the way the GGUF says (its
//! `pooling_type`), or by the mean over its tokens for a generative model, as llama-server does
//! with `--embeddings --pooling mean`; the vector is L2-normalised, as llama-server's
//! `/v1/embeddings` returns it. The decode loop embeds one input per step, between generation
//! steps, so a large embeddings request does not stall the model's other requests.

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use model_bucket_shared::protocol::RequestId;
use std::num::NonZeroU32;

/// The longest input of the embedding context, in tokens, unless the context per slot is
/// smaller (also its KV cache size, which the router counts in the model's memory estimate).
pub const EMBED_CTX: u32 = model_bucket_shared::EMBED_CTX_TOKENS;

/// The embedding context, made when first needed.
pub struct Embedder<'m> {
    model: &'m LlamaModel,
    backend: &'m LlamaBackend,
    threads: i32,
    /// Tokens per input at most.
    pub n_ctx: u32,
    ctx: Option<(LlamaContext<'m>, LlamaBatch<'static>)>,
}

/// An embeddings request in progress.
pub struct EmbedJob {
    pub id: RequestId,
    pub inputs: Vec<Vec<LlamaToken>>,
    pub vectors: Vec<Vec<f32>>,
    pub tokens: u32,
}

impl<'m> Embedder<'m> {
    /// `n_ctx_slot`: the context of each generation slot, in tokens.
    pub fn new(model: &'m LlamaModel, backend: &'m LlamaBackend, threads: i32, n_ctx_slot: u32) -> Embedder<'m> {
        let n_ctx = n_ctx_slot.clamp(16, EMBED_CTX);
        Embedder { model, backend, threads, n_ctx, ctx: None }
    }

    /// The pooling of the GGUF (`<arch>.pooling_type`), else the mean.
    fn pooling(&self) -> LlamaPoolingType {
        let arch = self.model.meta_val_str("general.architecture").unwrap_or_default();
        match self.model.meta_val_str(&format!("{arch}.pooling_type")) {
            Ok(p) if p != "0" => LlamaPoolingType::Unspecified,
            _ => LlamaPoolingType::Mean,
        }
    }

    /// The normalised embedding of `tokens` (at most `n_ctx` of them).
    pub fn embed(&mut self, tokens: &[LlamaToken]) -> Result<Vec<f32>, String> {
        if self.ctx.is_none() {
            let n = NonZeroU32::new(self.n_ctx);
            let params = LlamaContextParams::default()
                .with_n_ctx(n)
                .with_n_batch(self.n_ctx)
                .with_n_ubatch(self.n_ctx)
                .with_n_seq_max(1)
                .with_embeddings(true)
                .with_pooling_type(self.pooling())
                .with_n_threads(self.threads)
                .with_n_threads_batch(self.threads);
            let ctx = self
                .model
                .new_context(self.backend, params)
                .map_err(|e| format!("llama.cpp could not create the embedding context: {e}"))?;
            tracing::info!(n_ctx = self.n_ctx, "embedding context created");
            self.ctx = Some((ctx, LlamaBatch::new(self.n_ctx as usize, 1)));
        }
        let (ctx, batch) = self.ctx.as_mut().expect("created above");
        ctx.clear_kv_cache();
        batch.clear();
        for (i, &t) in tokens.iter().enumerate() {
            // Every position is an output: pooling reads them all.
            batch.add(t, i as i32, &[0], true).map_err(|e| e.to_string())?;
        }
        ctx.decode(batch).map_err(|e| format!("llama.cpp decode failed: {e}"))?;
        let v = ctx.embeddings_seq_ith(0).map_err(|_| "llama.cpp produced no pooled embedding".to_string())?;
        Ok(normalize(v))
    }
}

/// `v / |v|` (a zero vector stays zero).
pub fn normalize(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
    if norm == 0.0 {
        return v.to_vec();
    }
    v.iter().map(|&x| (f64::from(x) / norm) as f32).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn normalized_vectors_have_unit_length() {
        let v = super::normalize(&[3.0, 4.0]);
        assert_eq!(v, vec![0.6, 0.8]);
        assert_eq!(super::normalize(&[0.0, 0.0]), vec![0.0, 0.0]);
    }
}
