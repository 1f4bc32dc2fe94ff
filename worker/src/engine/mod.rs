//! The decode loop: one thread owns the llama.cpp context and serves every request through
//! continuous batching.
//!
//! Each step puts one token of every generating sequence plus prompt chunks of newly admitted
//! ones into a single batch, decodes it once, and samples every sequence that produced logits.
//! A request that arrives while others run is admitted into a free slot at the next step: the
//! free slot whose cells share the longest prefix with its prompt, so only the rest is
//! prefilled (see [`prefix`]). One that finishes frees its slot at once but leaves its tokens
//! in the cells for the next request. Requests beyond the slots wait in a bounded queue. A
//! sequence that fills its context ends there with `length`, unless its request asked for more
//! tokens than the context holds: that one is shifted (prompt head kept, the oldest half of the
//! rest dropped) and runs on to its `max_tokens` (see [`slot::when_full`]).
//!
//! A generating sequence may also put tokens it proposes into the step, after its own: the
//! ones that followed the last time its recent tokens occurred ([`spec`]). Its sampler then
//! runs through them position by position and keeps each one it picks itself; the rest leave
//! the cells. One step can so yield several of its tokens.

pub mod embed;
mod held;
pub mod helper;
mod helping;
mod logprob;
pub mod lora;
mod pick;
mod prefix;
mod pyjson;
pub mod reuse;
mod sampler;
mod share;
mod slot;
pub mod spec;
pub mod template;
pub mod text;
mod tool_prompt;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use model_bucket_shared::protocol::{
    DoneInfo, EmbedRequest, ErrorKind, FinishReason, FromWorker, GenerateRequest, RequestId, Timings, TokenLogprob,
    Usage,
};
use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::cache::disk::DiskCache;
use crate::cache::memory::MemoryCache;
use crate::cache::CacheConfig;
use lora::AdapterSet;
use prefix::Cells;
use reuse::{choose_slot, FreeSlot};
use share::Twin;
use slot::{Active, Queued};
use text::Pushed;

/// What the connection tells the engine.
#[derive(Debug)]
pub enum Command {
    Generate(Box<GenerateRequest>),
    Cancel(RequestId),
    /// Refuse new requests; finish those already received within `grace`, then return.
    Shutdown {
        grace: Duration,
    },
    /// The connection delivered an undecodable frame: report it, end every request, return.
    BadFrame(String),
    Embed(Box<EmbedRequest>),
    /// A helper read a request (see [`helper`]).
    Read(Box<helper::Read>),
    /// A helper sampled a constrained token.
    Picked(Box<helper::Picked>),
    /// A helper's task for this request panicked.
    HelperFailed(RequestId),
    /// Hold at most `bytes` of evictable memory, the embedding context counted as
    /// `embed_bytes` at least (see [`held`]).
    Allow {
        bytes: u64,
        embed_bytes: u64,
    },
}

/// Engine limits, and the adapters loaded with the model.
pub struct EngineConfig {
    /// Context of each slot, in tokens.
    pub n_ctx_slot: u32,
    /// Tokens per decode call (prompt chunks are cut to fit).
    pub n_batch: u32,
    /// Requests allowed to wait for a slot.
    pub max_queue: usize,
    /// Sliding-window size of the model's attention, in tokens (0: none).
    pub n_swa: u32,
    /// Concurrent sequences (slots).
    pub slots: u32,
    /// The LoRA adapters, each with the path requests name it by.
    pub adapters: Vec<(String, LlamaLoraAdapter)>,
    /// The adapters that could not be loaded: (path, why).
    pub adapter_failures: Vec<(String, String)>,
    /// The most helper time one request may use (reading it, sampling under its grammar).
    pub max_sampling: Duration,
    /// Generating sequences propose tokens (n-gram speculation, see [`spec`]).
    pub speculate: bool,
    /// The most tokens they propose in one step, all together (the logits buffer holds them).
    pub draft_outputs: u32,
}

