//! A worker's stderr: JSON log lines re-emitted as the router's own tracing events, and the
//! last lines kept for crash reports.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Lines kept for error messages.
const TAIL_LINES: usize = 40;

/// The last lines a worker wrote to stderr.
#[derive(Clone, Default)]
pub struct LogTail(Arc<Mutex<VecDeque<String>>>);

impl LogTail {
    fn push(&self, line: String) {
        let mut q = self.0.lock().expect("log tail lock");
        if q.len() == TAIL_LINES {
            q.pop_front();
        }
        q.push_back(line);
    }

    /// The kept lines, oldest first, as plain messages.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().expect("log tail lock").iter().cloned().collect()
    }

    /// The last `n` lines joined for an error message.
    pub fn last(&self, n: usize) -> String {
        let lines = self.lines();
        lines[lines.len().saturating_sub(n)..].join("\n")
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
        for i in 0..100 {
            t.push(i.to_string());
        }
        assert_eq!(t.lines().len(), TAIL_LINES);
        assert_eq!(t.last(2), "98\n99");
    }
}
