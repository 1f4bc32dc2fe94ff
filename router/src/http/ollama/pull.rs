//! `POST /api/pull`: the server's own pull ([`crate::http::admin::pull`]), with its bounds and
//! the admin key it needs, its progress told in Ollama's NDJSON shape (`pulling manifest`,
//! `pulling FILE` with `total` and `completed`, `verifying sha256 digest`, `writing manifest`,
//! `success`; `{"error": ...}` when it fails), or only the last line with `"stream": false`.
//! `model` is `owner/repo` (or `hf.co/owner/repo`) or a recommended model's name; a tag picks
//! nothing (the repo's recommended file is taken).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

use super::respond::ndjson;
use crate::http::admin::pull::{progress, PullBody};
use crate::http::error::ApiError;
use crate::http::json::Json;
use crate::registry::Registry;

#[derive(Debug, Deserialize)]
pub struct PullRequest {
    /// Older clients send `name`.
    #[serde(alias = "name")]
    pub model: String,
    pub stream: Option<bool>,
}

/// `owner/repo` or a recommended name, from what an Ollama client sends.
pub fn repo_of(model: &str) -> &str {
    let m = model.strip_prefix("hf.co/").or_else(|| model.strip_prefix("huggingface.co/")).unwrap_or(model);
    m.split(':').next().unwrap_or(m)
}

/// Our progress events in Ollama's shape (one may become two lines).
fn ollama_lines(ev: &Value, file: &mut String) -> Vec<Value> {
    match ev["status"].as_str() {
        Some("pulling") => {
            *file = ev["file"].as_str().unwrap_or("").to_string();
            vec![
                json!({ "status": "pulling manifest" }),
                json!({ "status": format!("pulling {file}"), "digest": file, "total": ev["total"], "completed": 0 }),
            ]
        }
        Some("downloading") => {
            let mut v = json!({ "status": format!("pulling {file}"), "digest": file, "completed": ev["completed"] });
            if !ev["total"].is_null() {
                v["total"] = ev["total"].clone();
            }
            vec![v]
        }
        Some("verifying") => vec![json!({ "status": "verifying sha256 digest" })],
        Some("success") => vec![json!({ "status": "writing manifest" }), json!({ "status": "success" })],
        _ => {
            vec![json!({ "error": ev.pointer("/error/message").and_then(Value::as_str).unwrap_or("the pull failed") })]
        }
    }
}

pub async fn pull(State(r): State<Arc<Registry>>, Json(req): Json<PullRequest>) -> Result<Response, ApiError> {
    let body = PullBody { model: repo_of(&req.model).to_string(), file: None, revision: None };
    let events = progress(r, body)?;
    let mut file = String::new();
    let lines = events.flat_map(move |ev| futures::stream::iter(ollama_lines(&ev, &mut file))).boxed();
    if req.stream.unwrap_or(true) {
        return Ok(ndjson(lines));
    }
    let all: Vec<Value> = lines.collect().await;
    let last = all.into_iter().last().unwrap_or_else(|| json!({ "error": "the pull ended without a word" }));
    let status =
        if last.get("error").is_some() { axum::http::StatusCode::BAD_GATEWAY } else { axum::http::StatusCode::OK };
    Ok((status, axum::Json(last)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_lines() {
        assert_eq!(repo_of("hf.co/test/SmolLM2-GGUF:Q4_K_M"), "test/SmolLM2-GGUF");
        assert_eq!(repo_of("gemma3-270m:latest"), "gemma3-270m");
        let mut file = String::new();
        let start = ollama_lines(&json!({"status": "pulling", "file": "a.gguf", "total": 10}), &mut file);
        assert_eq!(start[0]["status"], "pulling manifest");
        assert_eq!(start[1], json!({"status": "pulling a.gguf", "digest": "a.gguf", "total": 10, "completed": 0}));
        let step = ollama_lines(&json!({"status": "downloading", "completed": 4}), &mut file);
        assert_eq!(step[0]["completed"], 4);
        assert_eq!(ollama_lines(&json!({"status": "success"}), &mut file)[1]["status"], "success");
        let err = ollama_lines(&json!({"status": "error", "error": {"message": "not found"}}), &mut file);
        assert_eq!(err[0], json!({"error": "not found"}));
    }
}
