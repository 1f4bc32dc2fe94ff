//! Whose turn it is: which model that requests wait for gets memory next, and which loaded
//! models make room for it. One pure function, [`next`], of what waits and what holds memory;
//! the supervisor asks it after every fact and carries out its answer.
//!
//! The rules, in order of precedence:
//! 1. A pinned model (`resident = true`) is never evicted and never waits for another's turn;
//!    a model that does not fit beside the pinned ones is refused (507, naming them).
//! 2. A higher priority class goes first, and ends a lower class's turn early.
//! 3. A model whose oldest request has waited [`Rules::aging`] goes before the others of its
//!    class; one that has waited twice a running turn's length ends that turn early: no model
//!    starves.
//! 4. A model that was swapped in keeps its memory for its turn ([`Rules::quantum`]) while
//!    others of its class wait: its requests (those that come during the turn too) run, one
//!    swap serves a batch. After the turn it yields to a waiting model: it starts nothing new,
//!    finishes what it runs, and goes. A turn lasts the quantum, or twice what the swap that
//!    brought the model in took when that is longer (see the supervisor): a costly swap is
//!    paid for by a longer batch, a cheap one is not made to wait for.
//! 5. Of the rest, a model that fits without a swap goes first; then the longest waiting.
//!
//! Room is made the cheapest way that suffices: by waiting for what is already leaving, then
//! by shrinking the evictable memory of loaded models (prompt caches, embedding contexts),
//! and only then by evicting models.
//!
//! [`Sched::Fifo`] keeps the earlier policy for comparison: arrival order, no turns, classes
//! or aging (pinned models stay pinned).

use model_bucket_shared::Priority;
use std::cmp::Reverse;
use std::time::{Duration, Instant};

#[cfg(test)]
mod tests;

/// Which policy decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sched {
    /// Turns: classes, aging, a quantum per swap, fewest swaps.
    Turns,
    /// Arrival order, every waiting model as soon as memory can be made.
    Fifo,
}

/// What the policy decides with.
#[derive(Debug, Clone)]
pub struct Rules {
    pub sched: Sched,
    /// The most memory all workers together may hold, in bytes.
    pub budget: u64,
    /// How long a model swapped in keeps its memory while others of its class wait.
    pub quantum: Duration,
    /// How long a request may wait before its model goes ahead of its class.
    pub aging: Duration,
}

/// A model whose requests wait for it to start.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub id: String,
    /// Bytes it needs.
    pub need: u64,
    /// The highest class of its waiting requests.
    pub class: Priority,
    /// When its longest waiting request came.
    pub since: Instant,
    pub pinned: bool,
}

/// A model that holds memory.
#[derive(Debug, Clone)]
pub struct Holding {
    pub id: String,
    /// What it counts against the budget, in bytes.
    pub bytes: u64,
    /// Serving, or about to be by requests it admitted.
    pub held: bool,
    /// Ready (or waiting to restart after a crash) and not already being evicted: it can be
    /// asked to go. Loading and draining ones cannot.
    pub evictable: bool,
    /// On its way out: its bytes will be free soon.
    pub leaving: bool,
    /// Of its bytes, what it can drop without going (its prompt cache, its embedding context).
    pub trimmable: u64,
    pub pinned: bool,
    /// The class of the turn it runs.
    pub class: Priority,
    /// When its turn ends; `None`: it has none (it is not running a turn).
    pub turn_ends: Option<Instant>,
    /// How long its turn lasts.
    pub turn: Duration,
    pub last_used: Instant,
}

/// Why a model can never start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It needs more than the whole budget.
    TooLarge,
    /// It does not fit beside the pinned models, which hold `room` less than the budget.
    Pinned { by: Vec<String>, room: u64 },
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Nobody waits.
    Nothing,
    /// Start `model`: it fits.
    Start(String),
    /// `model` goes next once `evict` (idle) are gone and `yielders` (serving) have finished
    /// their requests and gone; they take no new ones.
    MakeRoom { model: String, evict: Vec<String>, yielders: Vec<String> },
    /// `model` goes next once what is leaving has gone, or (`until`) once a turn ends or it has
    /// aged; nothing is asked of anyone now.
    Wait { model: String, until: Option<Instant> },
    /// `model` goes next once the models that hold memory drop `short` bytes of their
    /// evictable memory: nobody is evicted.
    Trim { model: String, short: u64 },
    /// `model` can never start.
    Refuse { model: String, why: Refusal },
}

