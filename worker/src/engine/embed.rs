//! Embeddings: a second llama.cpp context of the same model, with embeddings on, created on the
//! first embeddings request (a worker that never embeds never pays for it).
//!
//! Each input is decoded on its own as one sequence. A model whose GGUF names a pooling
//! (`<arch>.pooling_type`, the embedding models) is pooled that way by llama.cpp, the input in one
//! batch. A generative model is pooled by the mean of its tokens' last hidden states, as
//! llama-server does with `--embeddings --pooling mean`, but the input is decoded in chunks of
//! [`CHUNK`] tokens and the mean is taken here: llama.cpp keeps logits for every output token, so a
//! whole input in one batch would need `tokens × vocabulary` floats (hundreds of MiB for a
//! 2,048-token input), a chunk needs `CHUNK × vocabulary`. The vector is L2-normalised, as
//! llama-server's `/v1/embeddings` returns it. The decode loop embeds one input per step, between
//! generation steps, so a large embeddings request does not stall the model's other requests for
//! long.

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use model_bucket_shared::protocol::frame::MAX_FRAME_BYTES;
use model_bucket_shared::protocol::{EmbedRequest, ErrorKind, FromWorker, Prompt, RequestId};
use std::num::NonZeroU32;

use super::lora::AdapterSet;
use super::Engine;

/// The longest input of the embedding context, in tokens, unless the context per slot is
/// smaller (also its KV cache size). The context is evictable memory: the worker reports what
/// it holds and drops it when the router lowers its allowance ([`super::held`]).
pub const EMBED_CTX: u32 = model_bucket_shared::EMBED_CTX_TOKENS;
/// Tokens per decode of a generative model's input.
pub const CHUNK: u32 = model_bucket_shared::EMBED_CHUNK_TOKENS;
/// The longest input of a model with its own pooling (decoded in one batch).
const POOLED_CTX: u32 = 512;

/// The embedding context, made when first needed.
pub struct Embedder<'m> {
    model: &'m LlamaModel,
    backend: &'m LlamaBackend,
    threads: i32,
    /// Tokens per input at most.
    pub n_ctx: u32,
    /// The GGUF names a pooling: llama.cpp pools, one batch per input. Otherwise the mean of
    /// the tokens' hidden states is taken here, [`CHUNK`] tokens per batch.
    model_pooling: bool,
    ctx: Option<(LlamaContext<'m>, LlamaBatch<'static>)>,
    /// The running sum of hidden states (mean pooling).
    sum: Vec<f64>,
    /// What the context holds, in bytes: the growth of the worker's anonymous resident memory
    /// over its creation and first use (llama.cpp touches its buffers only then; the model's
    /// mapped weights, faulted in by that first use, are not the context's). 0 while there is
    /// none.
    bytes: usize,
    /// The resident memory before the context was made, until its first use is measured.
    rss_before: Option<u64>,
}

/// An embeddings request in progress.
pub struct EmbedJob {
    pub id: RequestId,
    pub inputs: Vec<Vec<LlamaToken>>,
    pub vectors: Vec<Vec<f32>>,
    pub tokens: u32,
    /// The LoRA adapters it runs with.
    pub set: AdapterSet,
}

impl<'m> Embedder<'m> {
    /// `n_ctx_slot`: the context of each generation slot, in tokens.
    pub fn new(model: &'m LlamaModel, backend: &'m LlamaBackend, threads: i32, n_ctx_slot: u32) -> Embedder<'m> {
        let arch = model.meta_val_str("general.architecture").unwrap_or_default();
        let model_pooling = matches!(model.meta_val_str(&format!("{arch}.pooling_type")), Ok(p) if p != "0");
        let most = if model_pooling { POOLED_CTX } else { EMBED_CTX };
        let n_ctx = n_ctx_slot.clamp(16, most);
        Embedder {
            model,
            backend,
            threads,
            n_ctx,
            model_pooling,
            ctx: None,
            sum: Vec::new(),
            bytes: 0,
            rss_before: None,
        }
    }

    /// Bytes the context holds (0: none, or not measured yet).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the context exists.
    pub fn made(&self) -> bool {
        self.ctx.is_some()
    }

    /// Drops the context; the next embeddings request makes it again. Returns whether there was
    /// one.
    pub fn release(&mut self) -> bool {
        self.bytes = 0;
        self.rss_before = None;
        self.ctx.take().is_some()
    }

    /// The normalised embedding of `tokens`, measuring the context's memory on its first use.
    pub fn embed(
        &mut self,
        tokens: &[LlamaToken],
        adapters: &mut [LlamaLoraAdapter],
        set: AdapterSet,
    ) -> Result<Vec<f32>, String> {
        if self.ctx.is_none() {
            self.rss_before = model_bucket_shared::mem::anon_rss_bytes(None);
        }
        let v = self.embed_in_context(tokens, adapters, set);
        if let Some(before) = self.rss_before.take() {
            let after = model_bucket_shared::mem::anon_rss_bytes(None).unwrap_or(before);
            self.bytes = after.saturating_sub(before) as usize;
        }
        v
    }

    /// The normalised embedding of `tokens` (at most `n_ctx` of them), with the adapters of `set`.
    fn embed_in_context(
        &mut self,
        tokens: &[LlamaToken],
        adapters: &mut [LlamaLoraAdapter],
        set: AdapterSet,
    ) -> Result<Vec<f32>, String> {
        if self.ctx.is_none() {
            let n = NonZeroU32::new(self.n_ctx);
            let (batch, pooling) = if self.model_pooling {
                (self.n_ctx, LlamaPoolingType::Unspecified)
            } else {
                (CHUNK.min(self.n_ctx), LlamaPoolingType::None)
            };
            let params = LlamaContextParams::default()
                .with_n_ctx(n)
                .with_n_batch(batch)
                .with_n_ubatch(batch)
                .with_n_seq_max(1)
                .with_embeddings(true)
                .with_pooling_type(pooling)
                .with_n_threads(self.threads)
                .with_n_threads_batch(self.threads);
            let ctx = self
                .model
                .new_context(self.backend, params)
                .map_err(|e| format!("llama.cpp could not create the embedding context: {e}"))?;
            tracing::info!(n_ctx = self.n_ctx, "embedding context created");
            self.ctx = Some((ctx, LlamaBatch::new(batch as usize, 1)));
        }
        let (ctx, batch) = self.ctx.as_mut().expect("created above");
        super::lora::apply(ctx, adapters, set)?;
        ctx.clear_kv_cache();
        if self.model_pooling {
            batch.clear();
            for (i, &t) in tokens.iter().enumerate() {
                // Every position is an output: pooling reads them all.
                batch.add(t, i as i32, &[0], true).map_err(|e| e.to_string())?;
            }
            ctx.decode(batch).map_err(|e| format!("llama.cpp decode failed: {e}"))?;
            let v = ctx.embeddings_seq_ith(0).map_err(|_| "llama.cpp produced no pooled embedding".to_string())?;
            return Ok(normalize(v));
        }
        self.sum.clear();
        for (c, chunk) in tokens.chunks(CHUNK as usize).enumerate() {
            batch.clear();
            for (k, &t) in chunk.iter().enumerate() {
                let pos = (c * CHUNK as usize + k) as i32;
                batch.add(t, pos, &[0], true).map_err(|e| e.to_string())?;
            }
            ctx.decode(batch).map_err(|e| format!("llama.cpp decode failed: {e}"))?;
            for k in 0..chunk.len() {
                let h = ctx.embeddings_ith(k as i32).map_err(|_| "llama.cpp produced no embedding".to_string())?;
                if self.sum.is_empty() {
                    self.sum.resize(h.len(), 0.0);
                }
                for (s, &x) in self.sum.iter_mut().zip(h) {
                    *s += f64::from(x);
                }
            }
        }
        let n = tokens.len().max(1) as f64;
        let mean: Vec<f32> = self.sum.iter().map(|&s| (s / n) as f32).collect();
        Ok(normalize(&mean))
    }
}

