//! Prometheus metrics (`GET /metrics`, text format 0.0.4). Counters and histograms are updated
//! as requests finish; worker gauges are read from the registry at scrape time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry as Prom, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

impl ModelLabel {
    pub fn new(model: &str) -> ModelLabel {
        ModelLabel { model: model.to_string() }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    /// The model ID, or the name asked for when it resolved to none.
    pub model: String,
    /// `chat` or `completions`.
    pub endpoint: &'static str,
    /// HTTP status of the response (200 for a stream that started).
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub model: String,
    /// Where prompt tokens' KV cells came from: `slot`, `memory` or `disk` (cached), or
    /// `prefill` (computed).
    pub source: &'static str,
}

type Hist = Family<ModelLabel, Histogram, fn() -> Histogram>;

fn ttft_histogram() -> Histogram {
    // 5 ms … ~20 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

fn wait_histogram() -> Histogram {
    // 10 ms … ~10 min.
    Histogram::new(exponential_buckets(0.01, 2.0, 17))
}

fn token_histogram() -> Histogram {
    // 1 ms … ~1 s per token.
    Histogram::new(exponential_buckets(0.001, 2.0, 11))
}

pub struct Metrics {
    prom: Prom,
    pub requests: Family<RequestLabel, Counter>,
    pub prompt_tokens: Family<ModelLabel, Counter>,
    pub completion_tokens: Family<ModelLabel, Counter>,
    /// Tokens proposed by speculation and checked, and those kept.
    pub draft_tokens: Family<ModelLabel, Counter>,
    pub draft_accepted: Family<ModelLabel, Counter>,
    /// Prompt tokens by where their KV cells came from.
    pub prompt_sources: Family<SourceLabel, Counter>,
    /// Seconds from the request's arrival to its first token, as the router sees it.
    pub ttft: Hist,
    /// Mean seconds per generated token after the first, one observation per request.
    pub token_latency: Hist,
    pub restarts: Family<ModelLabel, Counter>,
    pub evictions: Family<ModelLabel, Counter>,
    pub worker_memory: Family<ModelLabel, Gauge>,
    pub slots_busy: Family<ModelLabel, Gauge>,
    pub queue_depth: Family<ModelLabel, Gauge>,
    /// Requests waiting for their model to get memory and start, per model.
    pub waiting: Family<ModelLabel, Gauge>,
    /// Seconds a request waited for its model to get memory and start (or load).
    pub wait: Hist,
    /// Starts of a model that others made room for.
    pub swaps: Family<ModelLabel, Counter>,
    /// Seconds from asking others to make room for a model to its worker being ready.
    pub swap_time: Hist,
    pub budget_bytes: Gauge,
    pub used_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut prom = Prom::with_prefix("model_bucket");
        let m = Metrics {
            requests: Family::default(),
            prompt_tokens: Family::default(),
            completion_tokens: Family::default(),
            draft_tokens: Family::default(),
            draft_accepted: Family::default(),
            prompt_sources: Family::default(),
            ttft: Family::new_with_constructor(ttft_histogram as fn() -> Histogram),
            token_latency: Family::new_with_constructor(token_histogram as fn() -> Histogram),
            restarts: Family::default(),
            evictions: Family::default(),
            worker_memory: Family::default(),
            slots_busy: Family::default(),
            queue_depth: Family::default(),
            waiting: Family::default(),
            wait: Family::new_with_constructor(wait_histogram as fn() -> Histogram),
            swaps: Family::default(),
            swap_time: Family::new_with_constructor(wait_histogram as fn() -> Histogram),
            budget_bytes: Gauge::default(),
            used_bytes: Gauge::default(),
            prom: Prom::default(),
        };
        prom.register("requests", "Completion requests by model, endpoint and HTTP status", m.requests.clone());
        prom.register("prompt_tokens", "Prompt tokens processed", m.prompt_tokens.clone());
        prom.register("completion_tokens", "Tokens generated", m.completion_tokens.clone());
        prom.register(
            "draft_tokens",
            "Tokens proposed by speculation and checked in a decode step",
            m.draft_tokens.clone(),
        );
        prom.register(
            "draft_accepted_tokens",
            "Proposed tokens kept (their share of draft_tokens is the acceptance rate)",
            m.draft_accepted.clone(),
        );
        prom.register(
            "prompt_tokens_by_source",
            "Prompt tokens served from a cache (slot, memory, disk), shared with another sequence of the same prompt (shared), or prefilled",
            m.prompt_sources.clone(),
        );
        prom.register_with_unit("time_to_first_token", "Time to first token", Unit::Seconds, m.ttft.clone());
        prom.register_with_unit(
            "time_per_output_token",
            "Mean time per generated token after the first, per request",
            Unit::Seconds,
            m.token_latency.clone(),
        );
        prom.register("worker_restarts", "Worker restarts after a crash", m.restarts.clone());
        prom.register(
            "evictions",
            "Idle workers stopped to fit the RAM budget or past their idle TTL",
            m.evictions.clone(),
        );
        prom.register_with_unit(
            "worker_memory",
            "Resident memory of each worker",
            Unit::Bytes,
            m.worker_memory.clone(),
        );
        prom.register("slots_busy", "Slots generating, per worker", m.slots_busy.clone());
        prom.register("queue_depth", "Requests waiting for a slot, per worker", m.queue_depth.clone());
        prom.register("waiting", "Requests waiting for their model to get memory and start", m.waiting.clone());
        prom.register_with_unit(
            "queue_wait",
            "Time a request waited for its model to get memory and start",
            Unit::Seconds,
            m.wait.clone(),
        );
        prom.register("swaps", "Models started after others made room for them", m.swaps.clone());
        prom.register_with_unit(
            "swap",
            "Time from asking others to make room for a model to its worker being ready",
            Unit::Seconds,
            m.swap_time.clone(),
        );
        prom.register_with_unit("ram_budget", "The RAM budget for all workers", Unit::Bytes, m.budget_bytes.clone());
        prom.register_with_unit(
            "ram_used",
            "Memory counted against the budget (loading workers at their estimate)",
            Unit::Bytes,
            m.used_bytes.clone(),
        );
        Metrics { prom, ..m }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.prom).expect("writing to a String cannot fail");
        out
    }
}
