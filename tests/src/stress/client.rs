//! One request of a stress run on a plain TCP socket, watched closely enough that
//! [`outcome::classify`] gets facts: whether the connection was made, how many request bytes
//! the socket took and when the last one went, when each stream event came, and why reading
//! stopped.

use super::outcome::{self, End, Facts, HangRule, Outcome};
use super::verify::Expect;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// How often a read with nothing to read wakes up to check the hang rule.
const TICK: Duration = Duration::from_millis(250);

/// After the answer, how long the rest of the response (`[DONE]`'s trailer) is read before the
/// socket is closed, so the server does not see a reset.
const DRAIN: Duration = Duration::from_secs(1);

/// One attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub outcome: Outcome,
    /// What went wrong (empty on success).
    pub detail: String,
    /// The status of a clear error: its HTTP status, or 200 for an error event in a stream.
    pub status: Option<u16>,
    /// Whether the response carried `Retry-After`.
    pub retry_after: bool,
    /// When the connect began.
    pub started: Instant,
    /// When the socket took the request's last byte (`None`: it never did).
    pub written: Option<Instant>,
}

/// Sends `POST path` with a JSON `body` to a loopback port, reads the answer under `rule` and
/// classifies it, a success held to `expect`.
pub fn post(port: u16, path: &str, body: &str, rule: &HangRule, expect: Expect) -> Attempt {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let started = Instant::now();
    let mut x = Exchange { written: 0, written_at: None, response: Vec::new(), error: None };
    let (connected, end) = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(mut c) => (true, x.run(&mut c, request.as_bytes(), rule)),
        Err(e) => {
            x.error = Some(e);
            (false, End::Failed)
        }
    };
    let facts = Facts { connected, written: x.written, request_len: request.len(), end, response: &x.response, expect };
    let (outcome, mut detail) = outcome::classify(&facts);
    if let Some(e) = x.error.filter(|_| outcome != Outcome::Succeeded) {
        detail = format!("{detail} ({e})");
    }
    let status = (outcome == Outcome::FailedClear).then(|| outcome::status(&x.response)).flatten();
    let retry_after = outcome::has_header(&x.response, "retry-after");
    Attempt { outcome, detail, status, retry_after, started, written: x.written_at }
}

struct Exchange {
    written: usize,
    written_at: Option<Instant>,
    response: Vec<u8>,
    error: Option<std::io::Error>,
}

impl Exchange {
    fn run(&mut self, c: &mut TcpStream, request: &[u8], rule: &HangRule) -> End {
        let _ = c.set_nodelay(true);
        let _ = c.set_write_timeout(Some(rule.answer_within));
        while self.written < request.len() {
            match c.write(&request[self.written..]) {
                Ok(0) => return End::Failed,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return self.failed(e),
            }
        }
        if let Err(e) = c.flush() {
            return self.failed(e);
        }
        let sent = Instant::now();
        self.written_at = Some(sent);
        // Set once the headers of a stream have come; from then on the trickle floor applies
        // instead of the deadline.
        let mut opened: Option<Instant> = None;
        let mut events: Vec<Duration> = Vec::new();
        let mut buf = [0u8; 16 << 10];
        loop {
            let now = Instant::now();
            let wait = match opened {
                Some(t) if outcome::trickling(rule, &events, now - t) => return End::Trickled,
                Some(_) => TICK,
                None => match (sent + rule.answer_within).checked_duration_since(now) {
                    Some(left) if !left.is_zero() => left.min(TICK),
                    _ => return End::TimedOut,
                },
            };
            let _ = c.set_read_timeout(Some(wait));
            match c.read(&mut buf) {
                Ok(0) => return End::Done,
                Ok(n) => {
                    self.response.extend_from_slice(&buf[..n]);
                    if outcome::answered(&self.response) {
                        drain(c);
                        return End::Done;
                    }
                    if opened.is_none() && outcome::is_stream(&self.response) {
                        opened = Some(Instant::now());
                    }
                    if let Some(t) = opened {
                        let n = outcome::stream_events(&self.response);
                        events.resize(n.max(events.len()), t.elapsed());
                    }
                }
                Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return self.failed(e),
            }
        }
    }

