//! Helper threads for the work whose cost a request chooses and llama.cpp cannot interrupt:
//! reading a request into tokens and a grammar (rendering the chat template, which is the model
//! file's code; converting a JSON schema; compiling a grammar) and sampling a token under a
//! grammar. The decode loop hands this work here and goes on with its other sequences; results
//! come back as [`Command`]s on its own channel, and a request whose work is out sits out the
//! steps until it returns (see [`Engine::serve`](super::Engine)).
//!
//! The pool starts a thread when every thread is busy, up to its maximum: a thread may still be
//! running the work of a request that has ended (llama.cpp's calls cannot be stopped midway; the
//! result is dropped when it comes back). Past the maximum, work waits for a thread.

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use model_bucket_shared::protocol::{ErrorKind, GenerateRequest, Prompt, RequestId};
use std::collections::HashSet;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::pick::{Picker, Scratch};
use super::sampler;
use super::template::ChatTemplate;
use super::Command;

/// What reads requests: the model's vocabulary and chat template, and the last JSON schema
/// converted (the choices of one request share it).
pub struct Reader {
    pub model: &'static LlamaModel,
    pub template: Option<ChatTemplate>,
    memo: Mutex<Option<(String, String)>>,
}

impl Reader {
    pub fn new(model: &'static LlamaModel, template: Option<ChatTemplate>) -> Reader {
        Reader { model, template, memo: Mutex::new(None) }
    }

    /// The request's prompt as tokens and its constraint compiled, or the error it earns.
    pub fn read(&self, req: &GenerateRequest) -> Result<(Vec<LlamaToken>, Option<LlamaSampler>), (ErrorKind, String)> {
        let bad = |m: String| (ErrorKind::BadRequest, m);
        let tools = match req.tools.as_deref().map(serde_json::from_str::<serde_json::Value>).transpose() {
            Ok(t) => t,
            Err(e) => return Err(bad(format!("tools is not valid JSON: {e}"))),
        };
        // As llama-server does: the model's own BOS when it wants one, special tokens parsed.
        let tokenize = |text: &str| self.model.vocab().tokenize(text.as_bytes(), true, true);
        let tokens = match &req.prompt {
            Prompt::Tokens(ids) => vocab_tokens(ids, self.model.n_vocab()).map_err(|m| bad(format!("prompt {m}")))?,
            Prompt::Text(t) => tokenize(t),
            Prompt::Chat(messages) => match &self.template {
                None => {
                    return Err((
                        ErrorKind::NoChatTemplate,
                        "this model has no chat template; use completions, or give it one with chat_template".into(),
                    ))
                }
                Some(t) => tokenize(&t.render(messages, tools.as_ref()).map_err(bad)?),
            },
        };
        // A count needs no constraint compiled.
        let grammar = match req.constraint.as_ref().filter(|_| !req.count_only) {
            None => None,
            Some(c) => {
                // The memo is not held while converting: one slow schema delays no other read.
                let mut memo = self.memo.lock().expect("memo lock").clone();
                let g = sampler::grammar(self.model, c, &mut memo).map_err(bad)?;
                *self.memo.lock().expect("memo lock") = memo;
                Some(g)
            }
        };
        Ok((tokens, grammar))
    }
}

/// Token IDs as tokens, when every one is in the vocabulary.
pub fn vocab_tokens(ids: &[i32], n_vocab: i32) -> Result<Vec<LlamaToken>, String> {
    match ids.iter().find(|&&t| t < 0 || t >= n_vocab) {
        Some(bad) => Err(format!("token {bad} is outside the vocabulary (0..{n_vocab})")),
        None => Ok(ids.iter().map(|&t| LlamaToken(t)).collect()),
    }
}

/// A request read on a helper.
pub struct Read {
    pub req: Box<GenerateRequest>,
    pub result: Result<(Vec<LlamaToken>, Option<LlamaSampler>), (ErrorKind, String)>,
    pub took: Duration,
}

/// One constrained token to sample: the request's samplers and a copy of its logits.
pub struct Pick {
    pub slot: usize,
    pub id: RequestId,
    pub picker: Picker,
    pub logits: Vec<f32>,
}

/// A sampled token (`None`: the grammar allows none), with the samplers and logits back.
pub struct Picked {
    pub pick: Pick,
    pub token: Option<LlamaToken>,
    pub took: Duration,
}

impl std::fmt::Debug for Read {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Read {{ id: {:?}, ok: {} }}", self.req.id, self.result.is_ok())
    }
}

impl std::fmt::Debug for Picked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Picked {{ slot: {}, id: {:?}, token: {:?} }}", self.pick.slot, self.pick.id, self.token)
    }
}

enum Task {
    Read(Box<GenerateRequest>),
    Pick(Box<Pick>),
}

impl Task {
    fn id(&self) -> RequestId {
        match self {
            Task::Read(r) => r.id,
            Task::Pick(p) => p.id,
        }
    }
}

