//! The RAM budget: how much a worker will need, and which idle workers to evict so that a new
//! one fits. Pure functions; the registry carries out what they decide.

use std::time::Instant;

/// Fixed cost of a worker beyond weights, KV cache and logits: the process, llama.cpp's
/// runtime and the smallest compute buffers, in bytes (measured: 16–20 MiB on CPU).
const WORKER_BASE_BYTES: u64 = 16 << 20;
/// Compute buffers grow with the vocabulary (the output projection of a batch), in bytes per
/// vocabulary entry (measured on SmolLM2 and Gemma 3: 190–250)...
const BYTES_PER_VOCAB_ENTRY: u64 = 256;
/// ... or, for wider models, with the hidden state of a batch of [`UBATCH`] tokens, in bytes
/// per token and hidden unit (llama.cpp's CPU compute buffer of the synthetic Llama models of
/// 2,048 and 2,560 units: 55 and 54).
const BYTES_PER_BATCH_UNIT: u64 = 56;
/// Tokens per llama.cpp micro-batch, as the worker sets it.
const UBATCH: u64 = 512;

/// Parses a size such as `512MiB`, `8GiB`, `1.5G`, `300MB` or plain bytes. Binary and decimal
/// units are both accepted (`K`/`KB` decimal, `KiB` binary, and so on); case does not matter.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad size {s:?}: expected a number with an optional unit"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("bad size {s:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB)")),
    };
    let bytes = n * mult;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("bad size {s:?}"));
    }
    Ok(bytes as u64)
}

/// Like [`parse_size`], but `0` is allowed (it turns a feature off).
pub fn parse_size_or_zero(s: &str) -> Result<u64, String> {
    if s.trim() == "0" {
        return Ok(0);
    }
    parse_size(s)
}

/// The default budget: three quarters of `total` (the machine's memory, or a cgroup limit),
/// leaving room for the router, the page cache and everything else on the machine.
pub fn default_budget(total: u64) -> u64 {
    total / 4 * 3
}

/// What one worker is expected to take, in bytes: the weights (mapped from the file, or
/// repacked by llama.cpp, whose mapped pages the worker then lets go), the KV cache for every
/// slot's context (f16), and compute buffers.
///
/// `kv_bytes_per_token` and `n_vocab` come from the GGUF header; when unknown the KV cache is
/// guessed at a tenth of the file per 4096 tokens.
pub fn estimate(
    file_bytes: u64,
    kv_bytes_per_token: Option<u64>,
    n_vocab: Option<u64>,
    n_embd: Option<u64>,
    ctx_tokens: u64,
) -> u64 {
    let kv = kv_bytes(file_bytes, kv_bytes_per_token, ctx_tokens);
    let by_vocab = n_vocab.unwrap_or(128_000) * BYTES_PER_VOCAB_ENTRY;
    let by_width = n_embd.unwrap_or(0).saturating_mul(UBATCH * BYTES_PER_BATCH_UNIT);
    let compute = WORKER_BASE_BYTES + by_vocab.max(by_width);
    file_bytes.saturating_add(kv).saturating_add(compute)
}

/// What speculation adds to a worker: the logits of the tokens it proposes in one step, in f32
/// (measured on SmolLM2 and Gemma 3 after a request that proposed all it could: 2–11 MiB).
pub fn draft_bytes(n_vocab: Option<u64>) -> u64 {
    let n_vocab = n_vocab.unwrap_or(128_000);
    model_bucket_shared::draft_outputs(n_vocab) as u64 * n_vocab * 4
}

/// Bytes of an f16 KV cache for `ctx_tokens` tokens; guessed at a tenth of the file per 4096
/// tokens when the header does not give the attention shape.
pub fn kv_bytes(file_bytes: u64, kv_bytes_per_token: Option<u64>, ctx_tokens: u64) -> u64 {
    match kv_bytes_per_token {
        Some(b) => b.saturating_mul(ctx_tokens),
        None => file_bytes / 10 * ctx_tokens.div_ceil(4096),
    }
}