pub struct Engine<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    /// Threads that read requests and sample constrained tokens off the decode loop.
    pool: helper::Pool,
    /// Requests being read on a helper: since when, and the adapters they run with.
    reading: Vec<(RequestId, Instant, AdapterSet)>,
    /// Logits copies for helpers, kept for reuse.
    logit_bufs: Vec<Vec<f32>>,
    /// Decode steps so far.
    step_no: u64,
    cfg: EngineConfig,
    slots: Vec<Option<Active>>,
    /// What each slot's KV sequence holds, requests or not.
    cells: Vec<Cells>,
    /// Counts slot admissions; orders uses for the caches.
    tick: u64,
    memory: MemoryCache,
    /// The most the host prompt cache may hold, whatever the router allows.
    cache_capacity: usize,
    /// Evictable memory the router allows (see [`held`]); unbounded until it says.
    allowed: usize,
    /// The (prompt cache, embedding context) bytes last reported.
    reported_held: (usize, usize),
    /// The least the embedding context counts for while it exists, as the router counts it.
    embed_counted: usize,
    /// The router asked for less than the embedding context while an embeddings request was
    /// under way: it goes once that is done.
    shrink_pending: bool,
    disk: Option<DiskCache>,
    /// The most time [`Engine::persist`] spends writing to `disk`.
    persist_time: Duration,
    queue: VecDeque<Queued>,
    batch: LlamaBatch<'static>,
    out: Sender<FromWorker>,
    /// Set by `Shutdown`: no new requests; return once idle or past the deadline.
    deadline: Option<Instant>,
    /// Scratch buffer for token pieces.
    piece: Vec<u8>,
    /// Buffers for constrained sampling and log-probabilities.
    scratch: pick::Scratch,
    /// Tokens that mark tool calls in some model families' output (`<tool_call>`,
    /// `[TOOL_CALLS]`, ...), spelled out for requests that offer tools although they are
    /// special tokens.
    markers: Vec<LlamaToken>,
    embedder: embed::Embedder<'m>,
    /// Embeddings requests in arrival order; one input is embedded per step.
    embeds: VecDeque<embed::EmbedJob>,
    /// The LoRA adapters loaded with the model, and their paths as requests name them.
    adapters: Vec<LlamaLoraAdapter>,
    adapter_paths: Vec<String>,
    /// Adapters llama.cpp refused to load (path, why): requests for them get the reason.
    adapter_failures: Vec<(String, String)>,
    /// The adapter set of the last decode step (applied to `ctx`), and its steps in a row.
    running: AdapterSet,
    run: u32,
    /// Sequences may speculate: asked for, and the model's memory can drop cells at the end
    /// of a sequence (a recurrent state cannot).
    speculate: bool,
    /// What a proposed token adds to a step's time (see [`spec::Cost`]).
    cost: spec::Cost,
    /// The tokens one verification picked, with their log-probabilities (reused).
    picked: Vec<(LlamaToken, Option<TokenLogprob>)>,
}

/// A non-streamed request's text is sent once this much is pending, in bytes...
const UNSTREAMED_BYTES: usize = 256 * 1024;
/// ... or once this many log-probabilities are.
const UNSTREAMED_LOGPROBS: usize = 1024;

/// Tool-call markers of the families the router's parser knows.
const TOOL_MARKERS: &[&str] = &["<tool_call>", "</tool_call>", "[TOOL_CALLS]", "<|python_tag|>", "[ARGS]", "[CALL_ID]"];

