//! The decode loop's side of the [`helper`] threads: queueing requests once read, taking
//! constrained tokens as they are sampled, waiting for them at most half a step, and ending
//! requests whose helper time ran past the budget.

use model_bucket_shared::protocol::{DoneInfo, ErrorKind, FinishReason, FromWorker, RequestId, Timings, Usage};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::slot::{Active, Queued};
use super::{helper, ms, Command, Engine};

impl<'m> Engine<'m> {
    /// Whether a step, an admission or an embedding has something to do now (otherwise only
    /// helpers are working).
    pub(super) fn can_step(&self) -> bool {
        let has_work = |a: &Active| a.last.is_some() || a.n_fed < a.prompt.len();
        !self.embeds.is_empty()
            || self.slots.iter().flatten().any(has_work)
            || (!self.queue.is_empty() && self.slots.iter().any(Option::is_none))
    }

    /// After a step that sent constrained samples to helpers: waits for those of this step, at
    /// most `grace` (half the step's decode), handling what arrives meanwhile. A sample that
    /// takes longer sits out the next steps while the others go on, so no request delays the
    /// rest by more than half a step per step. `false` when the router is gone.
    pub(super) fn await_picks(&mut self, rx: &Receiver<Command>, grace: Duration) -> bool {
        let until = Instant::now() + grace;
        let step = self.step_no;
        while self.slots.iter().flatten().any(|a| a.picking.is_some_and(|(_, s)| s == Some(step))) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(left) {
                Ok(c) => self.handle(c),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
        true
    }

    /// How long to wait for helpers before a budget or the shutdown deadline is due (at most a
    /// second).
    pub(super) fn next_due(&self, now: Instant) -> Duration {
        let budget = self.cfg.max_sampling;
        let reads =
            self.reading.iter().map(|(_, since, _)| budget.saturating_sub(now.saturating_duration_since(*since)));
        let picks = self
            .slots
            .iter()
            .flatten()
            .filter(|a| a.picking.is_some())
            .map(|a| budget.saturating_sub(a.sampling_time(now)));
        let deadline = self.deadline.map(|d| d.saturating_duration_since(now));
        reads.chain(picks).chain(deadline).fold(Duration::from_secs(1), Duration::min) + Duration::from_millis(1)
    }

    /// Ends the requests whose helper time passed the budget, reading or sampling.
    pub(super) fn overdue(&mut self, now: Instant) {
        let budget = self.cfg.max_sampling;
        let over = |t: Duration| t > budget;
        let why = || {
            format!(
                "the request used more than {} s of the worker's time reading its prompt or sampling under its \
                 grammar or JSON schema (--max-sampling-seconds); simplify the schema, grammar or template",
                budget.as_secs_f64()
            )
        };
        let late: Vec<RequestId> = self
            .reading
            .iter()
            .filter(|(_, since, _)| over(now.saturating_duration_since(*since)))
            .map(|(id, _, _)| *id)
            .collect();
        for id in late {
            self.reading.retain(|(r, _, _)| *r != id);
            self.pool.forget(id);
            self.error(id, ErrorKind::BadRequest, why());
        }
        for i in 0..self.slots.len() {
            if self.slots[i].as_ref().is_some_and(|a| over(a.sampling_time(now))) {
                let a = self.slots[i].take().expect("checked");
                self.pool.forget(a.id);
                self.release(i);
                self.error(a.id, ErrorKind::BadRequest, why());
            }
        }
    }

    /// A request read on a helper: queued, or answered with its error. One cancelled or out of
    /// time meanwhile is dropped.
    pub(super) fn queue_read(&mut self, r: helper::Read) {
        let id = r.req.id;
        let Some(pos) = self.reading.iter().position(|(i, _, _)| *i == id) else { return };
        let (_, since, set) = self.reading.swap_remove(pos);
        let (tokens, grammar) = match r.result {
            Ok(t) => t,
            Err((kind, m)) => return self.error(id, kind, m),
        };
        if tokens.is_empty() {
            return self.error(id, ErrorKind::BadRequest, "the prompt is empty".into());
        }
        if r.req.count_only {
            let usage = Usage { prompt_tokens: tokens.len() as u32, ..Default::default() };
            let timings = Timings { queue_ms: ms(since.elapsed()), ..Default::default() };
            return self.send(FromWorker::Done(Box::new(DoneInfo { id, finish: FinishReason::Stop, usage, timings })));
        }
        if tokens.len() >= self.cfg.n_ctx_slot as usize {
            return self.error(
                id,
                ErrorKind::PromptTooLong,
                format!(
                    "the prompt is {} tokens but the context is {} tokens (it must leave room for at least one generated token)",
                    tokens.len(),
                    self.cfg.n_ctx_slot
                ),
            );
        }
        self.queue.push_back(Queued { req: r.req, tokens, grammar, set, enqueued: since, sampled: r.took });
    }

    /// A constrained token sampled on a helper. One for a request that has ended meanwhile
    /// (cancelled, out of time) is dropped.
    pub(super) fn picked(&mut self, p: helper::Picked) {
        let helper::Picked { pick, token, took } = p;
        let i = pick.slot;
        let current = self.slots.get(i).and_then(Option::as_ref).is_some_and(|a| a.id == pick.id && a.picker.is_none());
        if current {
            let a = self.slots[i].as_mut().expect("checked above");
            a.picking = None;
            a.sampled += took;
            a.last_pick = took;
            let picker = a.picker.insert(pick.picker);
            match token {
                Some(tok) => {
                    let logprob = picker.logprob(&pick.logits, self.model, tok, &mut self.scratch);
                    self.emit(i, tok, logprob);
                }
                None => {
                    let id = a.id;
                    self.slots[i] = None;
                    self.release(i);
                    self.error(
                        id,
                        ErrorKind::BadRequest,
                        "the grammar or JSON schema allows no token at this point: it cannot be satisfied".into(),
                    );
                }
            }
        }
        self.logit_bufs.push(pick.logits);
    }

    /// A helper's task for request `id` panicked: the request ends with an error.
    pub(super) fn helper_failed(&mut self, id: RequestId) {
        let message = "the worker failed reading this request or sampling its token".to_string();
        if let Some(pos) = self.reading.iter().position(|(r, _, _)| *r == id) {
            self.reading.swap_remove(pos);
            return self.error(id, ErrorKind::Internal, message);
        }
        if let Some(i) = self.slots.iter().position(|s| s.as_ref().is_some_and(|a| a.id == id && a.picker.is_none())) {
            self.slots[i] = None;
            self.release(i);
            self.error(id, ErrorKind::Internal, message);
        }
    }
}