/// A worker as the planner sees it.
#[derive(Debug, Clone)]
pub struct Resident {
    pub id: String,
    /// What it counts against the budget, in bytes.
    pub bytes: u64,
    /// Serving (or holding queued requests) right now: never evicted.
    pub busy: bool,
    /// Idle workers that could be evicted (ready, or waiting to restart after a crash);
    /// loading or draining ones are not.
    pub evictable: bool,
    /// Already on its way out (draining to stop): its bytes will be free soon.
    pub leaving: bool,
    /// Of its bytes, what it can drop without going (prompt cache, embedding context).
    pub trimmable: u64,
    pub last_used: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// It fits now.
    Fits,
    /// It fits once these workers (least recently used first) are gone.
    Evict(Vec<String>),
    /// It fits once the workers already leaving are gone: wait, evict nothing more.
    Wait,
    /// It fits once workers drop evictable memory ([`allowances`]): evict nobody.
    Trim,
    /// It does not fit even after evicting every idle worker; busy ones hold `busy_bytes`.
    NoRoom { busy_bytes: u64 },
    /// It is larger than the whole budget.
    TooLarge,
}

/// When `need` does not fit even after every idle worker is gone ([`Plan::NoRoom`]): the busy
/// workers, least recently used first, that must stop taking requests (and go once they have
/// finished the ones they hold) for it to fit. Empty when even that would not make room, or
/// when it fits without them.
pub fn yielders(need: u64, budget: u64, resident: &[Resident]) -> Vec<String> {
    if need > budget {
        return vec![];
    }
    let staying = |r: &&Resident| !r.leaving && (!r.evictable || r.busy);
    let used: u64 = resident.iter().filter(staying).map(|r| r.bytes).sum();
    if used + need <= budget {
        return vec![];
    }
    let busy = resident.iter().filter(|r| r.evictable && r.busy && !r.leaving);
    least_recent_until_fit(busy, used, need, budget).unwrap_or_default()
}

/// Of `candidates`, the least recently used first, as many as must go for `need` to fit
/// next to `used` bytes; `None` when all of them are not enough.
fn least_recent_until_fit<'a>(
    candidates: impl Iterator<Item = &'a Resident>,
    used: u64,
    need: u64,
    budget: u64,
) -> Option<Vec<String>> {
    let mut candidates: Vec<&Resident> = candidates.collect();
    candidates.sort_by_key(|r| r.last_used);
    let mut freed = 0;
    let mut out = Vec::new();
    for r in candidates {
        if used - freed + need <= budget {
            break;
        }
        freed += r.bytes;
        out.push(r.id.clone());
    }
    (used - freed + need <= budget).then_some(out)
}

/// Decides how `need` bytes fit under `budget` next to `resident`.
pub fn plan(need: u64, budget: u64, resident: &[Resident]) -> Plan {
    if need > budget {
        return Plan::TooLarge;
    }
    let used: u64 = resident.iter().map(|r| r.bytes).sum();
    if used + need <= budget {
        return Plan::Fits;
    }
    let leaving: u64 = resident.iter().filter(|r| r.leaving).map(|r| r.bytes).sum();
    if used - leaving + need <= budget {
        return Plan::Wait;
    }
    let trimmable: u64 = resident.iter().filter(|r| !r.leaving).map(|r| r.trimmable).sum();
    if used - leaving - trimmable + need <= budget {
        return Plan::Trim;
    }
    // What is leaving counts as gone; evict only for the rest.
    let used = used - leaving;
    let idle = resident.iter().filter(|r| r.evictable && !r.busy && !r.leaving);
    match least_recent_until_fit(idle, used, need, budget) {
        Some(victims) => Plan::Evict(victims),
        None => Plan::NoRoom { busy_bytes: resident.iter().filter(|r| r.busy).map(|r| r.bytes).sum() },
    }
}

/// Room is shared out in multiples of this many bytes.
pub const SHARE_STEP: u64 = 4 << 20;

/// A ready worker's evictable memory (its prompt cache, its embedding context), as
/// [`allowances`] sees it.
#[derive(Debug, Clone)]
pub struct Spare {
    pub id: String,
    /// What it holds now.
    pub held: u64,
    /// The most it would hold, with room to spare.
    pub cap: u64,
    pub last_used: Instant,
}

