//! What became of one request, decided from facts alone (no I/O): how far the request got onto
//! the wire, the bytes that came back and why reading stopped. The counters of a stress run are
//! only as honest as this file, so every rule is a unit test below.
//!
//! - `refused`: the connection was not made, or the socket took no byte of the request;
//! - `lost`: bytes of the request were taken, and then no complete answer came (closed, reset,
//!   a body shorter than announced, a stream cut off before `[DONE]` without an error event),
//!   whatever the server did with it;
//! - `hung`: no answer within [`HangRule::answer_within`], or a stream under the
//!   [`HangRule`] floor for its whole limit;
//! - `failed_clear`: an error status with the OpenAI error envelope, or an error event in a
//!   stream;
//! - `malformed`: a complete answer that is neither a success nor the error envelope;
//! - `wrong`: a complete answer with a finish reason that is not what its request asked for
//!   (see [`super::verify`]: fewer tokens than `max_tokens` with EOS banned, a JSON answer that
//!   does not parse);
//! - `succeeded`: a complete answer with a finish reason that is what its request asked for.

use super::verify::{self, Answer, Expect};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Succeeded,
    FailedClear,
    Refused,
    Hung,
    Lost,
    Malformed,
    Wrong,
}

/// When a request counts as hung.
#[derive(Debug, Clone, Copy)]
pub struct HangRule {
    /// Longest wait, from the request's last byte, for the response headers; and for the whole
    /// response when it is not a stream.
    pub answer_within: Duration,
    /// The floor of a stream's rate: one `data:` event per `floor_every` on average...
    pub floor_every: Duration,
    /// ...over every window of `limit` the stream stays open (so a stream needs
    /// `limit / floor_every` events in each such window).
    pub limit: Duration,
}

impl HangRule {
    /// 60 s for an answer (a request may wait 20 s for a worker to load, then gets a 503); a
    /// stream needs 3 events in every 30 s (one per 10 s), where a tiny model on two busy
    /// cores sends several per second.
    pub const DEFAULT: HangRule = HangRule {
        answer_within: Duration::from_secs(60),
        floor_every: Duration::from_secs(10),
        limit: Duration::from_secs(30),
    };

    /// `data:` events a stream needs in each window of `limit` (at least 1).
    pub fn events_per_limit(&self) -> usize {
        let n = self.limit.as_nanos().div_ceil(self.floor_every.as_nanos().max(1));
        usize::try_from(n).unwrap_or(usize::MAX).max(1)
    }
}

/// Whether a stream open for `now` has stayed under `rule`'s floor for the last `limit`:
/// `events` are the times its `data:` events arrived, like `now` counted from the response
/// headers. A stream younger than `limit` is never trickling yet.
pub fn trickling(rule: &HangRule, events: &[Duration], now: Duration) -> bool {
    let Some(since) = now.checked_sub(rule.limit) else { return false };
    events.iter().filter(|t| **t > since).count() < rule.events_per_limit()
}

/// Why reading the response stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The response was complete, or the server closed the connection (EOF).
    Done,
    /// A read or the write failed (reset, broken pipe).
    Failed,
    /// [`HangRule::answer_within`] passed.
    TimedOut,
    /// The stream stayed under the [`HangRule`] floor for its limit.
    Trickled,
}

/// The facts of one attempt.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Whether the TCP connection was made.
    pub connected: bool,
    /// Bytes of the request the socket took, out of `request_len`.
    pub written: usize,
    pub request_len: usize,
    pub end: End,
    /// The response as received: status line, headers, body (still chunked, if it was).
    pub response: &'a [u8],
    /// What a success must be.
    pub expect: Expect,
}

