//! Draftless speculation (n-gram lookup): a generating sequence proposes its next tokens from
//! what followed the latest earlier occurrence of its own last few tokens, in its prompt or its
//! output. The proposals are decoded in the same batch as every sequence's next token, and the
//! request's own sampler, run position by position, keeps them for as long as it picks the same
//! token (see `Engine::verify`). Each kept token is one the request would have sampled anyway,
//! from the same logits and the same sampler state, so greedy output is unchanged (up to
//! llama.cpp's rounding across batch shapes) and sampled output keeps its distribution.
//!
//! How much to propose adapts per sequence ([`Budget`]): a proposed token is worth its place
//! in the batch when it is likely enough to be kept to pay for what it adds to the step
//! ([`Cost`], measured on the steps themselves). A sequence whose proposals are refused stops
//! proposing, but for a rare one-token probe, so text that repeats nothing pays almost nothing.
//! Pure functions here; the engine applies them.

use std::hash::Hash;

/// The most tokens proposed at once.
pub const MAX_DRAFT: usize = model_bucket_shared::DRAFT_OUTPUTS as usize;
/// The shortest run of a sequence's last tokens that must have occurred before.
pub const MIN_MATCH: usize = 3;
/// Longer matches are preferred, up to this many tokens.
const MAX_MATCH: usize = 8;
/// Steps between probes after a failed one; each failure in a row doubles it, up to
/// [`MAX_PAUSE`].
const PAUSE: u32 = 8;
const MAX_PAUSE: u32 = 256;
/// How far back a match is looked for, in tokens: bounds the work per step.
const LOOKBACK: usize = 8192;

/// Writes into `out` up to `k` tokens that followed the latest earlier occurrence of the
/// longest suffix of `hist` (at least [`MIN_MATCH`], at most [`MAX_MATCH`] tokens) within its
/// last [`LOOKBACK`] tokens. Empty when there is none.
pub fn draft<T: Copy + Eq + Hash>(hist: &[T], k: usize, out: &mut Vec<T>) {
    out.clear();
    let n = hist.len();
    if k == 0 || n <= MIN_MATCH {
        return;
    }
    let from = n.saturating_sub(LOOKBACK);
    let tail = &hist[n - MIN_MATCH..];
    // The best match so far: its length and where its continuation starts.
    let mut best: Option<(usize, usize)> = None;
    // `end` is one past an earlier occurrence of `tail`; latest first, so ties keep the latest.
    for end in (from + MIN_MATCH..n).rev() {
        if hist[end - MIN_MATCH..end] != *tail {
            continue;
        }
        let mut len = MIN_MATCH;
        while len < MAX_MATCH && end > from + len && hist[end - len - 1] == hist[n - len - 1] {
            len += 1;
        }
        if best.is_none_or(|(l, _)| len > l) {
            best = Some((len, end));
            if len == MAX_MATCH {
                break;
            }
        }
    }
    if let Some((_, end)) = best {
        out.extend_from_slice(&hist[end..n.min(end + k)]);
    }
}

/// What a proposed token costs: the decode time of a step grows with its tokens, about
/// `a + b × tokens`, fitted to the steps that only generated (no prompt chunks), recent ones
/// weighing most. On a CPU a token more costs about half a one-token step; on a GPU almost
/// nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    /// Decayed sums for the fit: weight, tokens, tokens², seconds, tokens × seconds.
    w: f64,
    n: f64,
    nn: f64,
    t: f64,
    nt: f64,
}

impl Default for Cost {
    fn default() -> Cost {
        Cost { w: 0.0, n: 0.0, nn: 0.0, t: 0.0, nt: 0.0 }
    }
}

/// How much older steps weigh against the latest in the fit.
const COST_DECAY: f64 = 0.995;
/// The cost ratio assumed until steps of different sizes have been seen.
const DEFAULT_RATIO: f64 = 0.5;

impl Cost {
    /// A generating step of `tokens` tokens took `secs` to decode.
    pub fn observe(self, tokens: usize, secs: f64) -> Cost {
        let (n, d) = (tokens as f64, COST_DECAY);
        Cost {
            w: self.w * d + 1.0,
            n: self.n * d + n,
            nn: self.nn * d + n * n,
            t: self.t * d + secs,
            nt: self.nt * d + n * secs,
        }
    }

