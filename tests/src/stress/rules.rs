//! Which clear errors a stress run accepts, and how many. A clear error is an error the client
//! can act on, but not every one is acceptable: a run names the kinds its situation explains
//! (a full queue; a worker killed under the fault run; a server shutting down) and the largest
//! share of its requests they may take. Any other status, or more of them, fails the run.

use super::Report;

/// A full queue: the client is told when to come back.
pub const QUEUE_FULL: &str = "429 with Retry-After";
/// The model cannot serve yet (restarting, shutting down), with when to come back.
pub const UNAVAILABLE: &str = "503 with Retry-After";
/// The worker failed under the request.
pub const BAD_GATEWAY: &str = "502";
/// A stream that broke after its headers ends with an error event.
pub const STREAM_ERROR: &str = "stream error";

/// The kind of a clear error, from its status (200: an error event in a stream) and whether it
/// said when to retry.
pub fn kind(status: Option<u16>, retry_after: bool) -> String {
    match status {
        Some(200) => STREAM_ERROR.to_string(),
        Some(s) if retry_after => format!("{s} with Retry-After"),
        Some(s) => s.to_string(),
        None => "?".to_string(),
    }
}

/// A run's rule for clear errors.
#[derive(Debug, Clone, Copy)]
pub struct ErrorRule {
    /// The kinds accepted ([`kind`]'s names).
    pub accepted: &'static [&'static str],
    /// The largest share of the requests sent that may end in an accepted clear error.
    pub max_share: f64,
}

impl ErrorRule {
    /// A soak under a budget for one model: requests queue for memory (up to the queue
    /// timeout, longer than any wait of a healthy run), so only a full queue may answer early.
    pub const SOAK: ErrorRule = ErrorRule { accepted: &[QUEUE_FULL], max_share: 0.02 };
    /// Workers killed under load: a request on a killed worker fails (502, or an error event
    /// once its stream began), and requests for it wait for the restart, or get a 503 once the
    /// load wait has passed (restart backoffs grow to 30 s when kills come every 5 s).
    pub const FAULTS: ErrorRule =
        ErrorRule { accepted: &[QUEUE_FULL, UNAVAILABLE, BAD_GATEWAY, STREAM_ERROR], max_share: 0.3 };
    /// SIGTERM under load: what comes after the signal may be told the server is going.
    pub const SIGTERM: ErrorRule = ErrorRule { accepted: &[UNAVAILABLE], max_share: 0.5 };

    /// The rule in words, for a run's output.
    pub fn line(&self) -> String {
        format!("clear errors accepted: {}, up to {:.0}% of requests", self.accepted.join(", "), self.max_share * 100.0)
    }

    /// What in `r` breaks the rule (empty: nothing).
    pub fn broken(&self, r: &Report) -> Vec<String> {
        let mut why: Vec<String> = r
            .clear_errors
            .iter()
            .filter(|(k, _)| !self.accepted.contains(&k.as_str()))
            .map(|(k, n)| format!("{n} × {k}, a clear error this run does not accept"))
            .collect();
        let share = r.failed_clear as f64 / r.sent.max(1) as f64;
        if share > self.max_share {
            why.push(format!(
                "{:.1}% of requests ended in a clear error (at most {:.0}%)",
                share * 100.0,
                self.max_share * 100.0
            ));
        }
        why
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(sent: u64, errors: &[(&str, u64)]) -> Report {
        let mut r = Report { sent, ..Report::default() };
        for (k, n) in errors {
            r.clear_errors.insert(k.to_string(), *n);
            r.failed_clear += n;
        }
        r
    }

    #[test]
    fn kinds() {
        assert_eq!(kind(Some(503), true), UNAVAILABLE);
        assert_eq!(kind(Some(503), false), "503");
        assert_eq!(kind(Some(200), false), STREAM_ERROR);
        assert_eq!(kind(Some(502), false), BAD_GATEWAY);
    }

    /// A server that answers 95% of requests with 503 fails every run.
    #[test]
    fn a_server_that_mostly_refuses_breaks_every_rule() {
        let r = report(100, &[(UNAVAILABLE, 95)]);
        assert_eq!(ErrorRule::SOAK.broken(&r).len(), 2, "{:?}", ErrorRule::SOAK.broken(&r));
        assert_eq!(ErrorRule::FAULTS.broken(&r).len(), 1);
        assert_eq!(ErrorRule::SIGTERM.broken(&r).len(), 1);
    }

    #[test]
    fn unlisted_kinds_fail_however_few() {
        let r = report(1000, &[("500", 1), ("503", 1)]);
        assert_eq!(ErrorRule::FAULTS.broken(&r).len(), 2);
        assert!(ErrorRule::FAULTS.broken(&report(1000, &[(BAD_GATEWAY, 30), (STREAM_ERROR, 20)])).is_empty());
        assert!(ErrorRule::SOAK.broken(&report(1000, &[(QUEUE_FULL, 20)])).is_empty());
        assert!(!ErrorRule::SOAK.broken(&report(1000, &[(QUEUE_FULL, 21)])).is_empty());
    }
}