/// The outcome of one attempt, and a short description of what went wrong (empty on success).
pub fn classify(f: &Facts) -> (Outcome, String) {
    if !f.connected {
        return (Outcome::Refused, "no connection".into());
    }
    if f.written == 0 {
        return (Outcome::Refused, "the socket took no byte of the request".into());
    }
    let unanswered = |what: &str| {
        let o = if matches!(f.end, End::TimedOut | End::Trickled) { Outcome::Hung } else { Outcome::Lost };
        let sent = if f.written < f.request_len {
            format!("{} of {} request bytes taken", f.written, f.request_len)
        } else {
            "request sent".to_string()
        };
        (o, format!("{sent}, then {:?} {what}: ...{}", f.end, tail(f.response)))
    };
    let Some(r) = Response::parse(f.response) else { return unanswered("before the response headers") };
    if r.sse && r.status == 200 {
        let events = sse_events(&r.body);
        if events.iter().any(|e| is_error(e)) {
            let e = events.iter().find(|e| is_error(e)).expect("found above");
            return (Outcome::FailedClear, format!("stream error: {e}"));
        }
        if !events.iter().any(|e| e == "[DONE]") {
            return unanswered("in the stream, before [DONE]");
        }
        let finished = events.iter().any(|e| json(e).is_some_and(|v| has_finish_reason(&v)));
        if !finished {
            return (Outcome::Malformed, format!("[DONE] without a finish reason: ...{}", tail(&r.body)));
        }
        let mut a = Answer::default();
        events.iter().filter_map(|e| json(e)).for_each(|v| a.add(&v));
        return verified(f.expect, &a);
    }
    let complete = match r.framing {
        Framing::Chunked(done) => done,
        Framing::Length(n) => r.body.len() >= n,
        Framing::UntilClose => f.end == End::Done,
    };
    if !complete {
        return unanswered("in the body");
    }
    let body = String::from_utf8_lossy(&r.body);
    let v = json(&body);
    match r.status {
        200 if v.as_ref().is_some_and(has_finish_reason) => {
            let mut a = Answer::default();
            a.add(v.as_ref().expect("matched above"));
            verified(f.expect, &a)
        }
        200 => (Outcome::Malformed, format!("200 without a finish reason: {body}")),
        s if v.is_some_and(|v| v["error"]["message"].is_string()) => (Outcome::FailedClear, format!("{s} {body}")),
        s => (Outcome::Malformed, format!("{s} without the error envelope: {body}")),
    }
}

/// A finished answer is a success only if it is what its request asked for.
fn verified(expect: Expect, a: &Answer) -> (Outcome, String) {
    match verify::check(expect, a) {
        Ok(()) => (Outcome::Succeeded, String::new()),
        Err(e) => (Outcome::Wrong, e),
    }
}

/// Whether reading can stop: the response is complete, or a stream has sent `[DONE]` or an
/// error event (where a client such as OpenAI's stops).
pub fn answered(response: &[u8]) -> bool {
    let Some(r) = Response::parse(response) else { return false };
    match r.framing {
        _ if r.sse => sse_events(&r.body).iter().any(|e| e == "[DONE]" || is_error(e)),
        Framing::Chunked(done) => done,
        Framing::Length(n) => r.body.len() >= n,
        Framing::UntilClose => false,
    }
}

/// Whether the response's headers have come and say it is a stream (`text/event-stream`).
pub fn is_stream(response: &[u8]) -> bool {
    Response::parse(response).is_some_and(|r| r.sse)
}

/// The response's status, once its status line has come.
pub fn status(response: &[u8]) -> Option<u16> {
    let line = &response[..response.iter().position(|b| *b == b'\n')?];
    std::str::from_utf8(line).ok()?.split(' ').nth(1)?.parse().ok()
}

/// Whether the response's headers have come and name `header` (lower case).
pub fn has_header(response: &[u8], header: &str) -> bool {
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
    head.split("\r\n").skip(1).any(|l| l.split_once(':').is_some_and(|(n, _)| n.trim() == header))
}

/// How many complete `data:` events a response that is a stream holds (0 for any other).
pub fn stream_events(response: &[u8]) -> usize {
    Response::parse(response).filter(|r| r.sse).map(|r| sse_events(&r.body).len()).unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Chunked: whether the last chunk has come.
    Chunked(bool),
    /// `Content-Length`, in bytes.
    Length(usize),
    /// Neither: the body ends when the connection does.
    UntilClose,
}

struct Response {
    status: u16,
    sse: bool,
    framing: Framing,
    /// The body received so far, de-chunked.
    body: Vec<u8>,
}

impl Response {
    /// The response, once its headers are complete.
    fn parse(raw: &[u8]) -> Option<Response> {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let rest = &raw[end + 4..];
        let mut lines = head.split("\r\n");
        let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let (mut sse, mut chunked, mut length) = (false, false, None);
        for l in lines {
            let Some((name, value)) = l.split_once(':') else { continue };
            match (name.trim(), value.trim()) {
                ("content-type", v) => sse = v.starts_with("text/event-stream"),
                ("transfer-encoding", v) => chunked = v.contains("chunked"),
                ("content-length", v) => length = v.parse().ok(),
                _ => {}
            }
        }
        let (body, framing) = match (chunked, length) {
            (true, _) => {
                let (b, done) = dechunk(rest);
                (b, Framing::Chunked(done))
            }
            (false, Some(n)) => (rest.to_vec(), Framing::Length(n)),
            (false, None) => (rest.to_vec(), Framing::UntilClose),
        };
        Some(Response { status, sse, framing, body })
    }
}