impl<'m> Engine<'m> {
    pub fn new(
        model: &'m LlamaModel,
        ctx: LlamaContext<'m>,
        pool: helper::Pool,
        cfg: EngineConfig,
        cache: CacheConfig,
        embedder: embed::Embedder<'m>,
        out: Sender<FromWorker>,
    ) -> Engine<'m> {
        let mut cfg = cfg;
        let speculate = cfg.speculate && !model.is_recurrent() && !model.is_hybrid();
        let adapters = std::mem::take(&mut cfg.adapters);
        let adapter_failures = std::mem::take(&mut cfg.adapter_failures);
        let slots = cfg.slots;
        let batch = LlamaBatch::new(cfg.n_batch as usize, slots as i32);
        let disk = cache.disk.and_then(|(root, max)| match DiskCache::open(&root, cache.key, max) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!(root = %root.display(), error = %e, "prompt cache on disk unavailable");
                None
            }
        });
        // A marker counts when the vocabulary has it as one token.
        let markers = TOOL_MARKERS
            .iter()
            .filter_map(|m| match model.vocab().tokenize(m.as_bytes(), false, true).as_slice() {
                [t] => Some(*t),
                _ => None,
            })
            .collect();
        Engine {
            model,
            ctx,
            pool,
            reading: Vec::new(),
            logit_bufs: Vec::new(),
            step_no: 0,
            cfg,
            slots: (0..slots).map(|_| None).collect(),
            cells: (0..slots).map(|_| Cells::default()).collect(),
            tick: 0,
            persist_time: cache.disk_write_time,
            memory: MemoryCache::new(cache.memory_bytes),
            cache_capacity: cache.memory_bytes,
            allowed: usize::MAX,
            reported_held: (0, 0),
            embed_counted: 0,
            shrink_pending: false,
            disk,
            queue: VecDeque::new(),
            batch,
            out,
            deadline: None,
            piece: Vec::with_capacity(64),
            scratch: pick::Scratch::default(),
            markers,
            embedder,
            embeds: VecDeque::new(),
            adapter_paths: adapters.iter().map(|(p, _)| p.clone()).collect(),
            adapters: adapters.into_iter().map(|(_, a)| a).collect(),
            running: AdapterSet::BASE,
            run: 0,
            adapter_failures,
            speculate,
            cost: spec::Cost::default(),
            picked: Vec::new(),
        }
    }

    /// Runs until the command channel closes or a shutdown completes, then writes the most
    /// valuable cached prefixes to disk.
    pub fn run(mut self, rx: Receiver<Command>) {
        self.serve(rx);
        self.persist();
    }

    fn serve(&mut self, rx: Receiver<Command>) {
        loop {
            if !self.busy() {
                if self.deadline.is_some() {
                    return;
                }
                match rx.recv() {
                    Ok(c) => self.handle(c),
                    Err(_) => return,
                }
            } else if !self.can_step() {
                // Only helpers have work: wait for one, or for a budget or the deadline to pass.
                match rx.recv_timeout(self.next_due(Instant::now())) {
                    Ok(c) => self.handle(c),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(c) => self.handle(c),
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    // The router is gone: nobody is left to read the results.
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                }
            }
            if let Some(deadline) = self.deadline {
                if Instant::now() >= deadline {
                    self.cancel_all("the worker is shutting down");
                    return;
                }
                if !self.busy() {
                    return;
                }
            }
            self.overdue(Instant::now());
            self.admit();
            if let Some(grace) = self.step() {
                if !self.await_picks(&rx, grace) {
                    return;
                }
            }
            self.embed_next();
            if self.embed_held() != self.reported_held.1 || self.shrink_due() {
                let due = self.shrink_due();
                self.fit_allowance(due);
            }
            self.report_held(false);
        }
    }

    fn busy(&self) -> bool {
        !self.queue.is_empty()
            || self.slots.iter().any(Option::is_some)
            || !self.embeds.is_empty()
            || !self.reading.is_empty()
    }

    fn send(&self, m: FromWorker) {
        // A closed channel means the connection is gone; the loop notices on its next recv.
        let _ = self.out.send(m);
    }

    fn error(&self, id: RequestId, kind: ErrorKind, message: String) {
        self.send(FromWorker::Error { id: Some(id), kind, message });
    }

    fn handle(&mut self, c: Command) {
        match c {
            Command::BadFrame(message) => {
                self.send(FromWorker::Error { id: None, kind: ErrorKind::BadFrame, message });
                self.deadline = Some(Instant::now());
            }
            Command::Generate(req) => self.enqueue(req),
            Command::Embed(req) => self.enqueue_embed(*req),
            Command::Read(r) => self.queue_read(*r),
            Command::Picked(p) => self.picked(*p),
            Command::HelperFailed(id) => self.helper_failed(id),
            Command::Allow { bytes, embed_bytes } => self.allow(bytes, embed_bytes),
            Command::Cancel(id) => self.cancel(id),
            Command::Shutdown { grace } => {
                // Requests already received (running or queued) may finish; new ones are refused.
                let d = Instant::now() + grace;
                self.deadline = Some(self.deadline.map_or(d, |old| old.min(d)));
            }
        }
    }

    /// Validates and tokenizes a request, then queues it (or answers with an error).
    fn enqueue(&mut self, req: Box<GenerateRequest>) {
        let id = req.id;
        if self.deadline.is_some() {
            return self.error(id, ErrorKind::ShuttingDown, "the worker is shutting down".into());
        }
        let waiting = self.queue.len() + self.reading.len();
        if waiting >= self.cfg.max_queue {
            return self.error(
                id,
                ErrorKind::Overloaded,
                format!("{waiting} requests are already waiting for this model (--max-queue); retry shortly"),
            );
        }
        if let Err(m) = sampler::validate(&req.sampling, self.model.n_vocab()) {
            return self.error(id, ErrorKind::BadRequest, m);
        }
        let set = match AdapterSet::resolve(&req.lora, &self.adapter_paths, &self.adapter_failures) {
            Ok(s) => s,
            Err((kind, m)) => return self.error(id, kind, m),
        };
        // Rendering, tokenizing and compiling its constraint may take long: a helper does it.
        self.reading.push((id, Instant::now(), set));
        self.pool.read(req);
    }

    fn cancel(&mut self, id: RequestId) {
        self.pool.forget(id);
        if let Some(pos) = self.reading.iter().position(|(r, _, _)| *r == id) {
            let (_, since, _) = self.reading.swap_remove(pos);
            self.send(FromWorker::Done(Box::new(DoneInfo {
                id,
                finish: FinishReason::Cancelled,
                usage: Usage::default(),
                timings: Timings { queue_ms: ms(since.elapsed()), ..Default::default() },
            })));
            return;
        }
        if let Some(pos) = self.embeds.iter().position(|j| j.id == id) {
            self.embeds.remove(pos);
            return self.error(id, ErrorKind::ShuttingDown, "cancelled".into());
        }
        if let Some(pos) = self.queue.iter().position(|q| q.req.id == id) {
            let q = self.queue.remove(pos).expect("position is valid");
            let usage = Usage { prompt_tokens: q.tokens.len() as u32, ..Default::default() };
            self.send(FromWorker::Done(Box::new(DoneInfo {
                id,
                finish: FinishReason::Cancelled,
                usage,
                timings: Timings { queue_ms: ms(q.enqueued.elapsed()), ..Default::default() },
            })));
            return;
        }
        if let Some(i) = self.slots.iter().position(|s| s.as_ref().is_some_and(|a| a.id == id)) {
            self.finish(i, FinishReason::Cancelled);
        }
    }

    /// Token IDs as tokens, when every one is in the vocabulary.
    fn vocab_tokens(&self, ids: &[i32]) -> Result<Vec<LlamaToken>, String> {
        helper::vocab_tokens(ids, self.model.n_vocab())
    }

    /// Ends every request with an error: a request cut short must never look complete.
    fn cancel_all(&mut self, why: &str) {
        for job in std::mem::take(&mut self.embeds) {
            self.error(job.id, ErrorKind::ShuttingDown, why.into());
        }
        for q in std::mem::take(&mut self.queue) {
            self.error(q.req.id, ErrorKind::ShuttingDown, why.into());
        }
        for (id, _, _) in std::mem::take(&mut self.reading) {
            self.pool.forget(id);
            self.error(id, ErrorKind::ShuttingDown, why.into());
        }
        for i in 0..self.slots.len() {
            if let Some(a) = self.slots[i].take() {
                self.pool.forget(a.id);
                self.release(i);
                self.error(
                    a.id,
                    ErrorKind::ShuttingDown,
                    format!("{why}: this request was stopped after {} generated tokens, before it finished", a.n_gen),
                );
            }
        }
    }

    /// Moves queued requests into free slots, each to the slot that holds most of its prompt.
    fn admit(&mut self) {
        while let Some(q) = self.queue.front() {
            // Cells computed with other adapters are no prefix of this request's.
            let set = q.set;
            let free = (0..self.slots.len()).filter(|&i| self.slots[i].is_none()).map(|i| FreeSlot {
                index: i,
                cached: if self.cells[i].private || self.cells[i].set != set { &[] } else { &self.cells[i].tokens },
                used: self.cells[i].used,
            });
            // A request that will not reuse a prefix takes the least recently used slot, leaving
            // the others' prefixes to requests that will.
            // So does one whose prompt another slot is prefilling right now: it copies that
            // slot's cells once they are done (see [`share`]).
            let twin = if q.req.cache_prompt { self.twin(&q.tokens, set) } else { None };
            let key: &[_] = if q.req.cache_prompt && twin.is_none() { &q.tokens } else { &[] };
            let Some((i, _)) = choose_slot(free, key) else { return };
            let q = self.queue.pop_front().expect("front exists");
            let sampler = sampler::build(&q.req.sampling, self.model, self.cfg.n_ctx_slot);
            if let Some(Twin::Prefilling(l, id)) = twin {
                self.vacate(i, false, set);
                let following = Active::following(q, sampler, self.cfg.n_ctx_slot, (l, id), self.speculate);
                self.slots[i] = Some(following);
                continue;
            }
            let (kept, tier) = match twin {
                Some(Twin::Generating(l)) => self.copy_prompt(l, i, q.tokens.len()),
                _ => self.prepare(i, &q.tokens, q.req.cache_prompt, set),
            };
            self.slots[i] = Some(Active::new(q, sampler, self.cfg.n_ctx_slot, kept, tier, self.speculate));
        }
    }

    /// One decode step over the active slots of one adapter set (see [`lora`]). Returns how
    /// long to wait for the constrained samples it sent to helpers, when it sent any.
    fn step(&mut self) -> Option<Duration> {
        self.orphans();
        self.batch.clear();
        let with_work = self.slots.iter().flatten().filter(|a| a.last.is_some() || a.n_fed < a.prompt.len());
        let set = lora::next_set(with_work.map(|a| a.set), self.running, self.run)?;
        if let Err(m) = lora::apply(&mut self.ctx, &mut self.adapters, set) {
            self.fail_set(set, m);
            return None;
        }
        self.run = if set == self.running { self.run.saturating_add(1) } else { 1 };
        self.running = set;
        let n_ctx = self.cfg.n_ctx_slot as i32;
        // Generating sequences first: one token each and their proposals, so they never wait
        // behind a prompt. Proposals take only what the others' tokens leave of the batch.
        let generating = self.slots.iter().flatten().filter(|a| a.set == set && a.last.is_some()).count();
        let mut room = (self.cfg.n_batch as usize).saturating_sub(generating).min(self.cfg.draft_outputs as usize);
        let ratio = self.cost.ratio(generating);
        // A sliding-window cache reuses cells that fall out of the window of a sequence's
        // latest position, also between the micro-batches of one step: proposals that are
        // dropped afterwards could leave the kept tokens without cells they attend to. So on
        // such a model one sequence proposes a step, and no prompt chunk joins it: its
        // proposals then form one micro-batch after everyone's own token.
        let one_proposal = self.cfg.n_swa > 0;
        let mut proposed = false;
        for i in 0..self.slots.len() {
            let Some(a) = self.slots[i].as_mut().filter(|a| a.set == set) else { continue };
            let Some(tok) = a.last else { continue };
            if a.n_past >= n_ctx {
                if slot::when_full(a.max_tokens, a.prompt.len(), n_ctx) == slot::Full::End {
                    self.finish(i, FinishReason::Length);
                    continue;
                }
                if let Err(e) = shift(&mut self.ctx, i as i32, a, &mut self.cells[i]) {
                    let id = a.id;
                    self.slots[i] = None;
                    self.clear(i);
                    self.error(id, ErrorKind::Internal, format!("context shift failed: {e}"));
                    continue;
                }
            }
            let a = self.slots[i].as_mut().expect("still active");
            a.logits_at = Some(self.batch.n_tokens());
            self.batch.add(tok, a.n_past, &[i as i32], true).expect("one token per slot fits the batch");
            self.cells[i].tokens.push(tok);
            a.n_past += 1;
            let Some(budget) = a.spec else { continue };
            if one_proposal && proposed {
                continue;
            }
            // Within the context, and never past `max_tokens`: the check emits one token more
            // than it keeps.
            let to_go = a.max_tokens.map_or(usize::MAX, |m| m.saturating_sub(a.n_gen) as usize);
            let k = budget.k(ratio).min((n_ctx - a.n_past).max(0) as usize).min(to_go.saturating_sub(1)).min(room);
            spec::draft(&self.cells[i].tokens, k, &mut a.draft);
            if a.draft.is_empty() {
                a.spec = Some(budget.tick());
                continue;
            }
            for (j, &d) in a.draft.iter().enumerate() {
                self.batch.add(d, a.n_past + j as i32, &[i as i32], true).expect("proposals sized to the batch");
            }
            room -= a.draft.len();
            proposed = true;
            self.cells[i].tokens.extend_from_slice(&a.draft);
            a.n_past += a.draft.len() as i32;
        }
        // Then prompt chunks, as many as the batch holds.
        let mut prefilled = false;
        for i in 0..self.slots.len() {
            if one_proposal && proposed {
                break;
            }
            let room = self.cfg.n_batch as usize - self.batch.n_tokens() as usize;
            if room == 0 {
                break;
            }
            let Some(a) = self.slots[i].as_mut().filter(|a| a.set == set) else { continue };
            if a.n_fed >= a.prompt.len() {
                continue;
            }
            let end = (a.n_fed + room).min(a.prompt.len());
            for (k, &tok) in a.prompt[a.n_fed..end].iter().enumerate() {
                let pos = (a.n_fed + k) as i32;
                let last = a.n_fed + k + 1 == a.prompt.len();
                if last {
                    a.logits_at = Some(self.batch.n_tokens());
                }
                self.batch.add(tok, pos, &[i as i32], last).expect("chunk sized to the batch");
            }
            self.cells[i].tokens.extend_from_slice(&a.prompt[a.n_fed..end]);
            prefilled = true;
            a.n_fed = end;
            a.n_past = end as i32;
        }
        if self.batch.n_tokens() == 0 {
            return None;
        }
        let decoding = Instant::now();
        let decoded = self.ctx.decode(&mut self.batch);
        // Half the decode: a sample that takes longer sits out steps instead of holding others.
        let grace = decoding.elapsed() / 2;
        if !prefilled && decoded.is_ok() {
            self.cost = self.cost.observe(self.batch.n_tokens() as usize, decoding.elapsed().as_secs_f64());
        }
        self.step_no += 1;
        if let Err(e) = decoded {
            tracing::error!(error = %e, "decode failed");
            // What the cells hold is unknown now: forget every slot's cache.
            for i in 0..self.slots.len() {
                self.clear(i);
                if let Some(a) = self.slots[i].take() {
                    self.error(a.id, ErrorKind::Internal, format!("llama.cpp decode failed: {e}"));
                }
            }
            return None;
        }
        self.copy_finished_prompts();
        let mut sent = false;
        for i in 0..self.slots.len() {
            let Some(a) = self.slots[i].as_mut() else { continue };
            let Some(at) = a.logits_at.take() else { continue };
            let Some(picker) = a.picker.as_mut() else { continue };
            if picker.constrained() {
                // A grammar's cost is the request's choice: a helper samples it from a copy of
                // the logits while the loop goes on.
                let mut logits = self.logit_bufs.pop().unwrap_or_default();
                logits.clear();
                logits.extend_from_slice(self.ctx.get_logits_ith(at));
                let picker = a.picker.take().expect("checked above");
                // Its last token is in the cells now; it has no next one until the helper answers.
                a.last = None;
                // One whose last sample outlasted the wait is not waited for: it sits out.
                a.picking = Some((Instant::now(), (a.last_pick <= grace).then_some(self.step_no)));
                self.pool.pick(Box::new(helper::Pick { slot: i, id: a.id, picker, logits }));
                sent = true;
                continue;
            }
            let tok = picker.pick(&self.ctx, at, &mut self.scratch).expect("free text always has a token");
            let logprob = picker.logprob(self.ctx.get_logits_ith(at), self.model, tok, &mut self.scratch);
            if a.draft.is_empty() {
                self.emit(i, tok, logprob);
            } else {
                self.verify(i, at, tok, logprob);
            }
        }
        sent.then_some(grace)
    }

    /// Slot `i` proposed `draft` after its last token (at batch index `at`) and sampled
    /// `first` there. Its sampler goes on through the proposals while each is the token it
    /// picks; the proposals it did not keep leave the cells; then everything it picked is
    /// emitted, in order, as if it had come one step at a time.
    fn verify(&mut self, i: usize, at: i32, first: LlamaToken, logprob: Option<TokenLogprob>) {
        let Some(a) = self.slots[i].as_mut() else { return };
        let Some(picker) = a.picker.as_mut() else { return };
        let mut picked = std::mem::take(&mut self.picked);
        picked.clear();
        picked.push((first, logprob));
        let mut kept = 0;
        while kept < a.draft.len() {
            let tok = picked[kept].0;
            if tok != a.draft[kept] || self.model.vocab().is_eog(tok) {
                break;
            }
            kept += 1;
            let idx = at + kept as i32;
            let t = picker.pick(&self.ctx, idx, &mut self.scratch).expect("free text always has a token");
            let lp = picker.logprob(self.ctx.get_logits_ith(idx), self.model, t, &mut self.scratch);
            picked.push((t, lp));
        }
        let drafted = a.draft.len();
        a.draft.clear();
        a.drafted += drafted as u32;
        a.accepted += kept as u32;
        a.spec = a.spec.map(|b| b.after(drafted, kept));
        if kept < drafted {
            let from = a.n_past - (drafted - kept) as i32;
            if self.ctx.clear_kv_cache_seq(Some(i as u32), Some(from as u32), None) != Ok(true) {
                let id = a.id;
                self.slots[i] = None;
                self.clear(i);
                self.picked = picked;
                return self.error(
                    id,
                    ErrorKind::Internal,
                    "dropping rejected proposals from the KV cache failed".into(),
                );
            }
            self.cells[i].tokens.truncate(from as usize);
            a.n_past = from;
        }
        for (tok, lp) in picked.drain(..) {
            // A token may end the request (end of generation, a stop string, `max_tokens`).
            if self.slots[i].is_none() {
                break;
            }
            self.emit(i, tok, lp);
        }
        self.picked = picked;
    }

    /// Slot `i` sampled `tok`: its text goes out, and the request ends or goes on.
    fn emit(&mut self, i: usize, tok: LlamaToken, logprob: Option<TokenLogprob>) {
        let Some(a) = self.slots[i].as_mut() else { return };
        if a.first_token.is_none() {
            a.first_token = Some(Instant::now());
        }
        if self.model.vocab().is_eog(tok) {
            return self.finish(i, FinishReason::Stop);
        }
        a.n_gen += 1;
        if let Some(lp) = logprob {
            a.unsent_logprobs.push(lp);
        }
        self.piece.clear();
        let special = a.markers && self.markers.contains(&tok);
        self.model.vocab().token_to_piece_into(tok, &mut self.piece, special, None);
        let stopped = a.text.push(&self.piece, &mut a.unsent) == Pushed::Stop;
        a.unsent_tokens += 1;
        if stopped {
            return self.finish(i, FinishReason::Stop);
        }
        if a.max_tokens.is_some_and(|m| a.n_gen >= m) {
            return self.finish(i, FinishReason::Length);
        }
        a.last = Some(tok);
        // A non-streamed answer still travels in bounded pieces: one message must stay far
        // below the frame limit, however long the answer and its log-probabilities grow.
        let flush = if a.stream {
            !a.unsent.is_empty()
        } else {
            a.unsent.len() >= UNSTREAMED_BYTES || a.unsent_logprobs.len() >= UNSTREAMED_LOGPROBS
        };
        if flush {
            let text = std::mem::take(&mut a.unsent);
            let n_tokens = std::mem::take(&mut a.unsent_tokens);
            let logprobs = std::mem::take(&mut a.unsent_logprobs);
            let id = a.id;
            self.send(FromWorker::Tokens { id, text, n_tokens, logprobs });
        }
    }

    /// Ends every request of adapter set `set` with an error, their cells forgotten.
    fn fail_set(&mut self, set: AdapterSet, message: String) {
        tracing::error!(error = %message, "LoRA adapter not applied");
        for i in 0..self.slots.len() {
            if self.slots[i].as_ref().is_some_and(|a| a.set == set) {
                let a = self.slots[i].take().expect("checked");
                self.clear(i);
                self.error(a.id, ErrorKind::Internal, message.clone());
            }
        }
    }

    /// Ends the request in slot `i`: flushes its text and sends `Done`. Its cells stay, for the
    /// next request that shares their prefix.
    fn finish(&mut self, i: usize, finish: FinishReason) {
        let Some(mut a) = self.slots[i].take() else { return };
        self.release(i);
        a.text.finish(&mut a.unsent);
        if !a.unsent.is_empty() || a.unsent_tokens > 0 {
            self.send(FromWorker::Tokens {
                id: a.id,
                text: std::mem::take(&mut a.unsent),
                n_tokens: a.unsent_tokens,
                logprobs: std::mem::take(&mut a.unsent_logprobs),
            });
        }
        let now = Instant::now();
        let first = a.first_token.unwrap_or(now);
        self.send(FromWorker::Done(Box::new(DoneInfo {
            id: a.id,
            finish,
            usage: Usage {
                prompt_tokens: a.prompt.len() as u32,
                completion_tokens: a.n_gen,
                cached_tokens: a.cached as u32,
                cached_from: a.cached_from,
            },
            timings: Timings {
                queue_ms: ms(a.admitted - a.enqueued),
                prompt_ms: ms(first - a.admitted),
                decode_ms: ms(now - first),
                drafted: a.drafted,
                accepted: a.accepted,
            },
        })));
    }
}