impl<'m> Engine<'m> {
    /// Tokenizes an embeddings request and queues it (or answers with an error).
    pub(super) fn enqueue_embed(&mut self, req: EmbedRequest) {
        let id = req.id;
        if req.inputs.is_empty() {
            return self.error(id, ErrorKind::BadRequest, "no inputs to embed".into());
        }
        if self.deadline.is_some() {
            return self.error(id, ErrorKind::ShuttingDown, "the worker is shutting down".into());
        }
        if self.embeds.len() >= self.cfg.max_queue {
            return self.error(
                id,
                ErrorKind::Overloaded,
                "too many embeddings requests are waiting; retry shortly".into(),
            );
        }
        let mut inputs = Vec::with_capacity(req.inputs.len());
        for (k, p) in req.inputs.iter().enumerate() {
            let tokens: Vec<LlamaToken> = match p {
                Prompt::Tokens(ids) => match self.vocab_tokens(ids) {
                    Ok(t) => t,
                    Err(m) => return self.error(id, ErrorKind::BadRequest, format!("input {k}: {m}")),
                },
                Prompt::Text(t) => self.model.vocab().tokenize(t.as_bytes(), true, true),
                Prompt::Chat(_) => {
                    return self.error(id, ErrorKind::BadRequest, "chat messages cannot be embedded".into())
                }
            };
            if tokens.is_empty() {
                return self.error(id, ErrorKind::BadRequest, format!("input {k} is empty"));
            }
            if tokens.len() > self.embedder.n_ctx as usize {
                let m = format!(
                    "input {k} is {} tokens; this model embeds at most {} tokens per input",
                    tokens.len(),
                    self.embedder.n_ctx
                );
                return self.error(id, ErrorKind::PromptTooLong, m);
            }
            inputs.push(tokens);
        }
        // The answer is one message: its vectors must fit one frame with room to spare.
        let width = self.model.n_embd().max(1) as usize;
        let most = MAX_FRAME_BYTES / 2 / (width * 4 + 16);
        if inputs.len() > most {
            let m = format!(
                "{} inputs of {width} dimensions are more than one answer holds; send at most {most} inputs per request",
                inputs.len()
            );
            return self.error(id, ErrorKind::BadRequest, m);
        }
        let set = match AdapterSet::resolve(&req.lora, &self.adapter_paths, &self.adapter_failures) {
            Ok(s) => s,
            Err((kind, m)) => return self.error(id, kind, m),
        };
        let tokens = inputs.iter().map(|t| t.len() as u32).sum();
        let vectors = Vec::with_capacity(inputs.len());
        self.embeds.push_back(EmbedJob { id, inputs, vectors, tokens, set });
    }

    /// Embeds the next input of the oldest embeddings request; answers it when it is complete.
    pub(super) fn embed_next(&mut self) {
        let Some(job) = self.embeds.front_mut() else { return };
        let k = job.vectors.len();
        match self.embedder.embed(&job.inputs[k], &mut self.adapters, job.set) {
            Ok(v) => job.vectors.push(v),
            Err(m) => {
                let id = job.id;
                self.embeds.pop_front();
                return self.error(id, ErrorKind::Internal, m);
            }
        }
        if job.vectors.len() == job.inputs.len() {
            let job = self.embeds.pop_front().expect("front exists");
            self.send(FromWorker::Embeddings { id: job.id, vectors: job.vectors, prompt_tokens: job.tokens });
        }
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