/// What the pool's threads and the engine share about the tasks (a request has at most one).
#[derive(Default)]
struct Ledger {
    /// Submitted and not finished, for requests still wanted.
    live: HashSet<RequestId>,
    /// Being run now.
    running: HashSet<RequestId>,
    /// Forgotten by the engine (the request ended) before their task finished: skipped if not
    /// started, their result dropped if running.
    dead: HashSet<RequestId>,
    /// Threads running a dead task: replaced meanwhile, up to [`MAX_ZOMBIES`].
    zombies: usize,
}

struct Shared {
    tasks: Mutex<Receiver<Task>>,
    ledger: Mutex<Ledger>,
}

/// The helper threads.
pub struct Pool {
    tx: Sender<Task>,
    shared: Arc<Shared>,
    reader: Arc<Reader>,
    back: Sender<Command>,
    threads: usize,
    max_threads: usize,
}

/// Threads still in a llama.cpp call for a request that has ended, which the pool replaces. Past
/// these, new work waits for a thread (and a request past its budget ends).
const MAX_ZOMBIES: usize = 8;

/// Stack of a helper thread: llama.cpp's grammar parser recurses per bracket.
const STACK_BYTES: usize = 8 << 20;

impl Pool {
    /// No thread runs until there is work. Results go to `back`, the engine's command channel.
    pub fn new(reader: Reader, back: Sender<Command>, max_threads: usize) -> Pool {
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = Arc::new(Shared { tasks: Mutex::new(rx), ledger: Mutex::new(Ledger::default()) });
        Pool { tx, shared, reader: Arc::new(reader), back, threads: 0, max_threads: max_threads.max(1) }
    }

    /// Reads `req` on a helper; a [`Command::Read`] brings it back.
    pub fn read(&mut self, req: Box<GenerateRequest>) {
        self.submit(Task::Read(req));
    }

    /// Samples on a helper; a [`Command::Picked`] brings it back.
    pub fn pick(&mut self, p: Box<Pick>) {
        self.submit(Task::Pick(p));
    }

    /// Request `id` has ended: its task is skipped if it has not started, and its result
    /// dropped on the helper if it has (the thread is replaced while it finishes).
    pub fn forget(&mut self, id: RequestId) {
        let mut l = self.shared.ledger.lock().expect("ledger lock");
        if l.live.remove(&id) {
            l.dead.insert(id);
            if l.running.contains(&id) {
                l.zombies += 1;
            }
        }
    }

    fn submit(&mut self, t: Task) {
        let wanted = {
            let mut l = self.shared.ledger.lock().expect("ledger lock");
            l.live.insert(t.id());
            // Only this pool submits, so a task beyond the working threads always finds one new.
            let working = self.threads.saturating_sub(l.zombies);
            l.live.len() > working && self.threads < self.max_threads + l.zombies.min(MAX_ZOMBIES)
        };
        if wanted {
            self.spawn();
        }
        // The receiver lives as long as `shared`, which this pool holds.
        let _ = self.tx.send(t);
    }

    fn spawn(&mut self) {
        let (shared, reader, back) = (self.shared.clone(), self.reader.clone(), self.back.clone());
        let started = std::thread::Builder::new()
            .name(format!("helper-{}", self.threads))
            .stack_size(STACK_BYTES)
            .spawn(move || work(&shared, &reader, &back));
        match started {
            Ok(_) => self.threads += 1,
            Err(e) => {
                tracing::warn!(error = %e, "no helper thread started; the work waits for a running one");
            }
        }
    }
}

/// Niceness of helper threads: while a slow sample runs, the decode loop's own threads come
/// first on a busy CPU.
const HELPER_NICE: i32 = 10;

fn work(shared: &Shared, reader: &Reader, back: &Sender<Command>) {
    // SAFETY: plain system calls on this thread's own ID; a failure leaves the niceness as is.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, HELPER_NICE);
    }
    let mut scratch = Scratch::default();
    loop {
        let task = match shared.tasks.lock() {
            Ok(rx) => match rx.recv() {
                Ok(t) => t,
                Err(_) => return,
            },
            Err(_) => return,
        };
        let id = task.id();
        {
            let mut l = shared.ledger.lock().expect("ledger lock");
            if l.dead.remove(&id) {
                continue;
            }
            l.running.insert(id);
        }
        let started = Instant::now();
        // A panic in a task ends its request with an error, never the thread's place.
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match task {
            Task::Read(req) => {
                let result = reader.read(&req);
                Command::Read(Box::new(Read { req, result, took: started.elapsed() }))
            }
            Task::Pick(mut p) => {
                let token = p.picker.pick_from(&p.logits, &mut scratch);
                Command::Picked(Box::new(Picked { pick: *p, token, took: started.elapsed() }))
            }
        }));
        let done = done.unwrap_or_else(|_| Command::HelperFailed(id));
        let wanted = {
            let mut l = shared.ledger.lock().expect("ledger lock");
            l.running.remove(&id);
            if l.dead.remove(&id) {
                l.zombies = l.zombies.saturating_sub(1);
                false
            } else {
                l.live.remove(&id);
                true
            }
        };
        // A dead request's samplers and parse stacks are freed here, not on the decode loop.
        if wanted && back.send(done).is_err() {
            return;
        }
    }
}