/// Makes room in slot `seq`'s context: keeps the first `n_keep` tokens, drops the oldest half
/// of the rest and moves the remainder down; `cells` follows (its tokens, and from where on they
/// are stale).
fn shift(ctx: &mut LlamaContext<'_>, seq: i32, a: &mut Active, cells: &mut Cells) -> Result<(), String> {
    let n_left = a.n_past - a.n_keep;
    let n_discard = n_left / 2;
    if n_discard <= 0 {
        return Err(format!("nothing to discard (kept {}, past {})", a.n_keep, a.n_past));
    }
    let (keep, cut, past) = (a.n_keep as u32, (a.n_keep + n_discard) as u32, a.n_past as u32);
    ctx.kv_cache_seq_rm(seq, Some(keep), Some(cut)).map_err(|e| e.to_string())?;
    ctx.kv_cache_seq_add(seq, Some(cut), Some(past), -n_discard).map_err(|e| e.to_string())?;
    cells.tokens.drain(keep as usize..cut as usize);
    cells.shifted_at = Some(cells.shifted_at.map_or(keep as usize, |k| k.min(keep as usize)));
    a.n_past -= n_discard;
    debug_assert_eq!(cells.tokens.len(), a.n_past as usize);
    tracing::debug!(seq, n_keep = a.n_keep, n_discard, "context shifted");
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
