//! OpenAI request bodies and their translation into a worker [`GenerateRequest`]. Pure
//! functions: every validation rule is unit-tested here. Unknown fields are ignored.

use model_bucket_shared::protocol::{
    ChatMessage, Constraint, GenerateRequest, Prompt, RequestId, SamplingParams, ToolCall, MAX_TOP_LOGPROBS,
};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

use crate::http::error::ApiError;
use crate::http::job::limits;

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
    /// Chat: `true`/`false`; completions: how many alternatives per token.
    pub logprobs: Option<Logprobs>,
    pub top_logprobs: Option<i64>,
    pub response_format: Option<ResponseFormat>,
    /// A GBNF grammar the output must follow (llama-server's `grammar`).
    pub grammar: Option<String>,
    /// A JSON schema the output must follow (llama-server's `json_schema`).
    pub json_schema: Option<Value>,
    /// Whether a JSON constraint allows optional whitespace between tokens, as llama.cpp's
    /// grammars do; default false: compact JSON, every token spent on content.
    pub json_whitespace: Option<bool>,
    /// `false`: no speculation for this request (see the worker's n-gram speculation).
    pub speculative: Option<bool>,
    /// LoRA adapters for this request, as llama-server takes them (see [`crate::http::job::lora`]).
    pub lora: Option<Vec<crate::http::job::lora::LoraParam>>,
}

/// `logprobs`: a flag (chat) or a count (completions).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Logprobs {
    Flag(bool),
    Count(i64),
}

/// `response_format`.
#[derive(Debug, Deserialize)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    pub json_schema: Option<JsonSchemaFormat>,
    /// llama-server's shortcut: `{"type": "json_object", "schema": {...}}`.
    pub schema: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct JsonSchemaFormat {
    pub schema: Option<Value>,
    #[serde(default)]
    pub strict: Option<bool>,
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
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    /// Accepted; an unforced answer may hold several calls either way, a forced one holds one.
    pub parallel_tool_calls: Option<bool>,
    #[serde(flatten)]
    pub common: CommonParams,
}

#[derive(Debug, Deserialize)]
pub struct InMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    pub tool_calls: Option<Vec<InToolCall>>,
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
}

/// A call in an assistant message of the history.
#[derive(Debug, Deserialize)]
pub struct InToolCall {
    #[serde(default)]
    pub id: String,
    pub function: InFunction,
}

#[derive(Debug, Deserialize)]
pub struct InFunction {
    pub name: String,
    /// JSON text, as OpenAI sends it (an object is accepted too).
    #[serde(default)]
    pub arguments: Value,
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

/// `prompt`: a string, a list of strings, a token array or a list of token arrays.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptIn {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<i64>),
    ManyTokens(Vec<Vec<i64>>),
}

/// The most choices one request may ask for, prompts × `n`: each takes a slot of the worker
/// (or waits in its queue).
pub const MAX_CHOICES: usize = 64;
/// The most `n` (choices per prompt).
pub const MAX_N: i64 = 16;

/// At most this many stop strings, as in OpenAI's API.
const MAX_STOPS: usize = 16;
/// The most `logit_bias` entries, as in OpenAI's API: each is applied at every sampling step.
const MAX_LOGIT_BIAS: usize = 300;
/// The longest stop string, in bytes: every generated token is checked against each.
const MAX_STOP_BYTES: usize = 1024;