impl Waiting {
    fn aged(&self, now: Instant, rules: &Rules) -> bool {
        now.duration_since(self.since) >= rules.aging
    }
}

/// Decides whose turn it is.
pub fn next(now: Instant, rules: &Rules, waiting: &[Waiting], holding: &[Holding]) -> Next {
    let pinned_bytes = |except: &str| -> (u64, Vec<String>) {
        let pinned = holding.iter().filter(|h| h.pinned && h.id != except && !h.leaving);
        pinned.fold((0, Vec::new()), |(b, mut ids), h| {
            ids.push(h.id.clone());
            (b + h.bytes - h.trimmable, ids)
        })
    };
    for w in waiting {
        if w.need > rules.budget {
            return Next::Refuse { model: w.id.clone(), why: Refusal::TooLarge };
        }
        let (bytes, by) = pinned_bytes(&w.id);
        if w.need + bytes > rules.budget {
            let room = rules.budget.saturating_sub(bytes);
            return Next::Refuse { model: w.id.clone(), why: Refusal::Pinned { by, room } };
        }
    }
    let used: u64 = holding.iter().map(|h| h.bytes).sum();
    let leaving: u64 = holding.iter().filter(|h| h.leaving).map(|h| h.bytes).sum();
    let trimmable: u64 = holding.iter().filter(|h| !h.leaving).map(|h| h.trimmable).sum();
    // Fits without a swap: now, or once evictable memory is shrunk.
    let fits = |w: &Waiting| used - trimmable + w.need <= rules.budget;
    let head = match rules.sched {
        Sched::Fifo => waiting.iter().min_by_key(|w| w.since),
        Sched::Turns => {
            waiting.iter().max_by_key(|w| (w.pinned, w.class, w.aged(now, rules), fits(w), Reverse(w.since)))
        }
    };
    let Some(head) = head else { return Next::Nothing };
    if used + head.need <= rules.budget {
        return Next::Start(head.id.clone());
    }
    let model = head.id.clone();
    if used - leaving + head.need <= rules.budget {
        return Next::Wait { model, until: None };
    }
    if used - leaving - trimmable + head.need <= rules.budget {
        return Next::Trim { model, short: used - leaving + head.need - rules.budget };
    }
    // What is leaving counts as gone, and what the others can shrink as shrunk; room is made
    // only for the rest: each model that goes frees what it holds beyond that.
    let mut short = used - leaving - trimmable + head.need - rules.budget;
    let protected = |h: &Holding| protects(now, rules, h, head);
    let movable = |h: &&Holding| h.evictable && !h.leaving && !h.pinned;
    let mut idle: Vec<&Holding> = holding.iter().filter(movable).filter(|h| !h.held && !protected(h)).collect();
    let mut busy: Vec<&Holding> = holding.iter().filter(movable).filter(|h| h.held && !protected(h)).collect();
    idle.sort_by_key(|h| h.last_used);
    busy.sort_by_key(|h| h.last_used);
    let mut evict = Vec::new();
    for h in idle {
        if short == 0 {
            break;
        }
        short = short.saturating_sub(h.bytes - h.trimmable);
        evict.push(h.id.clone());
    }
    let mut yielders = Vec::new();
    for h in busy {
        if short == 0 {
            break;
        }
        short = short.saturating_sub(h.bytes - h.trimmable);
        yielders.push(h.id.clone());
    }
    if short == 0 {
        return Next::MakeRoom { model, evict, yielders };
    }
    // Not enough yet: wait for turns to end, for the head to age, or for loads to finish
    // (a fact then). Nothing is asked of anyone before it makes room.
    let turns = holding.iter().filter(|h| movable(h) && protected(h)).filter_map(|h| h.turn_ends);
    let ends_turn = holding.iter().filter(|h| movable(h) && protected(h)).map(|h| head.since + h.turn * 2);
    let ages = (rules.sched == Sched::Turns && !head.aged(now, rules)).then(|| head.since + rules.aging);
    Next::Wait { model, until: turns.chain(ends_turn).chain(ages).min() }
}

/// Whether `h` keeps its memory against `head` now: a pinned model always; one running its
/// turn against a waiting model of the same or a lower class that has not waited twice the
/// turn's length.
fn protects(now: Instant, rules: &Rules, h: &Holding, head: &Waiting) -> bool {
    if h.pinned {
        return true;
    }
    rules.sched == Sched::Turns
        && h.turn_ends.is_some_and(|t| t > now)
        && !head.pinned
        && head.class <= h.class
        && now.duration_since(head.since) < h.turn * 2
}