/// A chunked body decoded as far as it has come, and whether its last (empty) chunk has.
fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else { return (body, false) };
        let size = std::str::from_utf8(&raw[..eol]).ok().and_then(|l| {
            let hex = l.split(';').next().unwrap_or("").trim();
            usize::from_str_radix(hex, 16).ok()
        });
        let Some(size) = size else { return (body, false) };
        let data = &raw[eol + 2..];
        if size == 0 {
            return (body, true);
        }
        body.extend_from_slice(&data[..size.min(data.len())]);
        if data.len() < size + 2 {
            return (body, false);
        }
        raw = &data[size + 2..];
    }
}

/// The `data:` payloads of the complete events of an SSE body (comments and the unfinished
/// last event left out).
fn sse_events(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    let mut blocks: Vec<&str> = text.split("\n\n").collect();
    blocks.pop(); // after the last blank line: an event still coming, or nothing
    blocks
        .into_iter()
        .filter_map(|b| {
            let data: Vec<&str> =
                b.lines().filter_map(|l| l.strip_prefix("data:")).map(|d| d.strip_prefix(' ').unwrap_or(d)).collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

fn json(s: &str) -> Option<serde_json::Value> {
    serde_json::from_str(s).ok()
}

fn is_error(event: &str) -> bool {
    json(event).is_some_and(|v| v.get("error").is_some())
}

fn has_finish_reason(v: &serde_json::Value) -> bool {
    v["choices"].as_array().is_some_and(|c| c.iter().any(|c| c["finish_reason"].is_string()))
}

/// The last 200 bytes, for a report.
fn tail(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[b.len().saturating_sub(200)..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: usize = 300;

    fn facts(written: usize, end: End, response: &[u8]) -> Facts<'_> {
        Facts { connected: true, written, request_len: REQ, end, response, expect: Expect::Finished }
    }

    fn of(end: End, response: &str) -> Outcome {
        classify(&facts(REQ, end, response.as_bytes())).0
    }

    fn json_response(status: u16, body: &str) -> String {
        format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len())
    }

    /// A chunked SSE response, one chunk per event, with the last chunk if `ended`.
    fn sse(events: &[&str], ended: bool) -> String {
        let mut s =
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_string();
        for e in events {
            let ev = format!("data: {e}\n\n");
            s += &format!("{:x}\r\n{ev}\r\n", ev.len());
        }
        if ended {
            s += "0\r\n\r\n";
        }
        s
    }

    const CHUNK: &str = r#"{"choices":[{"delta":{"content":"Hi"},"finish_reason":null}]}"#;
    const FINISH: &str = r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#;
    const ERROR: &str = r#"{"error":{"message":"the worker exited","type":"server_error"}}"#;

    #[test]
    fn no_connection_or_no_byte_taken_is_refused() {
        let f = Facts {
            connected: false,
            written: 0,
            request_len: REQ,
            end: End::Failed,
            response: b"",
            expect: Expect::Finished,
        };
        assert_eq!(classify(&f).0, Outcome::Refused);
        assert_eq!(classify(&facts(0, End::Failed, b"")).0, Outcome::Refused);
    }

    /// The old counters called these `refused` ("the server never took the request"): the
    /// request was written, so the client cannot know that, and it got no answer.
    #[test]
    fn cut_off_after_the_request_was_written_is_lost() {
        assert_eq!(of(End::Done, ""), Outcome::Lost); // EOF before a status line
        assert_eq!(of(End::Failed, ""), Outcome::Lost); // reset before a status line
        assert_eq!(classify(&facts(10, End::Failed, b"")).0, Outcome::Lost); // part of it taken
        assert_eq!(of(End::Done, "HTTP/1.1 200 OK\r\ncontent-le"), Outcome::Lost);
    }

    #[test]
    fn a_body_shorter_than_announced_is_lost() {
        let full = json_response(200, &format!(r#"{{"choices":[{}]}}"#, r#"{"finish_reason":"stop"}"#));
        assert_eq!(of(End::Done, &full), Outcome::Succeeded);
        assert_eq!(of(End::Done, &full[..full.len() - 3]), Outcome::Lost);
        assert_eq!(of(End::TimedOut, &full[..full.len() - 3]), Outcome::Hung);
    }

    #[test]
    fn no_answer_in_time_is_hung() {
        assert_eq!(of(End::TimedOut, ""), Outcome::Hung);
        assert_eq!(of(End::Trickled, &sse(&[CHUNK], false)), Outcome::Hung);
    }

    #[test]
    fn errors_with_a_status_or_an_event_are_clear() {
        assert_eq!(of(End::Done, &json_response(503, r#"{"error":{"message":"busy"}}"#)), Outcome::FailedClear);
        assert_eq!(of(End::Done, &sse(&[CHUNK, ERROR, "[DONE]"], true)), Outcome::FailedClear);
        // The error event is where a client stops reading: what follows does not matter.
        assert_eq!(of(End::Failed, &sse(&[CHUNK, ERROR], false)), Outcome::FailedClear);
    }

    #[test]
    fn answers_that_are_neither_success_nor_envelope_are_malformed() {
        assert_eq!(of(End::Done, &json_response(502, "Bad Gateway")), Outcome::Malformed);
        assert_eq!(of(End::Done, &json_response(200, "{}")), Outcome::Malformed);
        assert_eq!(of(End::Done, &sse(&[CHUNK, "[DONE]"], true)), Outcome::Malformed);
    }

    #[test]
    fn streams() {
        assert_eq!(of(End::Done, &sse(&[CHUNK, FINISH, "[DONE]"], true)), Outcome::Succeeded);
        // [DONE] is enough: the reader stops there, before the last chunk.
        assert_eq!(of(End::Done, &sse(&[CHUNK, FINISH, "[DONE]"], false)), Outcome::Succeeded);
        assert_eq!(of(End::Done, &sse(&[CHUNK, FINISH], true)), Outcome::Lost);
        assert_eq!(of(End::Failed, &sse(&[CHUNK], false)), Outcome::Lost);
    }

    /// A finished answer that is not what was asked (cut short, labelled `stop`) is wrong.
    #[test]
    fn answers_are_held_to_their_request() {
        let expect = |response: &str, n| {
            let f = Facts { expect: Expect::Length(n), ..facts(REQ, End::Done, response.as_bytes()) };
            classify(&f).0
        };
        const USAGE: &str = r#"{"choices":[],"usage":{"completion_tokens":4}}"#;
        const LENGTH: &str = r#"{"choices":[{"delta":{},"finish_reason":"length"}]}"#;
        assert_eq!(expect(&sse(&[CHUNK, LENGTH, USAGE, "[DONE]"], true), 4), Outcome::Succeeded);
        assert_eq!(expect(&sse(&[CHUNK, LENGTH, USAGE, "[DONE]"], true), 5), Outcome::Wrong);
        assert_eq!(expect(&sse(&[CHUNK, FINISH, USAGE, "[DONE]"], true), 4), Outcome::Wrong);
        let body = |f: &str| {
            json_response(
                200,
                &format!(r#"{{"choices":[{{"text":"a b","finish_reason":"{f}"}}],"usage":{{"completion_tokens":4}}}}"#),
            )
        };
        assert_eq!(expect(&body("length"), 4), Outcome::Succeeded);
        assert_eq!(expect(&body("stop"), 4), Outcome::Wrong);
    }

    #[test]
    fn reading_stops_at_an_answer() {
        assert!(!answered(b""));
        assert!(!answered(sse(&[CHUNK, FINISH], false).as_bytes()));
        assert!(answered(sse(&[CHUNK, FINISH, "[DONE]"], false).as_bytes()));
        assert!(answered(sse(&[CHUNK, ERROR], false).as_bytes()));
        let r = json_response(200, "{}");
        assert!(answered(r.as_bytes()) && !answered(&r.as_bytes()[..r.len() - 1]));
        // Keep-alive comments are not events.
        let with_comment = sse(&[CHUNK], false) + "3\r\n:\n\n\r\n";
        assert_eq!(stream_events(with_comment.as_bytes()), 1);
    }

    #[test]
    fn chunks_split_anywhere() {
        let s = sse(&[CHUNK, FINISH, "[DONE]"], true);
        let whole = Response::parse(s.as_bytes()).expect("headers").body;
        for cut in 0..s.len() {
            if let Some(r) = Response::parse(&s.as_bytes()[..cut]) {
                assert!(whole.starts_with(&r.body), "cut at {cut}");
            }
        }
        assert_eq!(Response::parse(s.as_bytes()).expect("headers").framing, Framing::Chunked(true));
    }

    fn secs(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    #[test]
    fn the_trickle_floor() {
        let r = HangRule::DEFAULT;
        assert_eq!(r.events_per_limit(), 3);
        // Younger than the limit: not yet, even without an event.
        assert!(!trickling(&r, &[], Duration::from_secs(29)));
        assert!(trickling(&r, &[], Duration::from_secs(31)));
        // A burst after a long wait, then the stream keeps going.
        assert!(!trickling(&r, &secs(&[25, 25, 26]), Duration::from_secs(40)));
        // One event every 11 s is under one per 10 s: hung once a 30 s window holds only 2.
        let every_11: Vec<u64> = (1..10).map(|i| i * 11).collect();
        assert!(!trickling(&r, &secs(&every_11[..3]), Duration::from_secs(33)));
        assert!(trickling(&r, &secs(&every_11[..3]), Duration::from_secs(42)));
        // One every 9 s stays above the floor however long it lasts.
        let every_9: Vec<u64> = (1..100).map(|i| i * 9).collect();
        assert!((30..880).all(|t| !trickling(&r, &secs(&every_9), Duration::from_secs(t))));
    }
}
