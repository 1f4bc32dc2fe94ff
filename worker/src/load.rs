//! Loading the model and context from the arguments, then handing them to the engine.

use anyhow::{bail, Context, Result};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};
use model_bucket_shared::mem::rss_bytes;
use model_bucket_shared::protocol::{FromWorker, ReadyInfo};
use std::num::NonZeroU32;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Instant;

use crate::args::Args;
use crate::cache::{self, CacheConfig};
use crate::engine::helper::{Pool, Reader};
use crate::engine::template::{self, ChatTemplate};
use crate::engine::{Command, Engine, EngineConfig};

/// Loads the model and serves it. `back` sends into `cmds`: the helper threads answer through it.
pub fn load_and_run(
    args: &Args,
    out: Sender<FromWorker>,
    cmds: Receiver<Command>,
    back: Sender<Command>,
) -> Result<()> {
    let started = Instant::now();
    let mut backend = LlamaBackend::init().context("llama.cpp backend")?;
    if std::env::var_os("EDEN_LLAMA_LOGS").is_some() {
        llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
    } else {
        backend.void_logs();
    }
    if !args.model.is_file() {
        bail!("model file {} does not exist", args.model.display());
    }
    // Loading progress for the router, in steps of at least a hundredth.
    let progress = out.clone();
    let mut reported = -1.0f32;
    let params = LlamaModelParams::default().with_n_gpu_layers(args.gpu_layers).with_progress_callback(move |p| {
        if p - reported >= 0.01 || (p >= 1.0 && reported < 1.0) {
            reported = p;
            let _ = progress.send(FromWorker::Loading { progress: p.clamp(0.0, 1.0) });
        }
        true
    });
    let mut model = LlamaModel::load_from_file(&backend, &args.model, &params)
        .with_context(|| format!("llama.cpp could not load {}", args.model.display()))?;
    let (adapters, adapter_failures) = load_adapters(&mut model, &args.lora);
    // The weights llama.cpp copied (repacked) are not counted twice (see `mapped`).
    match crate::mapped::release(&args.model) {
        Ok(bytes) => tracing::debug!(bytes, "model file pages released"),
        Err(e) => tracing::warn!(error = %e, "cannot release the model file's pages"),
    }
    // The model lives as long as the process: helper threads read it, and one may still be in
    // a llama.cpp call for a request that has ended when the worker exits.
    let model: &'static LlamaModel = Box::leak(Box::new(model));

    let template = chat_template(args, model)?;
    let n_ctx_train = model.n_ctx_train().max(1);
    let n_ctx_slot = model_bucket_shared::ctx_per_slot(args.ctx, Some(n_ctx_train as u64));
    let threads = args.threads.unwrap_or_else(available_cores) as i32;
    let slots = args.parallel;
    let total = n_ctx_slot.checked_mul(slots).context("ctx × parallel overflows")?;
    let ctx_params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(total))
        .with_n_batch(args.batch)
        .with_n_ubatch(args.batch.min(512))
        .with_n_seq_max(slots)
        .with_kv_unified(false)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    // One sampled position per slot per step, as llama-server sizes it, and the positions
    // speculation proposes (a step's may all be one sequence's).
    let speculate = args.speculative == crate::args::Speculative::Ngram;
    let drafts = if speculate { model_bucket_shared::draft_outputs(model.n_vocab().max(1) as u64) } else { 0 };
    let ctx_params = with_n_outputs_max(ctx_params, slots + drafts, 1 + drafts);
    let ctx = model.new_context(&backend, ctx_params).context("llama.cpp could not create the context")?;
    // llama.cpp may round the context; each sequence gets an equal share.
    let n_ctx_slot = ctx.n_ctx() / slots;
    let has_chat_template = template.is_some();
    let ready = ReadyInfo {
        load_ms: started.elapsed().as_millis() as u64,
        memory_bytes: rss_bytes(None).unwrap_or(0),
        n_ctx: n_ctx_slot,
        slots,
        has_chat_template,
    };
    tracing::info!(model = %args.model.display(), load_ms = ready.load_ms, n_ctx_slot, slots, threads, has_chat_template, "ready");
    let _ = out.send(FromWorker::Ready(ready));
    // llama.cpp caps the batch at the context size.
    let cfg = EngineConfig {
        n_ctx_slot,
        n_batch: ctx.n_batch(),
        max_queue: args.max_queue,
        n_swa: sliding_window(model),
        slots,
        adapters,
        adapter_failures,
        max_sampling: std::time::Duration::from_millis(args.max_sampling_ms),
        speculate,
        draft_outputs: drafts,
    };
    let cache = cache_config(args, n_ctx_slot, slots);
    let embedder = crate::engine::embed::Embedder::new(model, &backend, threads, n_ctx_slot);
    // One helper per slot, and as many again for work of ended requests still in llama.cpp.
    let pool = Pool::new(Reader::new(model, template), back, 2 * slots as usize + 2);
    Engine::new(model, ctx, pool, cfg, cache, embedder, out).run(cmds);
    Ok(())
}

