//! Ollama's `/api/chat` and `/api/generate` requests read into OpenAI's chat or completion
//! body, which the router serves (and sends to peers) as it serves the OpenAI endpoints. Pure
//! functions; unknown fields (and options that size the server, such as `num_ctx` or
//! `num_gpu`) are ignored.

use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

use crate::http::error::ApiError;
use crate::http::job::translated::{schema_format, set};
use crate::http::openai::respond::Kind;

/// `options`: the sampling ones are taken, the rest ignored.
#[derive(Debug, Default, Deserialize)]
pub struct Options {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    /// Tokens to generate at most; -1 (and -2, "fill the context") mean no limit.
    pub num_predict: Option<i64>,
    pub stop: Option<Vec<String>>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<i32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    #[serde(default)]
    pub messages: Vec<Message>,
    pub tools: Option<Vec<Value>>,
    pub format: Option<Value>,
    #[serde(default)]
    pub options: Options,
    /// Ollama streams unless told not to.
    pub stream: Option<bool>,
    /// How long the model stays loaded once idle ([`keep_alive`]); `0` with no messages
    /// unloads it.
    pub keep_alive: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: String,
    pub images: Option<Vec<Value>>,
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The tool a `tool` message answers.
    pub tool_name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ToolCall {
    pub function: Function,
}

#[derive(Debug, Deserialize)]
pub struct Function {
    pub name: String,
    /// An object (Ollama's form) or JSON text.
    #[serde(default)]
    pub arguments: Value,
}

#[derive(Debug, Deserialize)]
pub struct GenerateRequest {
    pub model: String,
    #[serde(default)]
    pub prompt: String,
    pub system: Option<String>,
    /// The prompt goes to the model as it is, without the chat template.
    #[serde(default)]
    pub raw: bool,
    pub suffix: Option<String>,
    pub images: Option<Vec<Value>>,
    pub format: Option<Value>,
    #[serde(default)]
    pub options: Options,
    pub stream: Option<bool>,
    /// How long the model stays loaded once idle ([`keep_alive`]); `0` with an empty prompt
    /// unloads it.
    pub keep_alive: Option<Value>,
}

fn no_images(images: &Option<Vec<Value>>) -> Result<(), ApiError> {
    match images {
        Some(i) if !i.is_empty() => {
            Err(ApiError::bad_param("images", "images are not supported: this server has no vision models"))
        }
        _ => Ok(()),
    }
}

/// `format`: `"json"`, a JSON schema, or nothing.
fn response_format(format: &Option<Value>) -> Result<Option<Value>, ApiError> {
    match format {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(json!({ "type": "json_object" }))),
        Some(schema @ Value::Object(_)) => Ok(Some(schema_format(json!("format"), schema))),
        Some(_) => Err(ApiError::bad_param("format", r#"format must be "json" or a JSON schema object"#)),
    }
}

/// The OpenAI sampling fields of `options` and `format`, set on `body`.
fn sampling(body: &mut Value, o: &Options, format: &Option<Value>) -> Result<(), ApiError> {
    for (k, v) in [
        ("temperature", o.temperature),
        ("top_p", o.top_p),
        ("min_p", o.min_p),
        ("repeat_penalty", o.repeat_penalty),
        ("presence_penalty", o.presence_penalty),
        ("frequency_penalty", o.frequency_penalty),
    ] {
        set(body, k, v);
    }
    set(body, "top_k", o.top_k);
    set(body, "repeat_last_n", o.repeat_last_n);
    set(body, "seed", o.seed);
    match o.num_predict {
        Some(n) if n > 0 => body["max_tokens"] = json!(n),
        Some(-1) | Some(-2) | None => {}
        Some(n) => {
            return Err(ApiError::bad_param("options", format!("num_predict must be positive, -1 or -2, got {n}")))
        }
    }
    set(body, "stop", o.stop.as_ref());
    set(body, "response_format", response_format(format)?);
    Ok(())
}

/// The OpenAI chat body of an `/api/chat` request.
pub fn chat(req: &ChatRequest) -> Result<Value, ApiError> {
    if req.messages.is_empty() {
        return Err(ApiError::bad_param("messages", "messages must not be empty"));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        no_images(&m.images)?;
        let mut msg = json!({ "role": m.role, "content": m.content });
        if let Some(calls) = m.tool_calls.as_ref().filter(|c| !c.is_empty()) {
            let calls: Vec<Value> = calls
                .iter()
                .map(|c| {
                    let args = match &c.function.arguments {
                        Value::String(s) => s.clone(),
                        Value::Null => "{}".into(),
                        other => other.to_string(),
                    };
                    json!({ "id": "", "type": "function", "function": { "name": c.function.name, "arguments": args } })
                })
                .collect();
            msg["tool_calls"] = Value::Array(calls);
        }
        if let Some(name) = &m.tool_name {
            msg["name"] = json!(name);
        }
        messages.push(msg);
    }
    let mut body = json!({ "model": req.model, "messages": messages });
    // The official clients send `tools: []` when there are none.
    if let Some(t) = req.tools.as_ref().filter(|t| !t.is_empty()) {
        body["tools"] = json!(t);
    }
    sampling(&mut body, &req.options, &req.format)?;
    Ok(body)
}

/// The OpenAI body of an `/api/generate` request with a prompt: a chat of the system and the
/// prompt, or (`raw`) a completion of the prompt as it is.
pub fn generate(req: &GenerateRequest) -> Result<(Value, Kind), ApiError> {
    no_images(&req.images)?;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_param("suffix", "suffix (fill-in-the-middle) is not supported"));
    }
    let (mut body, kind) = if req.raw {
        (json!({ "model": req.model, "prompt": req.prompt }), Kind::Text)
    } else {
        let mut messages = Vec::new();
        if let Some(s) = req.system.as_ref().filter(|s| !s.is_empty()) {
            messages.push(json!({ "role": "system", "content": s }));
        }
        messages.push(json!({ "role": "user", "content": req.prompt }));
        (json!({ "model": req.model, "messages": messages }), Kind::Chat)
    };
    sampling(&mut body, &req.options, &req.format)?;
    Ok((body, kind))
}

