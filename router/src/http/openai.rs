//! OpenAI request bodies and their translation into a worker [`GenerateRequest`]. Pure
//! functions: every validation rule is unit-tested here. Unknown fields are ignored.

use model_bucket_shared::protocol::{ChatMessage, GenerateRequest, Prompt, RequestId, SamplingParams};
use serde::Deserialize;
use std::collections::HashMap;

use super::error::ApiError;

/// Fields shared by chat and text completions.
#[derive(Debug, Default, Deserialize)]
pub struct CommonParams {
    pub model: String,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<Stop>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<i32>,
    pub logit_bias: Option<HashMap<String, f32>>,
    pub n: Option<i64>,
    /// Reuse the cached KV cells of the prompt's longest cached prefix (llama-server's
    /// `cache_prompt`); default true.
    pub cache_prompt: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// `stop`: a string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<InMessage>,
    #[serde(flatten)]
    pub common: CommonParams,
}

#[derive(Debug, Deserialize)]
pub struct InMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

/// Message content: a string or a list of parts (only text parts are supported).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: PromptIn,
    #[serde(flatten)]
    pub common: CommonParams,
}

/// `prompt`: a string or a one-element list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptIn {
    One(String),
    Many(Vec<String>),
}

/// At most this many stop strings, as in OpenAI's API.
const MAX_STOPS: usize = 16;
/// The most `logit_bias` entries, as in OpenAI's API: each is applied at every sampling step.
const MAX_LOGIT_BIAS: usize = 300;
/// The longest stop string, in bytes: every generated token is checked against each.
const MAX_STOP_BYTES: usize = 1024;

/// Checks the shared parameters and builds the sampling part of a worker request.
pub fn to_generate(id: RequestId, prompt: Prompt, c: &CommonParams) -> Result<GenerateRequest, ApiError> {
    if let Some(n) = c.n {
        if n != 1 {
            return Err(ApiError::bad_param(
                "n",
                format!("n = {n} is not supported: this server returns one choice (n = 1)"),
            ));
        }
    }
    let max_tokens = match c.max_completion_tokens.or(c.max_tokens) {
        None => None,
        Some(m) if m >= 1 && m <= u32::MAX as i64 => Some(m as u32),
        Some(m) => return Err(ApiError::bad_param("max_tokens", format!("max_tokens must be at least 1, got {m}"))),
    };
    let d = SamplingParams::default();
    let temperature = c.temperature.unwrap_or(d.temperature);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad_param(
            "temperature",
            format!("temperature must be between 0 and 2, got {temperature}"),
        ));
    }
    let top_p = c.top_p.unwrap_or(d.top_p);
    if !(0.0..=1.0).contains(&top_p) {
        return Err(ApiError::bad_param("top_p", format!("top_p must be between 0 and 1, got {top_p}")));
    }
    let min_p = c.min_p.unwrap_or(d.min_p);
    if !(0.0..=1.0).contains(&min_p) {
        return Err(ApiError::bad_param("min_p", format!("min_p must be between 0 and 1, got {min_p}")));
    }
    for (name, v) in [("presence_penalty", c.presence_penalty), ("frequency_penalty", c.frequency_penalty)] {
        if let Some(v) = v {
            if !(-2.0..=2.0).contains(&v) {
                return Err(ApiError::bad_request(format!("{name} must be between -2 and 2, got {v}")));
            }
        }
    }
    let repeat_penalty = c.repeat_penalty.unwrap_or(d.repeat_penalty);
    if !(repeat_penalty > 0.0 && repeat_penalty.is_finite()) {
        return Err(ApiError::bad_param("repeat_penalty", "repeat_penalty must be > 0"));
    }
    // OpenAI seeds are 64-bit, llama.cpp's 32-bit: fold, keeping equal seeds equal. u32::MAX
    // means "random" to llama.cpp, so it is moved one down.
    let seed = c.seed.map(|s| ((s as u64 ^ ((s as u64) >> 32)) as u32).min(u32::MAX - 1));
    if let Some(b) = &c.logit_bias {
        if b.len() > MAX_LOGIT_BIAS {
            return Err(ApiError::bad_param(
                "logit_bias",
                format!("at most {MAX_LOGIT_BIAS} logit_bias entries, got {}", b.len()),
            ));
        }
    }
    let mut logit_bias = Vec::new();
    for (tok, &bias) in c.logit_bias.iter().flatten() {
        let t: i32 = tok.parse().map_err(|_| {
            ApiError::bad_param("logit_bias", format!("logit_bias keys must be token IDs, got {tok:?}"))
        })?;
        if !(-100.0..=100.0).contains(&bias) {
            return Err(ApiError::bad_param(
                "logit_bias",
                format!("logit_bias values must be between -100 and 100, got {bias}"),
            ));
        }
        // -100 bans the token outright, as OpenAI documents.
        logit_bias.push((t, if bias <= -100.0 { f32::NEG_INFINITY } else { bias }));
    }
    logit_bias.sort_by_key(|&(t, _)| t);
    let stop = match &c.stop {
        None => vec![],
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    if stop.len() > MAX_STOPS {
        return Err(ApiError::bad_param("stop", format!("at most {MAX_STOPS} stop sequences")));
    }
    if let Some(long) = stop.iter().find(|s| s.len() > MAX_STOP_BYTES) {
        return Err(ApiError::bad_param(
            "stop",
            format!("a stop sequence may be at most {MAX_STOP_BYTES} bytes, got {}", long.len()),
        ));
    }
    Ok(GenerateRequest {
        id,
        prompt,
        sampling: SamplingParams {
            temperature,
            top_p,
            top_k: c.top_k.unwrap_or(d.top_k).max(0),
            min_p,
            seed,
            repeat_penalty,
            repeat_last_n: c.repeat_last_n.unwrap_or(d.repeat_last_n).max(0),
            presence_penalty: c.presence_penalty.unwrap_or(0.0),
            frequency_penalty: c.frequency_penalty.unwrap_or(0.0),
            logit_bias,
        },
        max_tokens,
        stop,
        stream: c.stream,
        cache_prompt: c.cache_prompt.unwrap_or(true),
    })
}

