//! Anthropic Messages requests read into OpenAI's chat body, which the router serves (and sends
//! to peers) as it serves Chat Completions. Pure functions; unknown fields are ignored.
//!
//! - `system` (a string or text blocks) becomes the first message;
//! - text blocks join into a message's content; `tool_use` blocks become the assistant's
//!   `tool_calls`; each `tool_result` block becomes a `tool` message, ahead of the text of the
//!   user message that carried it;
//! - `tools` become function tools, `tool_choice` `auto`/`any`/`tool`/`none` become
//!   `auto`/`required`/a named function/`none`;
//! - `stop_sequences` become `stop`; sampling fields keep their names (today's SDKs send them
//!   as extra body fields);
//! - `output_config.format` (`json_schema`) becomes `response_format`.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::http::error::ApiError;
use crate::http::job::translated::{schema_format, set};

#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    pub messages: Vec<InMessage>,
    pub system: Option<Content>,
    /// Required by `/v1/messages`, not by `count_tokens`.
    pub max_tokens: Option<i64>,
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    pub stream: bool,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    /// Not Anthropic's; taken as the OpenAI endpoints take them: for repeatable answers, and
    /// to prefill the whole prompt (llama-server takes `cache_prompt` on every endpoint).
    pub seed: Option<i64>,
    pub cache_prompt: Option<bool>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub output_config: Option<OutputConfig>,
}

#[derive(Debug, Deserialize)]
pub struct OutputConfig {
    pub format: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct InMessage {
    pub role: String,
    pub content: Content,
}

/// A string, or content blocks (objects with a `type`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Blocks(Vec<Map<String, Value>>),
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::bad_request(m)
}

fn block_type(b: &Map<String, Value>) -> &str {
    b.get("type").and_then(Value::as_str).unwrap_or("")
}

/// The text of text blocks (a `tool_result`'s content too), joined; other blocks are refused.
fn text_of(c: &Content, what: &str) -> Result<String, ApiError> {
    match c {
        Content::Text(t) => Ok(t.clone()),
        Content::Blocks(blocks) => {
            let mut s = String::new();
            for b in blocks {
                match (block_type(b), b.get("text").and_then(Value::as_str)) {
                    ("text", Some(t)) => s.push_str(t),
                    (kind, _) => {
                        return Err(bad(format!("{what}: content blocks of type {kind:?} are not supported here")))
                    }
                }
            }
            Ok(s)
        }
    }
}

/// The OpenAI chat messages of a request.
fn messages(req: &MessagesRequest) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::with_capacity(req.messages.len() + 1);
    if let Some(system) = &req.system {
        out.push(json!({ "role": "system", "content": text_of(system, "system")? }));
    }
    if req.messages.is_empty() {
        return Err(bad("messages: at least one message is required"));
    }
    for (i, m) in req.messages.iter().enumerate() {
        if m.role != "user" && m.role != "assistant" {
            return Err(bad(format!("messages[{i}].role must be user or assistant, got {:?}", m.role)));
        }
        let blocks = match &m.content {
            Content::Text(t) => {
                out.push(json!({ "role": m.role, "content": t }));
                continue;
            }
            Content::Blocks(b) => b,
        };
        let mut text = String::new();
        let mut calls = Vec::new();
        for b in blocks {
            match block_type(b) {
                "text" => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
                // Reasoning the client sends back is not shown to the model again.
                "thinking" | "redacted_thinking" => {}
                "tool_use" if m.role == "assistant" => {
                    let id = b.get("id").and_then(Value::as_str).unwrap_or("");
                    let name = b
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad(format!("messages[{i}]: a tool_use block needs a name")))?;
                    let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                    calls.push(json!({
                        "id": id, "type": "function",
                        "function": { "name": name, "arguments": input.to_string() },
                    }));
                }
                "tool_result" if m.role == "user" => {
                    let id = b.get("tool_use_id").and_then(Value::as_str).unwrap_or("");
                    let content = match b.get("content") {
                        None | Some(Value::Null) => String::new(),
                        Some(c) => {
                            let c: Content = serde_json::from_value(c.clone())
                                .map_err(|e| bad(format!("messages[{i}]: tool_result content: {e}")))?;
                            text_of(&c, "tool_result")?
                        }
                    };
                    let failed = b.get("is_error").and_then(Value::as_bool).unwrap_or(false);
                    let content = if failed { format!("Error: {content}") } else { content };
                    out.push(json!({ "role": "tool", "tool_call_id": id, "content": content }));
                }
                "image" | "document" => {
                    return Err(bad(format!(
                        "messages[{i}]: {} blocks are not supported (this server has no vision models)",
                        block_type(b)
                    )))
                }
                other => {
                    return Err(bad(format!(
                        "messages[{i}]: content blocks of type {other:?} are not supported in a {} message",
                        m.role
                    )))
                }
            }
        }
        if m.role == "assistant" {
            let mut msg = json!({ "role": "assistant", "content": text });
            if !calls.is_empty() {
                msg["tool_calls"] = Value::Array(calls);
            }
            out.push(msg);
        } else if !text.is_empty() || blocks.iter().all(|b| block_type(b) != "tool_result") {
            out.push(json!({ "role": "user", "content": text }));
        }
    }
    Ok(out)
}

