//! What a stress run counts: each outcome, the kinds of clear error, a few examples, every
//! attempt's timing (for the SIGTERM run's split at the signal), and whether each model answered
//! after the faults.

use super::procs::Seen;
use super::rules::{self, ErrorRule};
use super::{Attempt, Outcome};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Examples kept of each outcome but success.
const SAMPLES_PER_OUTCOME: usize = 3;

/// One attempt, as a report keeps it.
#[derive(Debug, Clone)]
pub struct Record {
    pub outcome: Outcome,
    /// When the connect began.
    pub started: Instant,
    /// When the socket took the request's last byte (`None`: it never did).
    pub written: Option<Instant>,
    /// What went wrong (empty on success).
    pub detail: String,
}

/// Counts of each outcome, and what was seen of memory.
#[derive(Debug, Default)]
pub struct Report {
    pub sent: u64,
    pub succeeded: u64,
    pub failed_clear: u64,
    pub refused: u64,
    pub hung: u64,
    pub lost: u64,
    pub malformed: u64,
    /// Finished answers that are not what their request asked for.
    pub wrong: u64,
    /// Clear errors by kind ([`rules::kind`]): `"503 with Retry-After"` and the like, or
    /// `"stream error"`.
    pub clear_errors: BTreeMap<String, u64>,
    /// The server's workers as `/proc` showed them over the run.
    pub memory: Seen,
    /// The server's RAM budget, in bytes (0: none read).
    pub budget: u64,
    /// Workers killed by the fault injector.
    pub kills: u64,
    /// A few examples of each outcome but success, for the report.
    pub samples: Vec<String>,
    /// Every attempt, in the order they ended.
    pub records: Vec<Record>,
}

impl Report {
    pub(super) fn add(&mut self, a: Attempt) {
        self.sent += 1;
        let count = match a.outcome {
            Outcome::Succeeded => &mut self.succeeded,
            Outcome::FailedClear => &mut self.failed_clear,
            Outcome::Refused => &mut self.refused,
            Outcome::Hung => &mut self.hung,
            Outcome::Lost => &mut self.lost,
            Outcome::Malformed => &mut self.malformed,
            Outcome::Wrong => &mut self.wrong,
        };
        *count += 1;
        if a.outcome == Outcome::FailedClear {
            *self.clear_errors.entry(rules::kind(a.status, a.retry_after)).or_default() += 1;
        }
        let detail: String = a.detail.chars().take(300).collect();
        let seen = self.samples.iter().filter(|s| s.starts_with(&format!("{:?}:", a.outcome))).count();
        if a.outcome != Outcome::Succeeded && seen < SAMPLES_PER_OUTCOME {
            self.samples.push(format!("{:?}: {detail}", a.outcome));
        }
        self.records.push(Record { outcome: a.outcome, started: a.started, written: a.written, detail });
    }

    /// Requests that ended in neither an answer nor a clear error: refused, hung, lost or
    /// malformed. A soak or a fault run requires 0.
    pub fn unanswered(&self) -> u64 {
        self.refused + self.hung + self.lost + self.malformed
    }

    /// What breaks a soak's or a fault run's rules (empty: nothing): any request unanswered
    /// or answered wrong, clear errors beyond `rule`, and, where the server has a budget,
    /// workers' memory over it.
    pub fn broken(&self, rule: &ErrorRule) -> Vec<String> {
        let mut why = rule.broken(self);
        if self.unanswered() + self.wrong > 0 {
            why.push(format!("{} unanswered and {} wrong answers (0 allowed)", self.unanswered(), self.wrong));
        }
        if self.budget > 0 && self.memory.max_total > self.budget {
            why.push(format!(
                "workers held {} MiB, over the {} MiB budget",
                self.memory.max_total >> 20,
                self.budget >> 20
            ));
        }
        why
    }

    pub fn line(&self) -> String {
        let kinds: Vec<String> = self.clear_errors.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        let kinds = if kinds.is_empty() { String::new() } else { format!(" ({})", kinds.join(", ")) };
        format!(
            "sent {} | succeeded {} | failed with a clear error {}{kinds} ({:.1}%) | refused {} | hung {} | lost {} | malformed {} | wrong {} | workers' memory (from /proc) at most {} MiB of a {} MiB budget, at most {} alive, each model's most adding up to {} MiB | workers killed {}",
            self.sent,
            self.succeeded,
            self.failed_clear,
            self.failed_clear as f64 * 100.0 / self.sent.max(1) as f64,
            self.refused,
            self.hung,
            self.lost,
            self.malformed,
            self.wrong,
            self.memory.max_total >> 20,
            self.budget >> 20,
            self.memory.max_alive,
            self.memory.all_at_once() >> 20,
            self.kills
        )
    }
}

