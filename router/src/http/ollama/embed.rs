//! `POST /api/embed` (`input`: a string or a list) and the older `POST /api/embeddings`
//! (`prompt`: one string), served through [`crate::http::openai::embeddings`] (its bounds,
//! tasks, peers and metrics) and reshaped: `{"embeddings": [[...]]}` and `{"embedding": [...]}`.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

use crate::http::error::ApiError;
use crate::http::job::peer::Peers;
use crate::http::json::{Json, JsonRaw};
use crate::http::openai::embeddings::{embeddings, EmbeddingsRequest};
use crate::registry::Registry;

#[derive(Debug, Deserialize)]
pub struct EmbedRequest {
    pub model: String,
    pub input: Value,
    pub dimensions: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct LegacyRequest {
    pub model: String,
    pub prompt: String,
}

/// The largest embeddings answer read back, in bytes (2,048 inputs of 4,096 floats as JSON
/// text fit).
const MAX_ANSWER_BYTES: usize = 256 << 20;

/// The parts of an OpenAI embeddings answer used here.
#[derive(Deserialize)]
struct Answer {
    data: Vec<Datum>,
    usage: Option<AnswerUsage>,
}

#[derive(Deserialize)]
struct Datum {
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct AnswerUsage {
    prompt_tokens: u64,
}

/// Runs an OpenAI embeddings body; the vectors in order and the prompt tokens.
async fn run(r: Arc<Registry>, peers: Peers, body: Value) -> Result<(Vec<Vec<f32>>, u64), ApiError> {
    let raw = Bytes::from(body.to_string());
    let req: EmbeddingsRequest =
        serde_json::from_value(body).map_err(|e| ApiError::bad_request(format!("invalid request: {e}")))?;
    let resp = embeddings(State(r), peers, JsonRaw(req, raw)).await?;
    let status = resp.status();
    let bytes = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| ApiError::bad_gateway(format!("the embeddings could not be read: {e}")))?
        .to_bytes();
    if !status.is_success() {
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let message = v.pointer("/error/message").and_then(Value::as_str).unwrap_or("embedding failed");
        return Err(ApiError { status, ..ApiError::bad_gateway(message.to_string()) });
    }
    let answer: Answer = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_gateway(format!("the embeddings answer could not be read: {e}")))?;
    let tokens = answer.usage.map_or(0, |u| u.prompt_tokens);
    Ok((answer.data.into_iter().map(|d| d.embedding).collect(), tokens))
}

pub async fn embed(
    State(r): State<Arc<Registry>>,
    peers: Peers,
    Json(req): Json<EmbedRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let model = super::model_name(&r, &req.model);
    let mut body = json!({ "model": model, "input": req.input });
    if let Some(d) = req.dimensions {
        body["dimensions"] = json!(d);
    }
    let (vectors, tokens) = run(r, peers, body).await?;
    Ok(axum::Json(json!({
        "model": model,
        "embeddings": vectors,
        "total_duration": started.elapsed().as_nanos() as u64,
        "load_duration": 0,
        "prompt_eval_count": tokens,
    }))
    .into_response())
}

pub async fn embeddings_legacy(
    State(r): State<Arc<Registry>>,
    peers: Peers,
    Json(req): Json<LegacyRequest>,
) -> Result<Response, ApiError> {
    let model = super::model_name(&r, &req.model);
    let (mut vectors, _) = run(r, peers, json!({ "model": model, "input": req.prompt })).await?;
    Ok(axum::Json(json!({ "embedding": vectors.pop().unwrap_or_default() })).into_response())
}
