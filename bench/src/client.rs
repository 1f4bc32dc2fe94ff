//! Timed HTTP requests to either server. Model Bucket is driven through its OpenAI endpoint
//! (`/v1/completions`, usage chunk at the end); llama-server through its native `/completion`
//! (whose last chunk counts the tokens). Both stream SSE; both ban EOS so every request makes
//! exactly the tokens asked for, and both are told not to reuse cached prompts: these are the
//! cold workloads (see `cache.rs` for the warm ones).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Which API a server is driven through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    ModelBucket,
    LlamaServer,
}

/// One server under test.
#[derive(Debug, Clone)]
pub struct Target {
    pub port: u16,
    pub dialect: Dialect,
    /// The `model` field to send (`None`: none, for a single-model llama-server).
    pub model: Option<String>,
    /// The EOS token to ban.
    pub eos: i32,
}

/// One streamed request's timing.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    /// Time to the first generated text.
    pub first: Duration,
    /// Time to the last generated text.
    pub last: Duration,
    pub tokens: u32,
}

pub use model_bucket_tests::server::get;

fn send(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<TcpStream> {
    model_bucket_tests::server::open(port, method, path, "", body, Some(Duration::from_secs(600)))
}

impl Target {
    fn body(&self, prompt: &str, n: u32) -> (&'static str, String) {
        let prompt = serde_json::to_string(prompt).expect("a string encodes");
        match self.dialect {
            Dialect::ModelBucket => (
                "/v1/completions",
                format!(
                    r#"{{"model":"{}","prompt":{prompt},"max_tokens":{n},"temperature":0,"stream":true,"stream_options":{{"include_usage":true}},"logit_bias":{{"{}":-100}},"cache_prompt":false}}"#,
                    self.model.as_deref().unwrap_or(""),
                    self.eos
                ),
            ),
            Dialect::LlamaServer => {
                let model = self.model.as_ref().map(|m| format!(r#""model":"{m}","#)).unwrap_or_default();
                (
                    "/completion",
                    format!(
                        r#"{{{model}"prompt":{prompt},"n_predict":{n},"temperature":0,"stream":true,"cache_prompt":false,"logit_bias":[[{},false]]}}"#,
                        self.eos
                    ),
                )
            }
        }
    }

    /// Streams one completion of `n` tokens.
    pub fn stream(&self, prompt: &str, n: u32) -> anyhow::Result<Timed> {
        let (path, body) = self.body(prompt, n);
        let start = Instant::now();
        let c = send(self.port, "POST", path, &body)?;
        let (mut first, mut last, mut tokens) = (None, Duration::ZERO, 0u32);
        let mut status = String::new();
        let mut r = BufReader::new(c);
        r.read_line(&mut status)?;
        anyhow::ensure!(status.contains(" 200 "), "{path}: {status}");
        for line in r.lines() {
            let line = line?;
            let Some(data) = line.strip_prefix("data: ") else { continue };
            if data == "[DONE]" {
                break;
            }
            let v: serde_json::Value = serde_json::from_str(data)?;
            let text = match self.dialect {
                Dialect::ModelBucket => v["choices"][0]["text"].as_str().unwrap_or(""),
                Dialect::LlamaServer => v["content"].as_str().unwrap_or(""),
            };
            if !text.is_empty() {
                first.get_or_insert(start.elapsed());
                last = start.elapsed();
            }
            match self.dialect {
                Dialect::ModelBucket => {
                    if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                        tokens = n as u32;
                    }
                }
                Dialect::LlamaServer => {
                    if v["stop"] == true {
                        tokens = v["tokens_predicted"].as_u64().unwrap_or(0) as u32;
                        break;
                    }
                }
            }
        }
        Ok(Timed { first: first.unwrap_or(last), last, tokens })
    }

    /// Aggregate tokens/s of `n` concurrent streams of `tokens` each (for `n == 1`: the decode
    /// rate after the first token).
    pub fn throughput(&self, prompt: &str, n: usize, tokens: u32) -> anyhow::Result<f64> {
        let start = Instant::now();
        let results: Vec<anyhow::Result<Timed>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..n).map(|_| s.spawn(|| self.stream(prompt, tokens))).collect();
            hs.into_iter().map(|h| h.join().expect("client thread")).collect()
        });
        let results: Vec<Timed> = results.into_iter().collect::<anyhow::Result<_>>()?;
        let total: u32 = results.iter().map(|r| r.tokens).sum();
        anyhow::ensure!(total == tokens * n as u32, "{total} tokens, wanted {}", tokens * n as u32);
        Ok(if n == 1 {
            (tokens - 1) as f64 / (results[0].last - results[0].first).as_secs_f64()
        } else {
            total as f64 / start.elapsed().as_secs_f64()
        })
    }

    /// Time of a whole 1-token request.
    pub fn one_token(&self, prompt: &str) -> anyhow::Result<Duration> {
        let start = Instant::now();
        self.stream(prompt, 1)?;
        Ok(start.elapsed())
    }
}

