//! A worker's stderr: JSON log lines re-emitted as the router's own tracing events, and the
//! last lines kept for crash reports.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
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
    fn push(&self, mut line: String) {
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

/// Reads `stderr` line by line until it closes, logging each line under `model`.
pub fn follow(stderr: impl AsyncRead + Unpin + Send + 'static, model: String, pid: u32, tail: LogTail) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let (level, text) = parse(&line);
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
