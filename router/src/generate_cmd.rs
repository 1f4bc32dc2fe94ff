//! `model-bucket generate`: one prompt through a directly started worker, streamed to stdout.

use anyhow::{bail, Context, Result};
use model_bucket_shared::protocol::{
    ChatMessage, FinishReason, GenerateRequest, LoraUse, Prompt, SamplingParams, ToWorker,
};
use model_bucket_shared::ModelConfig;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::bucket;
use crate::catalog_cmd::resolve;
use crate::cli::BucketArgs;
use crate::registry::{worker_spec, Defaults};
use crate::worker::{self, Event};

/// What `generate` was asked for.
pub struct GenerateArgs {
    pub id: String,
    pub prompt: String,
    pub max_tokens: u32,
    pub temperature: f32,
    pub seed: Option<u32>,
    pub raw: bool,
    pub ctx: Option<u32>,
    pub threads: Option<u32>,
    pub stats: bool,
}

/// The worker binary: `$EDEN_WORKER_BIN`, else next to this executable.
pub fn worker_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("EDEN_WORKER_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe().context("cannot find this executable")?;
    Ok(exe.with_file_name("model-bucket-worker"))
}

pub fn run(b: &BucketArgs, a: GenerateArgs) -> Result<()> {
    let (config, dir) = bucket::open(b)?;
    let cat = bucket::scan(&dir, &config)?;
    let asked = resolve(&cat, &a.id)?;
    // A base plus an adapter runs on its base with the adapter.
    let m = cat
        .worker_of(asked)
        .with_context(|| format!("the base {} of {} is not in the folder", asked.worker_id(), asked.id))?;
    let lora: Vec<LoraUse> = asked.lora.iter().map(|l| l.to_use()).collect();
    let mc = cat.model_config(&config, &m.id);
    let chat_possible = m.has_chat_template || mc.chat_template.is_some();
    let prompt = if a.raw || !chat_possible {
        Prompt::Text(a.prompt.clone())
    } else {
        Prompt::Chat(vec![ChatMessage::new("user", a.prompt.clone())])
    };
    // One request, one slot; flags given here win over the config.
    let defaults = Defaults {
        worker_bin: worker_bin()?,
        parallel: 1,
        ctx: None,
        threads: None,
        load_timeout: Duration::from_secs(300),
        load_wait: Duration::from_secs(300),
        max_queue: 1,
        max_sampling: Duration::from_secs(30),
        // One prompt, nothing to reuse.
        prompt_cache: Some(0),
        kv_cache: None,
    };
    let mut spec = worker_spec(m, &ModelConfig { parallel: None, ..mc }, &defaults);
    spec.ctx = a.ctx.or(spec.ctx);
    spec.threads = a.threads.or(spec.threads);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let mut w =
            worker::spawn(&spec, &(std::sync::Arc::new(|_| {}) as worker::Progress), Default::default()).await?;
        tracing::debug!(pid = w.pid, load_ms = w.ready.load_ms, n_ctx = w.ready.n_ctx, "worker ready");
        let req = GenerateRequest {
            id: w.client.next_id(),
            prompt,
            sampling: SamplingParams { temperature: a.temperature, seed: a.seed, ..Default::default() },
            max_tokens: Some(a.max_tokens),
            stop: vec![],
            stream: true,
            cache_prompt: true,
            constraint: None,
            logprobs: None,
            tools: None,
            lora,
            count_only: false,
            speculative: true,
        };
        let id = req.id;
        let mut events = w.client.generate(req);
        let mut out = std::io::stdout().lock();
        let mut interrupted = false;
        let result = loop {
            let event = tokio::select! {
                e = events.recv() => e,
                Some(m) = w.unsolicited.recv() => {
                    if !matches!(m, model_bucket_shared::protocol::FromWorker::Held { .. }) {
                        tracing::warn!(message = ?m, "worker");
                    }
                    continue;
                }
                _ = tokio::signal::ctrl_c(), if !interrupted => {
                    // Stop generating; the worker still answers with Done.
                    interrupted = true;
                    w.client.cancel(id);
                    continue;
                }
            };
            match event {
                Some(Event::Tokens { text, .. }) => {
                    out.write_all(text.as_bytes())?;
                    out.flush()?;
                }
                Some(Event::Done(d)) => break Ok(d),
                Some(Event::Error { kind, message }) => break Err(format!("{kind:?}: {message}")),
                Some(Event::Gone) | None => break Err("the worker exited".into()),
                Some(Event::Embeddings { .. }) => break Err("the worker answered with embeddings".into()),
            }
        };
        writeln!(out)?;
        w.client.send(ToWorker::Shutdown { grace_ms: 0 });
        let _ = tokio::time::timeout(Duration::from_secs(5), w.child.wait()).await;
        match result {
            Ok(d) => {
                if a.stats {
                    let secs = (d.timings.decode_ms / 1000.0).max(1e-9);
                    eprintln!(
                        "load {} ms; {} prompt tokens, {} generated ({:?}); prompt {:.0} ms, {:.1} tokens/s",
                        w.ready.load_ms,
                        d.usage.prompt_tokens,
                        d.usage.completion_tokens,
                        d.finish,
                        d.timings.prompt_ms,
                        d.usage.completion_tokens.saturating_sub(1) as f64 / secs,
                    );
                }
                if d.finish == FinishReason::Cancelled {
                    bail!("interrupted");
                }
                Ok(())
            }
            Err(m) => bail!("{m}\n{}", w.stderr_tail.last(5)),
        }
    })
}