    fn failed(&mut self, e: std::io::Error) -> End {
        let end = if is_timeout(&e) { End::TimedOut } else { End::Failed };
        self.error = Some(e);
        end
    }
}

/// Reads whatever follows the answer for up to [`DRAIN`], and drops it.
fn drain(c: &mut TcpStream) {
    let deadline = Instant::now() + DRAIN;
    let mut buf = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        let _ = c.set_read_timeout(Some(left));
        if !matches!(c.read(&mut buf), Ok(n) if n > 0) {
            return;
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;

    /// A rule short enough for a unit test: an answer within 2 s; a stream needs 4 events in
    /// every 400 ms.
    const QUICK: HangRule = HangRule {
        answer_within: Duration::from_secs(2),
        floor_every: Duration::from_millis(100),
        limit: Duration::from_millis(400),
    };

    /// A one-connection server on a loopback port: reads the request's headers and body, then
    /// does `then` with the socket.
    fn serve(then: impl FnOnce(TcpStream) + Send + 'static) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            let (c, _) = l.accept().expect("accept");
            let mut r = std::io::BufReader::new(c.try_clone().expect("clone"));
            let mut len = 0;
            loop {
                let mut line = String::new();
                r.read_line(&mut line).expect("request line");
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().expect("length");
                }
                if line == "\r\n" {
                    break;
                }
            }
            r.read_exact(&mut vec![0; len]).expect("body");
            then(c);
        });
        port
    }

    fn sse_head(c: &mut TcpStream) {
        c.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            .expect("head");
    }

    fn event(c: &mut TcpStream, data: &str) -> std::io::Result<()> {
        let ev = format!("data: {data}\n\n");
        c.write_all(format!("{:x}\r\n{ev}\r\n", ev.len()).as_bytes())
    }

    #[test]
    fn a_closed_port_is_refused() {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let a = post(port, "/v1/completions", "{}", &QUICK, Expect::Finished);
        assert_eq!(a.outcome, Outcome::Refused, "{}", a.detail);
        assert!(a.written.is_none());
    }

    /// The old client counted this as refused ("closed before a status line").
    #[test]
    fn a_request_read_and_dropped_is_lost() {
        let port = serve(drop);
        let a = post(port, "/v1/completions", "{}", &QUICK, Expect::Finished);
        assert_eq!(a.outcome, Outcome::Lost, "{}", a.detail);
        assert!(a.written.is_some());
    }

    #[test]
    fn no_headers_in_time_is_hung() {
        let port = serve(|c| {
            std::thread::sleep(QUICK.answer_within + Duration::from_secs(1));
            drop(c);
        });
        let a = post(port, "/v1/completions", "{}", &QUICK, Expect::Finished);
        assert_eq!(a.outcome, Outcome::Hung, "{}", a.detail);
    }

    #[test]
    fn a_stream_under_the_floor_is_hung() {
        // One event per 200 ms where the floor is one per 100 ms: the socket is never silent
        // for long, yet the stream counts as hung once the limit has passed.
        let port = serve(|mut c| {
            sse_head(&mut c);
            for _ in 0..40 {
                if event(&mut c, r#"{"choices":[{"finish_reason":null}]}"#).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let t = Instant::now();
        let a = post(port, "/v1/completions", "{}", &QUICK, Expect::Finished);
        assert_eq!(a.outcome, Outcome::Hung, "{}", a.detail);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[test]
    fn a_stream_that_finishes_succeeds() {
        let port = serve(|mut c| {
            sse_head(&mut c);
            for e in [r#"{"choices":[{"finish_reason":null}]}"#, r#"{"choices":[{"finish_reason":"stop"}]}"#, "[DONE]"]
            {
                event(&mut c, e).expect("event");
                std::thread::sleep(Duration::from_millis(50));
            }
            c.write_all(b"0\r\n\r\n").expect("last chunk");
        });
        let a = post(port, "/v1/completions", "{}", &QUICK, Expect::Finished);
        assert_eq!(a.outcome, Outcome::Succeeded, "{}", a.detail);
    }
}