/// Chat messages as the worker takes them: text only.
pub fn chat_messages(msgs: &[InMessage]) -> Result<Vec<ChatMessage>, ApiError> {
    if msgs.is_empty() {
        return Err(ApiError::bad_param("messages", "messages must not be empty"));
    }
    msgs.iter()
        .map(|m| {
            let content = match &m.content {
                None => String::new(),
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => {
                    let mut s = String::new();
                    for p in parts {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => s.push_str(t),
                            (kind, _) => {
                                return Err(ApiError::bad_param(
                                    "messages",
                                    format!("content parts of type {kind:?} are not supported (text only)"),
                                ))
                            }
                        }
                    }
                    s
                }
            };
            Ok(ChatMessage { role: m.role.clone(), content })
        })
        .collect()
}

/// The text of a completion prompt.
pub fn completion_prompt(p: &PromptIn) -> Result<String, ApiError> {
    match p {
        PromptIn::One(s) => Ok(s.clone()),
        PromptIn::Many(v) if v.len() == 1 => Ok(v[0].clone()),
        PromptIn::Many(v) => Err(ApiError::bad_param("prompt", format!("one prompt per request, got {}", v.len()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(json: &str) -> CommonParams {
        serde_json::from_str(json).unwrap()
    }

    fn gen(json: &str) -> Result<GenerateRequest, ApiError> {
        to_generate(RequestId(1), Prompt::Text("x".into()), &common(json))
    }

    #[test]
    fn defaults_and_unknown_fields() {
        let r = gen(r#"{"model":"m","user":"someone","whatever":[1,2]}"#).unwrap();
        assert_eq!(r.max_tokens, None);
        assert_eq!(r.sampling, SamplingParams::default());
        assert!(!r.stream);
    }

    #[test]
    fn max_completion_tokens_wins_and_zero_is_rejected() {
        assert_eq!(gen(r#"{"model":"m","max_tokens":5}"#).unwrap().max_tokens, Some(5));
        assert_eq!(gen(r#"{"model":"m","max_tokens":5,"max_completion_tokens":7}"#).unwrap().max_tokens, Some(7));
        assert_eq!(gen(r#"{"model":"m","max_tokens":0}"#).unwrap_err().status, 400);
    }

    #[test]
    fn stop_string_or_list() {
        assert_eq!(gen(r#"{"model":"m","stop":"END"}"#).unwrap().stop, vec!["END"]);
        assert_eq!(gen(r#"{"model":"m","stop":["a","b"]}"#).unwrap().stop, vec!["a", "b"]);
        let many: Vec<String> = (0..17).map(|i| i.to_string()).collect();
        assert!(gen(&format!(r#"{{"model":"m","stop":{}}}"#, serde_json::to_string(&many).unwrap())).is_err());
        let long = "x".repeat(1025);
        assert_eq!(gen(&format!(r#"{{"model":"m","stop":"{long}"}}"#)).unwrap_err().param, Some("stop"));
        assert!(gen(&format!(r#"{{"model":"m","stop":"{}"}}"#, &long[..1024])).is_ok());
    }

    #[test]
    fn n_other_than_one_is_a_clear_400() {
        let e = gen(r#"{"model":"m","n":2}"#).unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.param, Some("n"));
        assert!(gen(r#"{"model":"m","n":1}"#).is_ok());
    }

    #[test]
    fn logit_bias_is_bounded() {
        let many: serde_json::Map<String, serde_json::Value> = (0..301).map(|i| (i.to_string(), 1.0.into())).collect();
        let body = serde_json::json!({ "model": "m", "logit_bias": many }).to_string();
        assert_eq!(gen(&body).unwrap_err().param, Some("logit_bias"));
    }

    #[test]
    fn logit_bias_minus_100_bans() {
        let r = gen(r#"{"model":"m","logit_bias":{"2":-100,"5":3.5}}"#).unwrap();
        assert_eq!(r.sampling.logit_bias, vec![(2, f32::NEG_INFINITY), (5, 3.5)]);
        assert!(gen(r#"{"model":"m","logit_bias":{"x":1}}"#).is_err());
        assert!(gen(r#"{"model":"m","logit_bias":{"1":101}}"#).is_err());
    }

    #[test]
    fn ranges_are_checked() {
        for bad in [
            r#"{"model":"m","temperature":-1}"#,
            r#"{"model":"m","temperature":3}"#,
            r#"{"model":"m","top_p":1.5}"#,
            r#"{"model":"m","presence_penalty":9}"#,
            r#"{"model":"m","repeat_penalty":0}"#,
        ] {
            assert_eq!(gen(bad).unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn seeds_fold_deterministically() {
        let a = gen(r#"{"model":"m","seed":42}"#).unwrap().sampling.seed;
        assert_eq!(a, gen(r#"{"model":"m","seed":42}"#).unwrap().sampling.seed);
        assert_ne!(a, gen(r#"{"model":"m","seed":43}"#).unwrap().sampling.seed);
        assert_ne!(gen(r#"{"model":"m","seed":-1}"#).unwrap().sampling.seed, Some(u32::MAX));
    }

    #[test]
    fn chat_content_parts_and_empty_messages() {
        let req: ChatRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#,
        )
        .unwrap();
        assert_eq!(chat_messages(&req.messages).unwrap()[0].content, "ab");
        let img: ChatRequest =
            serde_json::from_str(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#)
                .unwrap();
        assert!(chat_messages(&img.messages).is_err());
        assert!(chat_messages(&[]).is_err());
    }

    #[test]
    fn completion_prompt_forms() {
        assert_eq!(completion_prompt(&PromptIn::One("a".into())).unwrap(), "a");
        assert_eq!(completion_prompt(&PromptIn::Many(vec!["b".into()])).unwrap(), "b");
        assert!(completion_prompt(&PromptIn::Many(vec!["a".into(), "b".into()])).is_err());
    }
}