/// Checks the shared parameters and builds the sampling part of a worker request.
pub fn to_generate(id: RequestId, prompt: Prompt, c: &CommonParams) -> Result<GenerateRequest, ApiError> {
    choices_per_prompt(c)?;
    let max_tokens = match c.max_completion_tokens.or(c.max_tokens) {
        None => None,
        Some(m) if m >= 1 && m <= u32::MAX as i64 => Some(m as u32),
        Some(m) => return Err(ApiError::bad_param("max_tokens", format!("max_tokens must be at least 1, got {m}"))),
    };
    let d = SamplingParams::default();
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
        logit_bias.push((t, bias));
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
    let constraint = constraint(c)?;
    let logprobs = logprobs(c)?;
    let mut sampling = SamplingParams {
        temperature: c.temperature.unwrap_or(d.temperature),
        top_p: c.top_p.unwrap_or(d.top_p),
        top_k: c.top_k.unwrap_or(d.top_k).max(0),
        min_p: c.min_p.unwrap_or(d.min_p),
        seed,
        repeat_penalty: c.repeat_penalty.unwrap_or(d.repeat_penalty),
        repeat_last_n: c.repeat_last_n.unwrap_or(d.repeat_last_n).max(0),
        presence_penalty: c.presence_penalty.unwrap_or(0.0),
        frequency_penalty: c.frequency_penalty.unwrap_or(0.0),
        logit_bias,
    };
    sampling.check().map_err(|(param, message)| ApiError::bad_param(param, message))?;
    // -100 bans the token outright, as OpenAI documents.
    for (_, bias) in sampling.logit_bias.iter_mut().filter(|(_, b)| *b <= -100.0) {
        *bias = f32::NEG_INFINITY;
    }
    Ok(GenerateRequest {
        id,
        prompt,
        sampling,
        max_tokens,
        stop,
        stream: c.stream,
        cache_prompt: c.cache_prompt.unwrap_or(true),
        constraint,
        logprobs,
        tools: None,
        lora: Vec::new(),
        count_only: false,
        speculative: c.speculative.unwrap_or(true),
    })
}

/// `n`, checked: choices per prompt.
pub fn choices_per_prompt(c: &CommonParams) -> Result<usize, ApiError> {
    match c.n {
        None => Ok(1),
        Some(n) if (1..=MAX_N).contains(&n) => Ok(n as usize),
        Some(n) => Err(ApiError::bad_param("n", format!("n must be between 1 and {MAX_N}, got {n}"))),
    }
}

/// The constraint from `response_format`, `json_schema` or `grammar` (at most one of them).
fn constraint(c: &CommonParams) -> Result<Option<Constraint>, ApiError> {
    let from_format = match &c.response_format {
        None => None,
        Some(f) => match f.kind.as_str() {
            "text" => None,
            "json_object" => Some(schema_text(f.schema.as_ref().unwrap_or(&serde_json::json!({"type": "object"})))?),
            "json_schema" => {
                let s = f.json_schema.as_ref().and_then(|j| j.schema.as_ref()).ok_or_else(|| {
                    ApiError::bad_param("response_format", "response_format json_schema needs json_schema.schema")
                })?;
                Some(schema_text(s)?)
            }
            other => {
                return Err(ApiError::bad_param(
                    "response_format",
                    format!("response_format type must be text, json_object or json_schema, got {other:?}"),
                ))
            }
        },
    };
    let from_schema = c.json_schema.as_ref().map(schema_text).transpose()?;
    let given = [from_format.is_some(), from_schema.is_some(), c.grammar.is_some()];
    if given.iter().filter(|&&g| g).count() > 1 {
        return Err(ApiError::bad_request("give at most one of response_format, json_schema and grammar"));
    }
    if let Some(g) = &c.grammar {
        limits::grammar(g).map_err(|m| ApiError::bad_param("grammar", m))?;
    }
    let whitespace = c.json_whitespace.unwrap_or(false);
    let json = from_format.or(from_schema).map(|schema| Constraint::JsonSchema { schema, whitespace });
    Ok(json.or_else(|| c.grammar.clone().map(Constraint::Gbnf)))
}

/// A schema as JSON text, within [`limits`]; it must be an object (or `true`/`false`).
pub fn schema_text(s: &Value) -> Result<String, ApiError> {
    match s {
        Value::Object(_) | Value::Bool(_) => {
            limits::schema(s).map_err(|m| ApiError::bad_param("response_format", m))?;
            let t = s.to_string();
            limits::text(&t, "JSON schema").map_err(|m| ApiError::bad_param("response_format", m))?;
            Ok(t)
        }
        _ => Err(ApiError::bad_param("response_format", "a JSON schema must be a JSON object")),
    }
}

