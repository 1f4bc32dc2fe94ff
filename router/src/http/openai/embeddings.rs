//! `POST /v1/embeddings`: one L2-normalised vector per input, computed by the model's worker in
//! its embedding context (see the worker's `engine::embed`), as floats or base64.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use model_bucket_shared::protocol::{EmbedRequest, Prompt, ToWorker};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

use crate::http::error::ApiError;
use crate::http::job::call::{self, gone};
use crate::http::job::peer::Peers;
use crate::http::json::JsonRaw;
use crate::http::openai::request::{self as openai, PromptIn};
use crate::metrics::RequestLabel;
use crate::registry::Registry;
use crate::routing;
use crate::worker::Event;

/// The most inputs per request (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    pub model: String,
    /// A string, a list of strings, a token array or a list of token arrays.
    pub input: PromptIn,
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Accepted only as the model's own width: vectors are not truncated.
    pub dimensions: Option<u64>,
    /// LoRA adapters for this request (see [`crate::http::job::lora`]).
    pub lora: Option<Vec<crate::http::job::lora::LoraParam>>,
}

/// The inputs as worker prompts, checked: at least one, none empty, at most [`MAX_INPUTS`].
pub fn inputs(input: &PromptIn) -> Result<Vec<Prompt>, ApiError> {
    let out = openai::prompts(input, "input", MAX_INPUTS)?;
    let empty = |p: &Prompt| match p {
        Prompt::Text(s) => s.is_empty(),
        Prompt::Tokens(t) => t.is_empty(),
        Prompt::Chat(_) => true,
    };
    if let Some(i) = out.iter().position(empty) {
        return Err(ApiError::bad_param("input", format!("input {i} is empty")));
    }
    Ok(out)
}

/// Whether vectors go out as base64 (little-endian f32) rather than JSON numbers.
fn base64_format(f: Option<&str>) -> Result<bool, ApiError> {
    match f {
        None | Some("float") => Ok(false),
        Some("base64") => Ok(true),
        Some(other) => Err(ApiError::bad_param(
            "encoding_format",
            format!("encoding_format must be float or base64, got {other:?}"),
        )),
    }
}

pub async fn embeddings(
    State(r): State<Arc<Registry>>,
    Peers(peers): Peers,
    JsonRaw(req, raw): JsonRaw<EmbeddingsRequest>,
) -> Result<Response, ApiError> {
    let is_task = routing::task(&req.model, &r.config().tasks, r.catalog().resolve(&req.model).is_some()).is_some();
    let result = if r.catalog().resolve(&req.model).is_none() && !is_task {
        crate::http::job::route::elsewhere(&r.catalog(), peers.as_deref(), "/v1/embeddings", &raw, &req.model).await
    } else {
        match serve(&r, &req, peers.as_deref()).await {
            Ok(Served::Here(resp)) => Ok(resp),
            // The task's first model that can serve is a peer's.
            Ok(Served::Peer(model)) => {
                crate::http::job::peer::forward_as(peers.as_deref(), "/v1/embeddings", &raw, &model).await
            }
            Err(e) => Err(e),
        }
    };
    let status = match &result {
        Ok(resp) => resp.status().as_u16(),
        Err(e) => e.status.as_u16(),
    };
    let model = r.catalog().resolve(&req.model).map(|m| m.id.to_string()).unwrap_or_else(|| "unknown".into());
    r.metrics.requests.get_or_create(&RequestLabel { model, endpoint: "embeddings", status }).inc();
    result
}

/// An embeddings request served here, or to be served by a peer.
enum Served {
    Here(Response),
    /// On a peer, by this name of a task chain.
    Peer(String),
}

/// Serves `req` on this node, or names the peer model its task chain reaches first.
async fn serve(
    r: &Arc<Registry>,
    req: &EmbeddingsRequest,
    peers: Option<&crate::fleet::Fleet>,
) -> Result<Served, ApiError> {
    let started = Instant::now();
    let inputs = inputs(&req.input)?;
    let b64 = base64_format(req.encoding_format.as_deref())?;
    let cat = r.catalog();
    let config = r.config();
    let id = match routing::task(&req.model, &config.tasks, cat.resolve(&req.model).is_some()) {
        Some(task) => match routing::live_candidates(r, config.tasks[task].chain(), false, peers)
            .into_iter()
            .find(|c| !matches!(c, routing::Candidate::Upstream(_)))
        {
            Some(routing::Candidate::Local(id)) => id,
            Some(routing::Candidate::Peer(model)) => return Ok(Served::Peer(model)),
            _ => return Err(ApiError::unavailable(format!("no model of task {task} can serve embeddings"), 30)),
        },
        None => cat.resolve(&req.model).ok_or_else(|| ApiError::model_not_found(&req.model))?.id.clone(),
    };
    let m = cat.models.iter().find(|m| m.id == id).ok_or_else(|| ApiError::model_not_found(&id))?;
    let w = crate::http::job::lora::worker_of(&cat, m)?;
    let lora = crate::http::job::lora::uses(&cat, m, w, req.lora.as_deref())?;
    let msg = |id| ToWorker::Embed(Box::new(EmbedRequest { id, inputs: inputs.clone(), lora: lora.clone() }));
    let class = routing::task(&req.model, &config.tasks, cat.resolve(&req.model).is_some())
        .and_then(|t| config.tasks[t].priority());
    let ask = crate::registry::Ask { class, pass: false };
    let (_call, first) = call::start_with(r, w, msg, started, ask).await?;
    let (vectors, prompt_tokens) = match first {
        Event::Embeddings { vectors, prompt_tokens } => (vectors, prompt_tokens),
        Event::Error { kind, message } => return Err(ApiError::from_worker(kind, message)),
        Event::Gone => return Err(gone()),
        Event::Tokens { .. } | Event::Done(_) => return Err(ApiError::internal("the worker answered with text")),
    };
    if let Some(d) = req.dimensions {
        let width = vectors.first().map_or(0, Vec::len) as u64;
        if d != width {
            return Err(ApiError::bad_param(
                "dimensions",
                format!("model {} gives {width}-dimensional vectors; dimensions must be {width} or left out", m.id),
            ));
        }
    }
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if b64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    Ok(Served::Here(
        axum::Json(json!({
            "object": "list",
            "data": data,
            "model": m.id,
            "usage": { "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens },
        }))
        .into_response(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Vec<Prompt>, ApiError> {
        inputs(&serde_json::from_str::<PromptIn>(json).unwrap())
    }

    #[test]
    fn input_forms() {
        assert_eq!(parse(r#""a""#).unwrap(), vec![Prompt::Text("a".into())]);
        assert_eq!(parse(r#"["a","b"]"#).unwrap().len(), 2);
        assert_eq!(parse("[1,2]").unwrap(), vec![Prompt::Tokens(vec![1, 2])]);
        assert_eq!(parse("[[1],[2]]").unwrap().len(), 2);
    }

    #[test]
    fn bad_inputs_are_400s() {
        for bad in ["[]", r#""""#, r#"["a",""]"#, "[-3]", "[[1],[]]"] {
            assert_eq!(parse(bad).unwrap_err().status, 400, "{bad}");
        }
        let many = serde_json::to_string(&vec!["x"; MAX_INPUTS + 1]).unwrap();
        assert!(parse(&many).is_err());
        assert!(base64_format(Some("hex")).is_err());
        assert!(base64_format(Some("base64")).unwrap());
    }
}
