//! A worker's stderr: JSON log lines re-emitted as the router's own tracing events, and the
//! last lines kept for crash reports.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::broadcast;

/// Lines kept for error messages and for those who open the log.
const TAIL_LINES: usize = 200;

/// Longest line kept, in bytes; longer ones are cut (at a character boundary).
const MAX_LINE: usize = 4096;

/// A line the log's followers hear of; `None`: the worker's stderr closed, nothing follows.
pub type LogLine = Option<Arc<str>>;

/// The last lines a worker wrote to stderr, and a channel for those who follow it live.
/// Invariant: a follower sees every line exactly once, since taking the kept lines and
/// subscribing happen under one lock, as does each push.
#[derive(Clone)]
pub struct LogTail(Arc<Mutex<Tail>>);

struct Tail {
    lines: VecDeque<Arc<str>>,
    live: broadcast::Sender<LogLine>,
    ended: bool,
}

impl Default for LogTail {
    fn default() -> LogTail {
        let live = broadcast::channel(TAIL_LINES).0;
        LogTail(Arc::new(Mutex::new(Tail { lines: VecDeque::new(), live, ended: false })))
    }
}

impl LogTail {
    pub(crate) fn push(&self, mut line: String) {
        if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        let line: Arc<str> = line.into();
        let mut t = self.0.lock().expect("log tail lock");
        if t.lines.len() == TAIL_LINES {
            t.lines.pop_front();
        }
        t.lines.push_back(line.clone());
        let _ = t.live.send(Some(line));
    }

    /// Ends the log with `reason` as its last line (a worker that could not even start).
    pub(crate) fn fail(&self, reason: String) {
        self.push(reason);
        self.end();
    }

    /// Marks the end of the worker's stderr: followers hear `None`.
    fn end(&self) {
        let mut t = self.0.lock().expect("log tail lock");
        t.ended = true;
        let _ = t.live.send(None);
    }

    /// The kept lines, oldest first, as plain messages.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().expect("log tail lock").lines.iter().map(|l| l.to_string()).collect()
    }

    /// The last `n` lines joined for an error message.
    pub fn last(&self, n: usize) -> String {
        let lines = self.lines();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The kept lines, whether the log has ended, and a receiver of the lines that follow
    /// (a follower too slow to keep up with [`TAIL_LINES`] lines misses some: `Lagged`).
    pub fn follow(&self) -> (Vec<Arc<str>>, bool, broadcast::Receiver<LogLine>) {
        let t = self.0.lock().expect("log tail lock");
        (t.lines.iter().cloned().collect(), t.ended, t.live.subscribe())
    }
}

/// Reads `stderr` line by line until it closes, logging each line under `model`. A line is
/// kept to [`MAX_LINE`] bytes (the rest of it is skipped, never buffered); bytes that are not
/// UTF-8 are replaced, never the end of the log.
pub fn follow(stderr: impl AsyncRead + Unpin + Send + 'static, model: String, pid: u32, tail: LogTail) {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stderr);
        let mut line = Vec::new();
        while read_line_capped(&mut reader, &mut line, MAX_LINE + 1).await.unwrap_or(false) {
            let (level, text) = parse(&String::from_utf8_lossy(&line));
            match level {
                "ERROR" => tracing::error!(target: "worker", model = %model, pid, "{text}"),
                "WARN" => tracing::warn!(target: "worker", model = %model, pid, "{text}"),
                "INFO" => tracing::info!(target: "worker", model = %model, pid, "{text}"),
                _ => tracing::debug!(target: "worker", model = %model, pid, "{text}"),
            }
            tail.push(text);
        }
        tail.end();
    });
}

/// Reads one line into `buf` without its newline, keeping at most `max` bytes of it (the
/// rest is read and dropped). `Ok(false)`: the input ended with nothing more to read.
async fn read_line_capped<R: AsyncBufRead + Unpin>(r: &mut R, buf: &mut Vec<u8>, max: usize) -> std::io::Result<bool> {
    buf.clear();
    let mut any = false;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(any);
        }
        any = true;
        let (part, used, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], i + 1, true),
            None => (chunk, chunk.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        buf.extend_from_slice(&part[..part.len().min(room)]);
        r.consume(used);
        if done {
            return Ok(true);
        }
    }
}

/// A worker's JSON line → (level, "message key=value ..."); other lines pass through as WARN
/// (llama.cpp aborts print plain text).
fn parse(line: &str) -> (&'static str, String) {
    let Ok(serde_json::Value::Object(obj)) = serde_json::from_str::<serde_json::Value>(line) else {
        return ("WARN", line.to_string());
    };
    let level = match obj.get("level").and_then(|l| l.as_str()) {
        Some("ERROR") => "ERROR",
        Some("WARN") => "WARN",
        Some("INFO") => "INFO",
        _ => "DEBUG",
    };
    let mut text = String::new();
    if let Some(serde_json::Value::Object(fields)) = obj.get("fields") {
        if let Some(m) = fields.get("message").and_then(|m| m.as_str()) {
            text.push_str(m);
        }
        for (k, v) in fields.iter().filter(|(k, _)| *k != "message") {
            text.push_str(&format!(" {k}={}", v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())));
        }
    }
    (level, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_worker_json_and_plain_lines() {
        let (l, t) = parse(r#"{"level":"ERROR","fields":{"message":"cannot load","error":"bad file"},"target":"w"}"#);
        assert_eq!(l, "ERROR");
        assert_eq!(t, "cannot load error=bad file");
        assert_eq!(parse("GGML_ASSERT failed"), ("WARN", "GGML_ASSERT failed".to_string()));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let t = LogTail::default();
        for i in 0..TAIL_LINES + 10 {
            t.push(i.to_string());
        }
        assert_eq!(t.lines().len(), TAIL_LINES);
        assert_eq!(t.lines()[0], "10");
        assert_eq!(t.last(2), format!("{}\n{}", TAIL_LINES + 8, TAIL_LINES + 9));
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_bad_bytes_replaced_without_ending_the_log() {
        let mut input: Vec<u8> = b"first\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 3 * MAX_LINE));
        input.extend(b"\nnot \xff utf-8\nlast");
        let tail = LogTail::default();
        follow(std::io::Cursor::new(input), "m".into(), 1, tail.clone());
        let (_, _, mut rx) = tail.follow();
        while rx.recv().await.is_ok_and(|l| l.is_some()) {}
        let lines = tail.lines();
        assert_eq!(lines.len(), 4, "{:?}", lines.iter().map(|l| l.len()).collect::<Vec<_>>());
        assert_eq!(lines[0], "first");
        assert!(lines[1].len() <= MAX_LINE + '…'.len_utf8() && lines[1].ends_with('…'));
        assert_eq!(lines[2], "not \u{fffd} utf-8");
        assert_eq!(lines[3], "last");
    }

    #[test]
    fn followers_get_the_kept_lines_then_each_new_one_then_the_end() {
        let t = LogTail::default();
        t.push("loading".into());
        let (kept, ended, mut rx) = t.follow();
        assert_eq!((kept.len(), &*kept[0], ended), (1, "loading", false));
        t.push("x".repeat(MAX_LINE + 10));
        let long = rx.try_recv().unwrap().unwrap();
        assert!(long.len() <= MAX_LINE + '…'.len_utf8() && long.ends_with('…'));
        t.end();
        assert_eq!(rx.try_recv().unwrap(), None);
        assert!(t.follow().1, "a late follower learns it has ended");
    }
}