/// What `keep_alive` asks: `None` for none (absent, or negative: "for ever", which is the
/// server's setting), else how long the model stays loaded once idle (zero: unload it). A
/// number is seconds; a string is a Go duration (`"5m"`, `"1h30m"`, `"250ms"`, `"-1"`) or a
/// number of seconds. Anything else is a 400.
pub fn keep_alive(v: &Option<Value>) -> Result<Option<Duration>, ApiError> {
    let bad = || ApiError {
        param: Some("keep_alive"),
        ..ApiError::bad_request("keep_alive must be a number of seconds or a duration such as \"5m\"")
    };
    let secs = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64().ok_or_else(bad)?,
        Some(Value::String(s)) => s.trim().parse::<f64>().ok().or_else(|| go_duration(s.trim())).ok_or_else(bad)?,
        Some(_) => return Err(bad()),
    };
    if !secs.is_finite() {
        return Err(bad());
    }
    // Ten years stands for "for ever" and keeps the arithmetic in range.
    Ok((secs >= 0.0).then(|| Duration::from_secs_f64(secs.abs().min(MAX_KEEP_ALIVE_SECS))))
}

const MAX_KEEP_ALIVE_SECS: f64 = 10.0 * 365.0 * 86_400.0;

/// Seconds in a Go duration string: an optional sign, then numbers each with a unit.
fn go_duration(s: &str) -> Option<f64> {
    let (sign, mut rest) = match s.strip_prefix('-') {
        Some(r) => (-1.0, r),
        None => (1.0, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest.is_empty() || rest.len() > 64 {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit] {
            "ns" => 1e-9,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit..];
    }
    Some(sign * total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_with_options_format_and_tool_turns() {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "w", "arguments": {"city": "Oslo"}}}]},
                {"role": "tool", "content": "rain", "tool_name": "w"},
            ],
            "format": "json",
            "options": {"temperature": 0, "num_predict": 12, "stop": ["x"], "seed": 3, "num_ctx": 4096},
            "keep_alive": "5m",
        }))
        .unwrap();
        let b = chat(&req).unwrap();
        assert_eq!(b["messages"][1]["tool_calls"][0]["function"]["arguments"], json!("{\"city\":\"Oslo\"}"));
        assert_eq!(b["messages"][2]["name"], json!("w"));
        assert_eq!(
            (b["max_tokens"].clone(), b["stop"].clone(), b["seed"].clone()),
            (json!(12), json!(["x"]), json!(3))
        );
        assert_eq!(b["temperature"], json!(0.0));
        assert_eq!(b["response_format"], json!({"type": "json_object"}));
        assert!(b.get("num_ctx").is_none());
    }

    #[test]
    fn generate_forms() {
        let g = |v: Value| generate(&serde_json::from_value(v).unwrap());
        let (b, kind) =
            g(json!({"model": "m", "prompt": "hi", "system": "s", "options": {"num_predict": -1}})).unwrap();
        assert_eq!(kind, Kind::Chat);
        assert_eq!(b["messages"], json!([{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]));
        assert!(b.get("max_tokens").is_none());
        let (b, kind) = g(json!({"model": "m", "prompt": "hi", "raw": true, "format": {"type": "object"}})).unwrap();
        assert_eq!((kind, b["prompt"].clone()), (Kind::Text, json!("hi")));
        assert_eq!(b["response_format"]["json_schema"]["schema"], json!({"type": "object"}));
        assert!(g(json!({"model": "m", "prompt": "x", "images": ["aGk="]})).is_err());
        assert!(g(json!({"model": "m", "prompt": "x", "format": "yaml"})).is_err());
        assert!(g(json!({"model": "m", "prompt": "x", "options": {"num_predict": 0}})).is_err());
        assert!(g(json!({"model": "m", "prompt": "x", "suffix": "y"})).is_err());
    }

    #[test]
    fn keep_alive_numbers_and_go_durations() {
        let k = |v: Value| keep_alive(&Some(v)).map_err(|e| e.message);
        let s = |n: f64| Ok(Some(Duration::from_secs_f64(n)));
        assert_eq!(k(json!(0)), s(0.0));
        assert_eq!(k(json!("0s")), s(0.0));
        assert_eq!(k(json!("0")), s(0.0));
        assert_eq!(k(json!(300)), s(300.0));
        assert_eq!(k(json!("5m")), s(300.0));
        assert_eq!(k(json!("1h30m")), s(5400.0));
        assert_eq!(k(json!("1.5s")), s(1.5));
        assert_eq!(k(json!("250ms")), s(0.25));
        assert_eq!(k(json!("90")), s(90.0));
        assert_eq!(k(json!(-1)), Ok(None), "for ever: the server's setting");
        assert_eq!(k(json!("-1m")), Ok(None));
        assert_eq!(k(json!(1e300)), s(MAX_KEEP_ALIVE_SECS), "bounded");
        assert_eq!(keep_alive(&None).map_err(|e| e.message), Ok(None));
        for bad in [json!("soon"), json!("5x"), json!("m"), json!(""), json!([1]), json!(true), json!("1e999")] {
            assert!(k(bad.clone()).is_err(), "{bad}");
        }
    }
}