    /// What one more token costs, as a share of a step of `generating` tokens: the least
    /// probability a proposed token must have of being kept to be worth proposing.
    pub fn ratio(&self, generating: usize) -> f64 {
        let var = self.w * self.nn - self.n * self.n;
        // Too few sizes seen to tell the per-token cost from the fixed one.
        if self.w < 4.0 || var <= 1e-9 * self.w * self.w {
            return DEFAULT_RATIO;
        }
        let b = ((self.w * self.nt - self.n * self.t) / var).max(0.0);
        let a = ((self.t - b * self.n) / self.w).max(0.0);
        let step = a + b * generating.max(1) as f64;
        if step <= 0.0 {
            return DEFAULT_RATIO;
        }
        (b * generating.max(1) as f64 / step).clamp(0.0, 1.0)
    }
}

/// How many tokens a sequence proposes next: as many as are worth their cost, from how often
/// its proposed tokens have been kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Decayed counts of proposed tokens kept, and of the checks (each kept token, and the
    /// first refused one).
    kept: f64,
    tried: f64,
    /// Steps until the next probe: when its record says proposing does not pay, a sequence
    /// still proposes one token now and then, in case its text turned repetitive.
    wait: u32,
    /// How long the wait after a failed probe is; it doubles with each failure in a row.
    every: u32,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget { kept: 0.0, tried: 0.0, wait: 0, every: PAUSE }
    }
}

/// How much older proposals weigh against the latest in a sequence's record.
const KEPT_DECAY: f64 = 0.8;

impl Budget {
    /// How likely a proposed token is to be kept, by the record (a uniform prior).
    pub fn rate(&self) -> f64 {
        (self.kept + 1.0) / (self.tried + 2.0)
    }

    /// Tokens to propose now, when a proposed token must be kept with probability `ratio` to
    /// pay for itself: the j-th is kept only with all before it, with probability `rate^j`.
    pub fn k(&self, ratio: f64) -> usize {
        let p = self.rate();
        let mut k = 0;
        let mut pj = p;
        while k < MAX_DRAFT && pj >= ratio {
            k += 1;
            pj *= p;
        }
        if k == 0 && self.wait == 0 {
            1
        } else {
            k
        }
    }

    /// After a proposal of `drafted` tokens of which the first `kept` were kept.
    pub fn after(self, drafted: usize, kept: usize) -> Budget {
        if drafted == 0 {
            return self;
        }
        let tried = kept + usize::from(kept < drafted);
        let b = Budget {
            kept: self.kept * KEPT_DECAY + kept as f64,
            tried: self.tried * KEPT_DECAY + tried as f64,
            ..self
        };
        if kept == 0 {
            Budget { wait: b.every, every: (b.every * 2).min(MAX_PAUSE), ..b }
        } else {
            Budget { wait: 0, every: PAUSE, ..b }
        }
    }