/// Anthropic tools as OpenAI function tools; server tools (with another `type`) are refused.
fn tools(tools: &[Value]) -> Result<Vec<Value>, ApiError> {
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            match t.get("type").and_then(Value::as_str) {
                None | Some("custom") => {}
                Some(other) => return Err(bad(format!("tools[{i}]: tools of type {other:?} are not supported"))),
            }
            let name = t.get("name").cloned().unwrap_or(Value::Null);
            let mut f = json!({ "name": name, "parameters": t.get("input_schema").cloned().unwrap_or(Value::Null) });
            if let Some(d) = t.get("description") {
                f["description"] = d.clone();
            }
            Ok(json!({ "type": "function", "function": f }))
        })
        .collect()
}

fn tool_choice(c: &Value) -> Result<Value, ApiError> {
    match c.get("type").and_then(Value::as_str) {
        Some("auto") => Ok(json!("auto")),
        Some("any") => Ok(json!("required")),
        Some("none") => Ok(json!("none")),
        Some("tool") => {
            let name =
                c.get("name").and_then(Value::as_str).ok_or_else(|| bad("tool_choice of type tool needs a name"))?;
            Ok(json!({ "type": "function", "function": { "name": name } }))
        }
        other => Err(bad(format!("tool_choice.type must be auto, any, tool or none, got {other:?}"))),
    }
}

/// The OpenAI chat body of `req`. `needs_max_tokens`: `/v1/messages` requires `max_tokens`,
/// `count_tokens` does not take it.
pub fn to_openai(req: &MessagesRequest, needs_max_tokens: bool) -> Result<Value, ApiError> {
    let mut body = json!({ "model": req.model, "messages": messages(req)? });
    match req.max_tokens {
        Some(m) => body["max_tokens"] = json!(m),
        None if needs_max_tokens => return Err(bad("max_tokens: this field is required")),
        None => {}
    }
    set(&mut body, "stop", req.stop_sequences.as_ref());
    set(&mut body, "temperature", req.temperature);
    set(&mut body, "top_p", req.top_p);
    set(&mut body, "top_k", req.top_k);
    set(&mut body, "seed", req.seed);
    set(&mut body, "cache_prompt", req.cache_prompt);
    // `tool_choice: none` with tools still renders them (the model may see them), as Anthropic
    // does; the plan then reads no calls.
    if let Some(t) = req.tools.as_ref().filter(|t| !t.is_empty()) {
        body["tools"] = Value::Array(tools(t)?);
    }
    if let Some(c) = &req.tool_choice {
        body["tool_choice"] = tool_choice(c)?;
    }
    if let Some(f) = req.output_config.as_ref().and_then(|o| o.format.as_ref()).filter(|f| !f.is_null()) {
        match (f.get("type").and_then(Value::as_str), f.get("schema")) {
            (Some("json_schema"), Some(schema)) => body["response_format"] = schema_format(json!("output"), schema),
            _ => return Err(bad("output_config.format must be {\"type\": \"json_schema\", \"schema\": {...}}")),
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openai(v: Value) -> Result<Value, ApiError> {
        to_openai(&serde_json::from_value(v).unwrap(), true)
    }

    #[test]
    fn system_text_and_sampling() {
        let b = openai(json!({
            "model": "m", "max_tokens": 9, "system": [{"type": "text", "text": "Be brief."}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
            "stop_sequences": ["END"], "temperature": 0.5, "top_k": 3, "metadata": {"user_id": "x"},
        }))
        .unwrap();
        assert_eq!(
            b["messages"],
            json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "ab"}])
        );
        assert_eq!(
            (b["max_tokens"].clone(), b["stop"].clone(), b["top_k"].clone()),
            (json!(9), json!(["END"]), json!(3))
        );
        assert_eq!(b["temperature"], json!(0.5));
    }

    #[test]
    fn tool_turns_become_calls_and_tool_messages() {
        let b = openai(json!({
            "model": "m", "max_tokens": 9,
            "tools": [{"name": "weather", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"},
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [{"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "rain"}]}, {"type": "text", "text": "and now?"}]},
            ],
        }))
        .unwrap();
        let m = b["messages"].as_array().unwrap();
        assert_eq!(m[1]["tool_calls"][0]["function"], json!({"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}));
        assert_eq!(m[2], json!({"role": "tool", "tool_call_id": "toolu_1", "content": "rain"}));
        assert_eq!(m[3], json!({"role": "user", "content": "and now?"}));
        assert_eq!(b["tool_choice"], json!("required"));
        assert_eq!(b["tools"][0]["function"]["parameters"], json!({"type": "object"}));
        let named = openai(json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "f", "input_schema": {}}], "tool_choice": {"type": "tool", "name": "f"}}))
        .unwrap();
        assert_eq!(named["tool_choice"], json!({"type": "function", "function": {"name": "f"}}));
    }

    #[test]
    fn output_format_becomes_a_schema() {
        let b = openai(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
            "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}))
        .unwrap();
        assert_eq!(b["response_format"]["json_schema"]["schema"], json!({"type": "object"}));
        assert!(openai(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
            "output_config": {"format": {"type": "yaml"}}}))
        .is_err());
    }

    #[test]
    fn refusals() {
        let user =
            |content: Value| json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": content}]});
        assert!(openai(user(json!([{"type": "image", "source": {}}]))).is_err());
        assert!(openai(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})).is_err());
        assert!(openai(json!({"model": "m", "max_tokens": 5, "messages": []})).is_err());
        assert!(
            openai(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]})).is_err()
        );
        let server_tool = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}]});
        assert!(openai(server_tool).is_err());
        assert!(to_openai(
            &serde_json::from_value(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})).unwrap(),
            false
        )
        .is_ok());
    }
}