/// POSTs a JSON `body` to `path` and calls `each` with every SSE `data:` event, parsed, until
/// `[DONE]`; a status other than 200 is an error.
pub fn each_event(
    port: u16,
    path: &str,
    body: &serde_json::Value,
    mut each: impl FnMut(&serde_json::Value),
) -> anyhow::Result<()> {
    let c = send(port, "POST", path, &body.to_string())?;
    let mut r = BufReader::new(c);
    let mut status = String::new();
    r.read_line(&mut status)?;
    anyhow::ensure!(status.contains(" 200 "), "{path}: {status}");
    for line in r.lines() {
        let line = line?;
        let Some(data) = line.strip_prefix("data: ") else { continue };
        if data == "[DONE]" {
            break;
        }
        each(&serde_json::from_str(data)?);
    }
    Ok(())
}

/// Requests/s of `GET path` from `clients` threads over `d`.
pub fn get_rate(port: u16, path: &str, clients: usize, d: Duration) -> f64 {
    let deadline = Instant::now() + d;
    let n: usize = std::thread::scope(|s| {
        let hs: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0;
                    while Instant::now() < deadline {
                        if matches!(get(port, path), Ok((200, _))) {
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("client")).sum()
    });
    n as f64 / d.as_secs_f64()
}

/// The sum of the `/metrics` series of `port` whose lines start with `prefix`.
pub fn metric_sum(port: u16, prefix: &str) -> u64 {
    let body = get(port, "/metrics").map(|(_, b)| b).unwrap_or_default();
    body.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok()).sum()
}

/// The model IDs `port` lists (`/v1/models`) that contain each of `parts` (lower case).
pub fn ids_containing(port: u16, parts: &[&str]) -> anyhow::Result<Vec<String>> {
    let (_, listing) = get(port, "/v1/models")?;
    let v: serde_json::Value = serde_json::from_str(&listing)?;
    let ids: Vec<String> =
        v["data"].as_array().into_iter().flatten().filter_map(|m| m["id"].as_str().map(String::from)).collect();
    parts
        .iter()
        .map(|part| {
            let found = ids.iter().find(|id| id.to_ascii_lowercase().contains(part)).cloned();
            found.ok_or_else(|| anyhow::anyhow!("no model containing {part:?} in {ids:?}"))
        })
        .collect()
}

/// `field` of `model`'s row in an `/admin/workers` answer `v`.
pub fn worker_field(v: &serde_json::Value, model: &str, field: &str) -> anyhow::Result<u64> {
    let rows = v["workers"].as_array().into_iter().flatten();
    let row = rows.into_iter().find(|w| w["model"] == model);
    row.and_then(|w| w[field].as_u64()).ok_or_else(|| anyhow::anyhow!("no {field} for {model}: {v}"))
}

/// Resident memory of `pid`, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    model_bucket_shared::mem::rss_bytes(Some(pid)).unwrap_or(0) as f64 / (1u64 << 20) as f64
}
