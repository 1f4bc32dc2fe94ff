//! One generation in flight on a worker: started with the retry a worker that vanished earns,
//! counted in the metrics, and cancelled when dropped before its end.

use model_bucket_shared::protocol::{DoneInfo, ErrorKind, GenerateRequest, RequestId, ToWorker};
use model_bucket_shared::ModelInfo;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::http::error::ApiError;
use crate::metrics::{ModelLabel, SourceLabel};
use crate::registry::{Ask, Lease, Registry};
use crate::worker::Event;

/// One request in flight on a worker. It holds the worker's lease until it ends; dropping it
/// before the end (the client went away) cancels the generation so the slot is freed at once.
pub struct Call {
    lease: Lease,
    id: RequestId,
    events: UnboundedReceiver<Event>,
    finished: bool,
    tally: Tally,
}

/// Leases `m`'s worker and starts `req` on it; returns the call and its first event, which is
/// never an error: a request the worker refuses is an HTTP error, not a 200 stream that fails.
/// A worker that is gone before it produced anything costs nothing yet: the request is tried
/// once more on the restarted one.
pub async fn start(
    r: &Arc<Registry>,
    m: &ModelInfo,
    req: &GenerateRequest,
    started: Instant,
    ask: Ask,
) -> Result<(Call, Event), ApiError> {
    let msg = |id| ToWorker::Generate(Box::new(GenerateRequest { id, ..req.clone() }));
    // A count is no generation: it leaves the latency and token metrics alone.
    start_counted(r, m, msg, started, ask, !req.count_only).await
}

/// [`start`] for any request: `msg` makes it for the ID it is given.
pub async fn start_with(
    r: &Arc<Registry>,
    m: &ModelInfo,
    msg: impl Fn(RequestId) -> ToWorker,
    started: Instant,
    ask: Ask,
) -> Result<(Call, Event), ApiError> {
    start_counted(r, m, msg, started, ask, true).await
}

/// [`start_with`], counted in the metrics or not.
async fn start_counted(
    r: &Arc<Registry>,
    m: &ModelInfo,
    msg: impl Fn(RequestId) -> ToWorker,
    started: Instant,
    ask: Ask,
    counted: bool,
) -> Result<(Call, Event), ApiError> {
    let mut retried = false;
    loop {
        let lease = r.lease_as(m, ask).await?;
        let live = lease.live.clone();
        let id = live.client.next_id();
        let mut tally = Tally::new(r.clone(), &m.id, started);
        tally.counted = counted;
        let mut call = Call::new(lease, id, msg(id), tally);
        match call.next().await {
            // Leased just as the worker was told to drain (unload, rolling restart): nothing was
            // produced, so wait for what comes next, once.
            Event::Error { kind: ErrorKind::ShuttingDown, .. } if !retried => retried = true,
            // Its queue is full: come back once the requests ahead are through.
            Event::Error { kind: ErrorKind::Overloaded, message } => {
                return Err(ApiError::too_many(message, live.retry_after()))
            }
            Event::Error { kind, message } => return Err(ApiError::from_worker(kind, message)),
            Event::Gone if !retried => {
                retried = true;
                r.mark_gone(&live).await;
            }
            Event::Gone => return Err(gone()),
            first => return Ok((call, first)),
        }
    }
}

impl Call {
    fn new(lease: Lease, id: RequestId, msg: ToWorker, tally: Tally) -> Call {
        let events = lease.live.client.request(id, msg);
        Call { lease, id, events, finished: false, tally }
    }

    pub async fn next(&mut self) -> Event {
        let e = self.events.recv().await.unwrap_or(Event::Gone);
        match &e {
            Event::Tokens { tokens, .. } => {
                self.tally.first_token();
                self.tally.generated(*tokens);
            }
            Event::Done(d) => {
                self.tally.first_token();
                self.tally.done(d);
                self.finished = true;
            }
            Event::Embeddings { prompt_tokens, .. } => {
                self.tally.embedded(*prompt_tokens);
                self.finished = true;
            }
            Event::Error { .. } | Event::Gone => self.finished = true,
        }
        e
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.tally.count_generated();
        if !self.finished {
            self.lease.live.client.cancel(self.id);
        }
    }
}

/// A worker that died under a request.
pub fn gone() -> ApiError {
    ApiError::bad_gateway("the worker exited while serving this request; it is being restarted")
}

/// A request's contribution to the metrics: time to first token, then tokens and time per token.
/// Generated tokens are counted as they arrive (in the tally, once in the metric at the end), so
/// those of a request that fails or is cancelled midway count too.
struct Tally {
    registry: Arc<Registry>,
    label: ModelLabel,
    started: Instant,
    seen_first: bool,
    /// Tokens generated so far, not yet in the metric.
    generated: u32,
    /// False: nothing is counted (a prompt's token count, which generates nothing).
    counted: bool,
}

impl Tally {
    fn new(registry: Arc<Registry>, model: &str, started: Instant) -> Tally {
        Tally { registry, label: ModelLabel::new(model), started, seen_first: false, generated: 0, counted: true }
    }

    fn first_token(&mut self) {
        if !self.seen_first && self.counted {
            self.seen_first = true;
            self.registry.metrics.ttft.get_or_create(&self.label).observe(self.started.elapsed().as_secs_f64());
        }
    }

    fn generated(&mut self, tokens: u32) {
        self.generated = self.generated.saturating_add(tokens);
    }

    /// Puts the generated tokens in the metric (once: the count starts again from 0).
    fn count_generated(&mut self) {
        let n = std::mem::take(&mut self.generated);
        if n > 0 {
            self.registry.metrics.completion_tokens.get_or_create(&self.label).inc_by(n as u64);
        }
    }

    fn embedded(&self, prompt_tokens: u32) {
        self.registry.metrics.prompt_tokens.get_or_create(&self.label).inc_by(prompt_tokens as u64);
    }

    fn done(&self, d: &DoneInfo) {
        if !self.counted {
            return;
        }
        let m = &self.registry.metrics;
        m.prompt_tokens.get_or_create(&self.label).inc_by(d.usage.prompt_tokens as u64);
        let u = &d.usage;
        let model = &self.label.model;
        if let Some(tier) = u.cached_from.filter(|_| u.cached_tokens > 0) {
            let label = SourceLabel { model: model.clone(), source: tier.as_str() };
            m.prompt_sources.get_or_create(&label).inc_by(u.cached_tokens as u64);
        }
        if d.timings.drafted > 0 {
            m.draft_tokens.get_or_create(&self.label).inc_by(d.timings.drafted as u64);
            m.draft_accepted.get_or_create(&self.label).inc_by(d.timings.accepted as u64);
        }
        let prefilled = u.prompt_tokens.saturating_sub(u.cached_tokens) as u64;
        m.prompt_sources.get_or_create(&SourceLabel { model: model.clone(), source: "prefill" }).inc_by(prefilled);
        if d.usage.completion_tokens > 1 {
            let per_token = d.timings.decode_ms / 1000.0 / (d.usage.completion_tokens - 1) as f64;
            m.token_latency.get_or_create(&self.label).observe(per_token);
        }
    }
}