/// The loaded adapters and the refused ones.
type Adapters = (Vec<(String, LlamaLoraAdapter)>, Vec<(String, String)>);

/// Loads the `--lora` adapters (before any context exists), each with the path requests name
/// it by. One llama.cpp refuses (another base's shapes, corrupt, missing) is logged and kept
/// with the reason, for the requests that name it: the model and its other adapters serve on.
fn load_adapters(model: &mut LlamaModel, paths: &[std::path::PathBuf]) -> Adapters {
    let (mut loaded, mut failed) = (Vec::new(), Vec::new());
    for p in paths {
        let name = p.to_string_lossy().into_owned();
        if !p.is_file() {
            tracing::error!(adapter = %name, "LoRA adapter not loaded: the file does not exist");
            failed.push((name, "the file does not exist".into()));
            continue;
        }
        match model.lora_adapter_init(p) {
            Ok(a) => {
                tracing::info!(adapter = %name, "LoRA adapter loaded");
                loaded.push((name, a));
            }
            Err(e) => {
                tracing::error!(adapter = %name, error = %e, "LoRA adapter not loaded");
                let why = format!("llama.cpp refused it ({e}); its tensors may not match this model");
                failed.push((name, why));
            }
        }
    }
    (loaded, failed)
}

/// The prompt caches beyond the slots. Files on disk are keyed by everything their KV states
/// depend on: the model file, the context per slot, the offload and the build.
fn cache_config(args: &Args, n_ctx_slot: u32, slots: u32) -> CacheConfig {
    let sha = args.model_sha256.as_deref().unwrap_or_default();
    let key = format!(
        "model {sha} ctx {n_ctx_slot} slots {slots} kv f16 gpu_layers {} build {}",
        args.gpu_layers,
        cache::build_id()
    );
    CacheConfig {
        memory_bytes: usize::try_from(args.prompt_cache_bytes).unwrap_or(usize::MAX),
        disk: args
            .kv_cache_dir
            .clone()
            .filter(|_| !sha.is_empty() && args.kv_cache_max > 0)
            .map(|d| (d, args.kv_cache_max)),
        disk_write_time: std::time::Duration::from_millis(args.kv_cache_write_ms),
        key,
    }
}

/// The model's sliding attention window from its GGUF metadata, in tokens (0: none).
fn sliding_window(model: &LlamaModel) -> u32 {
    let arch = model.meta_val_str("general.architecture").unwrap_or_default();
    model.meta_val_str(&format!("{arch}.attention.sliding_window")).ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The template from `--chat-template` (a name or a file), else the GGUF's own, else none.
fn chat_template(args: &Args, model: &LlamaModel) -> Result<Option<ChatTemplate>> {
    let source = match &args.chat_template {
        Some(name) => match template::named(name) {
            Some(src) => src.to_string(),
            None => std::fs::read_to_string(name).with_context(|| {
                format!(
                    "--chat-template {name:?} is neither a built-in name (chatml, gemma, llama3) nor a readable file"
                )
            })?,
        },
        None => match model.chat_template(None) {
            Ok(t) => t.to_string().context("the GGUF chat template is not UTF-8")?,
            Err(_) => return Ok(None),
        },
    };
    let vocab = model.vocab();
    let piece = |tok| String::from_utf8_lossy(&vocab.token_to_piece(tok, true, None)).into_owned();
    let t = ChatTemplate::new(source, piece(vocab.bos()), piece(vocab.eos()), vocab.should_add_bos())
        .map_err(anyhow::Error::msg)?;
    Ok(Some(t))
}

/// Sets `n_outputs_max` (and per sequence), which `llama-cpp-2` 0.1.160 has no setter for. Left
/// at llama.cpp's default (`n_batch`), the logits buffer is sized for 2048 outputs (384 MiB for
/// a 49k-token vocabulary) although a step asks for one output per slot and the proposals.
fn with_n_outputs_max(params: LlamaContextParams, n: u32, per_seq: u32) -> LlamaContextParams {
    use llama_cpp_sys_2::llama_context_params as Raw;
    // `LlamaContextParams` has exactly one field, the raw struct: equal size and alignment mean
    // that field spans the whole value, so the two are interchangeable.
    const _: () = assert!(std::mem::size_of::<LlamaContextParams>() == std::mem::size_of::<Raw>());
    const _: () = assert!(std::mem::align_of::<LlamaContextParams>() == std::mem::align_of::<Raw>());
    // SAFETY: same size and alignment, single field (see above); no pointers are changed.
    let mut raw: Raw = unsafe { std::mem::transmute::<LlamaContextParams, Raw>(params) };
    raw.n_outputs_max = n;
    raw.n_outputs_max_per_seq = per_seq;
    // SAFETY: as above, in the other direction.
    unsafe { std::mem::transmute::<Raw, LlamaContextParams>(raw) }
}

/// Cores this process may run on (its affinity mask), at least 1.
fn available_cores() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
}