    /// A step passed.
    pub fn tick(self) -> Budget {
        Budget { wait: self.wait.saturating_sub(1), ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(hist: &[u32], k: usize) -> Vec<u32> {
        let mut out = Vec::new();
        draft(hist, k, &mut out);
        out
    }

    #[test]
    fn proposes_what_followed_the_latest_longest_match() {
        // "1 2 3" occurred before, followed by 4 5 6.
        assert_eq!(d(&[1, 2, 3, 4, 5, 6, 9, 1, 2, 3], 3), vec![4, 5, 6]);
        assert_eq!(d(&[1, 2, 3, 4, 5, 6, 9, 1, 2, 3], 16), vec![4, 5, 6, 9, 1, 2, 3]);
        // Two earlier matches: the longer one wins over the later one.
        assert_eq!(d(&[0, 1, 2, 3, 7, 5, 1, 2, 3, 8, 0, 1, 2, 3], 1), vec![7]);
        // Equal lengths: the latest.
        assert_eq!(d(&[1, 2, 3, 7, 1, 2, 3, 8, 1, 2, 3], 1), vec![8]);
        // A repeating pattern continues itself.
        assert_eq!(d(&[5, 5, 5, 5], 2), vec![5]);
    }

    #[test]
    fn nothing_without_a_match_of_the_least_length() {
        assert!(d(&[1, 2, 3, 4, 5, 6], 4).is_empty());
        assert!(d(&[1, 2, 9, 1, 2], 4).is_empty(), "a two-token match is too short");
        assert!(d(&[1, 2, 3], 4).is_empty());
        assert!(d(&[1, 2, 3, 4, 1, 2, 3], 0).is_empty());
        assert!(d(&[], 4).is_empty());
    }

    #[test]
    fn the_budget_proposes_what_its_record_pays_for() {
        let b = Budget::default();
        assert_eq!(b.rate(), 0.5);
        assert_eq!(b.k(0.5), 1, "a first proposal of one token");
        // Every token kept: the rate climbs, and so does k; cheap tokens (a GPU) take more.
        let mut good = b;
        for _ in 0..10 {
            good = good.after(8, 8);
        }
        assert!(good.rate() > 0.95, "{}", good.rate());
        assert!(good.k(0.5) >= 8, "{}", good.k(0.5));
        assert_eq!(good.k(0.0), MAX_DRAFT);
        assert!(good.k(0.9) < good.k(0.1));
        // Refused every time: the rate falls until nothing pays, then a probe now and then.
        let mut bad = b;
        for _ in 0..6 {
            bad = bad.after(1, 0);
            while bad.k(0.5) == 0 {
                bad = bad.tick();
            }
        }
        assert!(bad.rate() < 0.2, "{}", bad.rate());
        let probe = bad.after(1, 0);
        assert_eq!(probe.k(0.5), 0);
        let steps = (1..).find(|&n| (0..n).fold(probe, |b, _| b.tick()).k(0.5) > 0).unwrap();
        assert_eq!(steps, MAX_PAUSE, "failed probes in a row wait longer, up to a bound");
        // A kept probe resets the wait.
        assert_eq!(probe.after(1, 1).wait, 0);
        assert_eq!(probe.after(1, 1).every, PAUSE);
        // Nothing proposed, nothing learned.
        assert_eq!(Budget::default().after(0, 0), Budget::default());
    }

    #[test]
    fn a_partial_take_counts_the_refusal_once() {
        let b = Budget::default().after(8, 3);
        assert_eq!((b.kept, b.tried), (3.0, 4.0));
        let b = Budget::default().after(3, 3);
        assert_eq!((b.kept, b.tried), (3.0, 3.0));
    }

    #[test]
    fn the_cost_of_a_token_is_fitted_from_the_steps() {
        assert_eq!(Cost::default().ratio(1), DEFAULT_RATIO);
        // A CPU: 5 ms a step and 5 ms a token.
        let mut cpu = Cost::default();
        for n in [1, 2, 1, 5, 1, 9, 1, 17, 3, 1] {
            cpu = cpu.observe(n, 0.005 + 0.005 * n as f64);
        }
        assert!((cpu.ratio(1) - 0.5).abs() < 1e-6, "{}", cpu.ratio(1));
        // Four sequences generating: a token more is a smaller share of a bigger step...
        assert!((cpu.ratio(4) - 0.8).abs() < 1e-6, "{}", cpu.ratio(4));
        // A GPU: the step's size hardly matters.
        let mut gpu = Cost::default();
        for n in [1, 2, 1, 5, 1, 9, 1, 17, 3, 1] {
            gpu = gpu.observe(n, 0.010 + 0.0001 * n as f64);
        }
        assert!(gpu.ratio(1) < 0.02, "{}", gpu.ratio(1));
        // Steps of one size only: no fit yet.
        let mut same = Cost::default();
        for _ in 0..10 {
            same = same.observe(1, 0.01);
        }
        assert_eq!(same.ratio(1), DEFAULT_RATIO);
    }

    #[test]
    fn the_lookback_bounds_the_search() {
        let mut hist: Vec<u32> = vec![1, 2, 3, 42];
        hist.extend((0..LOOKBACK as u32).map(|i| 100 + i));
        hist.extend([1, 2, 3]);
        assert!(d(&hist, 1).is_empty(), "the match is past the lookback");
    }
}