/// How many alternatives per token to report, when log-probabilities are asked for.
fn logprobs(c: &CommonParams) -> Result<Option<u8>, ApiError> {
    let range = |name: &'static str, n: i64| {
        if (0..=MAX_TOP_LOGPROBS as i64).contains(&n) {
            Ok(n as u8)
        } else {
            Err(ApiError::bad_param(name, format!("{name} must be between 0 and {MAX_TOP_LOGPROBS}, got {n}")))
        }
    };
    let top = c.top_logprobs.map(|n| range("top_logprobs", n)).transpose()?;
    match (&c.logprobs, top) {
        (Some(Logprobs::Flag(true)), top) => Ok(Some(top.unwrap_or(0))),
        (Some(Logprobs::Count(n)), None) => Ok(Some(range("logprobs", *n)?)),
        (Some(Logprobs::Count(_)), Some(_)) => {
            Err(ApiError::bad_param("top_logprobs", "give logprobs: true with top_logprobs, or a count alone"))
        }
        (_, Some(n)) if n > 0 => Err(ApiError::bad_param("top_logprobs", "top_logprobs needs logprobs: true")),
        _ => Ok(None),
    }
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
            let tool_calls = m
                .tool_calls
                .iter()
                .flatten()
                .map(|c| ToolCall {
                    id: c.id.clone(),
                    name: c.function.name.clone(),
                    arguments: match &c.function.arguments {
                        Value::String(s) => s.clone(),
                        Value::Null => "{}".into(),
                        other => other.to_string(),
                    },
                })
                .collect();
            Ok(ChatMessage {
                role: m.role.clone(),
                content,
                tool_calls,
                tool_call_id: m.tool_call_id.clone(),
                name: m.name.clone(),
            })
        })
        .collect()
}

/// The prompts of a completions request, in order.
pub fn completion_prompts(p: &PromptIn) -> Result<Vec<Prompt>, ApiError> {
    prompts(p, "prompt", MAX_CHOICES)
}