/// Each model of a run and whether it answered afterwards ([`answers`]).
pub type Recovery = Vec<(String, Result<Duration, String>)>;

/// The recovery as one line: each model's wait, or what it got.
pub fn recovery_line(r: &Recovery) -> String {
    let each: Vec<String> = r
        .iter()
        .map(|(m, a)| match a {
            Ok(d) => format!("{m} answered after {:.1} s", d.as_secs_f64()),
            Err(e) => format!("{m} did not answer: {e}"),
        })
        .collect();
    each.join(" | ")
}

/// The requests of a SIGTERM run, split at the moment the signal was sent.
#[derive(Debug, Default)]
pub struct AroundSignal {
    /// Requests whose last byte the socket took before the signal was sent.
    pub written_before: u64,
    /// Of those, the ones that did not succeed (each must: 0).
    pub unfinished_before: u64,
    /// Refusals whose connect began before the signal (0: only a closed listener refuses).
    pub refused_before: u64,
    /// Requests written after the signal and lost: the listener closed under them. Counted, not
    /// held against the server: a connection still in the kernel's backlog when the listener
    /// closes is reset.
    pub lost_after: u64,
    /// What the unfinished and early-refused requests got.
    pub examples: Vec<String>,
}

impl AroundSignal {
    /// Splits `records` at `signal`, the moment just before the signal was sent (so "before"
    /// is certain; a request written while `kill` ran counts as after).
    pub fn split(records: &[Record], signal: Instant) -> AroundSignal {
        let mut a = AroundSignal::default();
        for r in records {
            let written_before = r.written.is_some_and(|w| w < signal);
            let mut example = false;
            if written_before {
                a.written_before += 1;
                if r.outcome != Outcome::Succeeded {
                    a.unfinished_before += 1;
                    example = true;
                }
            } else if r.outcome == Outcome::Lost {
                a.lost_after += 1;
            }
            if r.outcome == Outcome::Refused && r.started < signal {
                a.refused_before += 1;
                example = true;
            }
            if example && a.examples.len() < 8 {
                a.examples.push(format!("{:?}: {}", r.outcome, r.detail));
            }
        }
        a
    }

    pub fn line(&self) -> String {
        format!(
            "written before the signal {} (not finished {}) | refused before the signal {} | lost after the signal {}",
            self.written_before, self.unfinished_before, self.refused_before, self.lost_after
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_split_at_the_signal() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let rec = |outcome, started, written: Option<u64>| Record {
            outcome,
            started: at(started),
            written: written.map(at),
            detail: String::new(),
        };
        let records = [
            rec(Outcome::Succeeded, 1, Some(1)),
            rec(Outcome::Succeeded, 9, Some(9)),
            rec(Outcome::Lost, 11, Some(11)),
            rec(Outcome::Refused, 12, None),
            rec(Outcome::FailedClear, 3, Some(3)),
            rec(Outcome::Refused, 4, None),
        ];
        let a = AroundSignal::split(&records, at(10));
        assert_eq!((a.written_before, a.unfinished_before, a.refused_before, a.lost_after), (3, 1, 1, 1));
        assert_eq!(a.examples.len(), 2);
    }

    #[test]
    fn the_report_counts_and_keeps_a_few_examples() {
        let mut r = Report::default();
        let a = |outcome, status| Attempt {
            outcome,
            detail: "x".into(),
            status,
            retry_after: status == Some(503),
            started: Instant::now(),
            written: None,
        };
        for _ in 0..5 {
            r.add(a(Outcome::Lost, None));
        }
        r.add(a(Outcome::FailedClear, Some(503)));
        r.add(a(Outcome::FailedClear, Some(200)));
        assert_eq!((r.sent, r.lost, r.failed_clear, r.unanswered()), (7, 5, 2, 5));
        assert_eq!(r.samples.len(), SAMPLES_PER_OUTCOME + 2);
        r.add(a(Outcome::Wrong, None));
        assert_eq!(r.wrong, 1);
        for _ in 0..3 {
            r.add(a(Outcome::Succeeded, None));
        }
        assert!(
            r.line().contains("failed with a clear error 2 (503 with Retry-After ×1, stream error ×1)"),
            "{}",
            r.line()
        );
        assert_eq!(r.broken(&ErrorRule::FAULTS).len(), 1, "{:?}", r.broken(&ErrorRule::FAULTS));
        assert_eq!(r.broken(&ErrorRule::SOAK).len(), 4, "{:?}", r.broken(&ErrorRule::SOAK));
    }
}