/// How much evictable memory each worker of `spares` may hold, given `room`: the budget less
/// everything counted (what they hold included) and less what a waiting model needs. Short of
/// room (`room` < 0), the least recently used give up theirs first, as much as is short; with
/// room, it is shared out evenly, each up to its cap, beyond what each holds, in whole
/// [`SHARE_STEP`]s.
pub fn allowances(room: i64, spares: &[Spare]) -> Vec<(String, u64)> {
    let mut order: Vec<&Spare> = spares.iter().collect();
    if room < 0 {
        let mut short = room.unsigned_abs();
        order.sort_by_key(|s| s.last_used);
        return order
            .into_iter()
            .map(|s| {
                let cut = short.min(s.held);
                short -= cut;
                (s.id.clone(), s.held - cut)
            })
            .collect();
    }
    // Even shares, the smallest wants first so that what they leave goes to the rest.
    order.sort_by_key(|s| s.cap.saturating_sub(s.held));
    let mut left = room as u64;
    let n = order.len() as u64;
    order
        .into_iter()
        .enumerate()
        .map(|(k, s)| {
            let even = left / (n - k as u64) / SHARE_STEP * SHARE_STEP;
            let share = even.min(s.cap.saturating_sub(s.held));
            left -= share;
            (s.id.clone(), s.held.saturating_add(share))
        })
        .collect()
}