/// `p` as worker prompts, in order, for parameter `param`: at least one, at most `most`.
pub fn prompts(p: &PromptIn, param: &'static str, most: usize) -> Result<Vec<Prompt>, ApiError> {
    let tokens = |v: &[i64]| -> Result<Prompt, ApiError> {
        v.iter()
            .map(|&t| i32::try_from(t).ok().filter(|t| *t >= 0))
            .collect::<Option<Vec<i32>>>()
            .map(Prompt::Tokens)
            .ok_or_else(|| ApiError::bad_param(param, "token IDs must be non-negative integers"))
    };
    let prompts = match p {
        PromptIn::One(s) => vec![Prompt::Text(s.clone())],
        PromptIn::Many(v) => v.iter().map(|s| Prompt::Text(s.clone())).collect(),
        PromptIn::Tokens(v) => vec![tokens(v)?],
        PromptIn::ManyTokens(v) => v.iter().map(|t| tokens(t)).collect::<Result<_, _>>()?,
    };
    if prompts.is_empty() {
        return Err(ApiError::bad_param(param, format!("{param} must not be an empty list")));
    }
    if prompts.len() > most {
        return Err(ApiError::bad_param(param, format!("at most {most} {param}s, got {}", prompts.len())));
    }
    Ok(prompts)
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
    fn n_is_bounded() {
        for bad in [r#"{"model":"m","n":0}"#, r#"{"model":"m","n":17}"#, r#"{"model":"m","n":-1}"#] {
            let e = gen(bad).unwrap_err();
            assert_eq!((e.status.as_u16(), e.param), (400, Some("n")), "{bad}");
        }
        assert_eq!(choices_per_prompt(&common(r#"{"model":"m","n":3}"#)).unwrap(), 3);
        assert_eq!(choices_per_prompt(&common(r#"{"model":"m"}"#)).unwrap(), 1);
    }

    #[test]
    fn response_formats_become_schemas() {
        let c = |json: &str| gen(json).map(|r| r.constraint);
        assert_eq!(c(r#"{"model":"m","response_format":{"type":"text"}}"#).unwrap(), None);
        assert_eq!(
            c(r#"{"model":"m","response_format":{"type":"json_object"}}"#).unwrap(),
            Some(Constraint::JsonSchema { schema: r#"{"type":"object"}"#.into(), whitespace: false })
        );
        assert_eq!(
            c(r#"{"model":"m","response_format":{"type":"json_object"},"json_whitespace":true}"#).unwrap(),
            Some(Constraint::JsonSchema { schema: r#"{"type":"object"}"#.into(), whitespace: true })
        );
        let schema = r#"{"type":"object","properties":{"b":{"type":"integer"},"a":{"type":"string"}}}"#;
        let body = format!(
            r#"{{"model":"m","response_format":{{"type":"json_schema","json_schema":{{"name":"x","strict":true,"schema":{schema}}}}}}}"#
        );
        // The schema keeps its key order (it decides the order of the generated fields).
        assert_eq!(c(&body).unwrap(), Some(Constraint::JsonSchema { schema: schema.into(), whitespace: false }));
        assert_eq!(
            c(r#"{"model":"m","grammar":"root ::= \"yes\""}"#).unwrap(),
            Some(Constraint::Gbnf(r#"root ::= "yes""#.into()))
        );
        for bad in [
            r#"{"model":"m","response_format":{"type":"json_schema"}}"#,
            r#"{"model":"m","response_format":{"type":"json_schema","json_schema":{"schema":[1]}}}"#,
            r#"{"model":"m","response_format":{"type":"yaml"}}"#,
            r#"{"model":"m","response_format":{"type":"json_object"},"grammar":"root ::= \"a\""}"#,
        ] {
            assert_eq!(gen(bad).unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn logprobs_forms() {
        let l = |json: &str| gen(json).map(|r| r.logprobs);
        assert_eq!(l(r#"{"model":"m"}"#).unwrap(), None);
        assert_eq!(l(r#"{"model":"m","logprobs":false}"#).unwrap(), None);
        assert_eq!(l(r#"{"model":"m","logprobs":true}"#).unwrap(), Some(0));
        assert_eq!(l(r#"{"model":"m","logprobs":true,"top_logprobs":5}"#).unwrap(), Some(5));
        assert_eq!(l(r#"{"model":"m","logprobs":3}"#).unwrap(), Some(3));
        for bad in [
            r#"{"model":"m","logprobs":true,"top_logprobs":50}"#,
            r#"{"model":"m","logprobs":21}"#,
            r#"{"model":"m","top_logprobs":2}"#,
            r#"{"model":"m","logprobs":true,"top_logprobs":-1}"#,
        ] {
            assert_eq!(gen(bad).unwrap_err().status, 400, "{bad}");
        }
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
        let p = |json: &str| completion_prompts(&serde_json::from_str::<PromptIn>(json).unwrap());
        assert_eq!(p(r#""a""#).unwrap(), vec![Prompt::Text("a".into())]);
        assert_eq!(p(r#"["a","b"]"#).unwrap(), vec![Prompt::Text("a".into()), Prompt::Text("b".into())]);
        assert_eq!(p("[1,2]").unwrap(), vec![Prompt::Tokens(vec![1, 2])]);
        assert_eq!(p("[[1],[2,3]]").unwrap(), vec![Prompt::Tokens(vec![1]), Prompt::Tokens(vec![2, 3])]);
        assert!(p("[]").is_err());
        assert!(p("[-1]").is_err());
        assert!(p("[4294967296]").is_err());
        let many = serde_json::to_string(&vec!["x"; MAX_CHOICES + 1]).unwrap();
        assert!(p(&many).is_err());
    }

    #[test]
    fn history_tool_calls_are_read() {
        let req: ChatRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"},
                {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]},
                {"role":"tool","tool_call_id":"call_1","name":"f","content":"2"}]}"#,
        )
        .unwrap();
        let m = chat_messages(&req.messages).unwrap();
        assert_eq!(
            m[1].tool_calls,
            vec![ToolCall { id: "call_1".into(), name: "f".into(), arguments: r#"{"x":1}"#.into() }]
        );
        assert_eq!(m[2].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(m[2].content, "2");
    }
}