pub use model_bucket_shared::mem::human;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn r(id: &str, mib: u64, busy: bool, age_s: u64, now: Instant) -> Resident {
        Resident {
            id: id.into(),
            bytes: mib << 20,
            busy,
            evictable: true,
            leaving: false,
            trimmable: 0,
            last_used: now - Duration::from_secs(age_s),
        }
    }

    #[test]
    fn busy_workers_yield_least_recently_used_first_and_only_when_it_helps() {
        let now = Instant::now();
        let mib = |m: u64| m << 20;
        // 1000 MiB: a busy 400 (used 10 s ago), a busy 300 (5 s ago), an idle 200.
        let rs = [r("old", 400, true, 10, now), r("new", 300, true, 5, now), r("idle", 200, false, 1, now)];
        // Needing 400: the idle one goes anyway (100 short), so the oldest busy one yields.
        assert_eq!(yielders(mib(400), mib(1000), &rs), vec!["old".to_string()]);
        // Needing 800: both busy ones.
        assert_eq!(yielders(mib(800), mib(1000), &rs), vec!["old".to_string(), "new".to_string()]);
        // Fits once the idle one is gone: nobody yields.
        assert!(yielders(mib(300), mib(1000), &rs).is_empty());
        // Larger than the budget, or more than everything frees: nobody yields.
        assert!(yielders(mib(1001), mib(1000), &rs).is_empty());
        let loading = Resident { evictable: false, ..r("loading", 900, true, 0, now) };
        assert!(yielders(mib(200), mib(1000), &[loading.clone(), r("b", 50, true, 3, now)]).is_empty());
        // What is leaving already counts as gone.
        let leaving = Resident { leaving: true, ..r("leaving", 400, false, 0, now) };
        assert!(yielders(mib(500), mib(1000), &[leaving, r("b", 500, true, 3, now)]).is_empty());
    }

    #[test]
    fn shrinking_evictable_memory_comes_before_evicting() {
        let now = Instant::now();
        let a = Resident { trimmable: 300 << 20, ..r("a", 700, false, 5, now) };
        assert_eq!(plan(0, 500 << 20, std::slice::from_ref(&a)), Plan::Trim);
        assert_eq!(plan(0, 300 << 20, &[a]), Plan::Evict(vec!["a".into()]));
    }

    #[test]
    fn allowances_cut_the_least_recent_first_and_share_room_evenly() {
        let now = Instant::now();
        let mib = |m: u64| m << 20;
        let s = |id: &str, held: u64, cap: u64, age: u64| Spare {
            id: id.into(),
            held: mib(held),
            cap: mib(cap),
            last_used: now - Duration::from_secs(age),
        };
        let get = |v: Vec<(String, u64)>, id: &str| v.into_iter().find(|(i, _)| i == id).map(|(_, b)| b >> 20);
        let spares = [s("old", 100, 300, 20), s("new", 100, 300, 1), s("full", 52, 52, 5)];
        // 160 MiB short: the oldest gives all 100, the next 60 (by age: full's 52, then new's 8).
        let cut = allowances(-(mib(160) as i64), &spares);
        assert_eq!((get(cut.clone(), "old"), get(cut.clone(), "full"), get(cut, "new")), (Some(0), Some(0), Some(92)));
        // 242 MiB of room: full wants nothing, the other two 120 each in whole 4 MiB steps.
        let grow = allowances(mib(242) as i64, &spares);
        assert_eq!(
            (get(grow.clone(), "old"), get(grow.clone(), "new"), get(grow, "full")),
            (Some(220), Some(220), Some(52))
        );
        // More room than they want: each up to its cap.
        let all = allowances(mib(10_000) as i64, &spares);
        assert_eq!((get(all.clone(), "old"), get(all, "new")), (Some(300), Some(300)));
        // No room: they keep what they hold, and grow no further.
        assert_eq!(get(allowances(0, &spares), "new"), Some(100));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("8GiB").unwrap(), 8 << 30);
        assert_eq!(parse_size("8gib").unwrap(), 8 << 30);
        assert_eq!(parse_size("1.5G").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("300MB").unwrap(), 300_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size(" 2 GiB ").unwrap(), 2 << 30);
        for bad in ["", "GiB", "12XB", "-1", "0", "1..2G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn estimate_matches_measured_workers() {
        // SmolLM2-135M Q4_1 and Gemma 3 270M Q4_K_M with 2 slots of 512 tokens measured
        // 148 MB and 334 MB of RSS right after load.
        let smol = estimate(98_362_432, Some(23_040), Some(49_152), Some(576), 1024);
        let gemma = estimate(253_113_024, Some(18_432), Some(262_144), Some(640), 1024);
        assert!((140_000_000..190_000_000).contains(&smol), "{smol}");
        assert!((330_000_000..390_000_000).contains(&gemma), "{gemma}");
        assert!(estimate(1 << 30, None, None, None, 8192) > (1 << 30) + (200 << 20));
        // A synthetic Llama of 2,560 units (1.42 GB, 64 KiB of KV per token, 2,048 tokens)
        // held 1,664 MiB once it had served, its compute buffer 67.5 MiB.
        let wide = estimate(1_422_699_392, Some(65_536), Some(49_152), Some(2_560), 2048);
        assert!((1_500u64 << 20..1_830 << 20).contains(&wide), "{}", wide >> 20);
    }

    #[test]
    fn fits_without_evicting() {
        let now = Instant::now();
        assert_eq!(plan(100 << 20, 1 << 30, &[r("a", 500, false, 10, now)]), Plan::Fits);
    }

    #[test]
    fn evicts_least_recently_used_idle_first() {
        let now = Instant::now();
        let res = [
            r("recent", 300, false, 1, now),
            r("old", 300, false, 100, now),
            r("busy", 300, true, 1000, now),
            r("older", 300, false, 50, now),
        ];
        // 1200 used of 1400: 500 more needs 300 freed: just the oldest idle one.
        assert_eq!(plan(500 << 20, 1400 << 20, &res), Plan::Evict(vec!["old".into()]));
        // 800 more needs two.
        assert_eq!(plan(800 << 20, 1400 << 20, &res), Plan::Evict(vec!["old".into(), "older".into()]));
    }

    #[test]
    fn busy_workers_are_never_evicted() {
        let now = Instant::now();
        let res = [r("busy", 600, true, 1000, now), r("idle", 100, false, 1, now)];
        assert_eq!(plan(500 << 20, 1000 << 20, &res), Plan::NoRoom { busy_bytes: 600 << 20 });
        let loading = Resident { evictable: false, ..r("loading", 600, false, 1000, now) };
        assert_eq!(plan(500 << 20, 1000 << 20, &[loading]), Plan::NoRoom { busy_bytes: 0 });
    }

    #[test]
    fn workers_already_leaving_are_waited_for_not_joined_by_more() {
        let now = Instant::now();
        let draining = Resident { leaving: true, evictable: false, ..r("draining", 600, false, 100, now) };
        // 600 leaving + 300 idle of 1000: 500 more fits once the leaving one is gone.
        let res = [draining.clone(), r("idle", 300, false, 1, now)];
        assert_eq!(plan(500 << 20, 1000 << 20, &res), Plan::Wait);
        // 800 more needs the idle one too, but not a second look at the leaving one.
        assert_eq!(plan(800 << 20, 1000 << 20, &res), Plan::Evict(vec!["idle".into()]));
        // Housekeeping over budget while one drains: nothing more to evict.
        assert_eq!(plan(0, 500 << 20, &[draining, r("idle", 300, false, 1, now)]), Plan::Wait);
    }

    #[test]
    fn larger_than_the_budget() {
        assert_eq!(plan(2 << 30, 1 << 30, &[]), Plan::TooLarge);
    }

    #[test]
    fn over_budget_with_nothing_new_evicts_until_under() {
        let now = Instant::now();
        let res = [r("a", 600, false, 5, now), r("b", 600, false, 10, now)];
        assert_eq!(plan(0, 1000 << 20, &res), Plan::Evict(vec!["b".into()]));
    }
}
