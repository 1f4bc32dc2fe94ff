//! Tool calling: the `tools` and `tool_choice` of a chat request, the grammar that forces a
//! call, and the calls found in a model's answer. Pure functions.
//!
//! The answer is read for the tool-call forms of the recommended model families:
//! - Qwen / Hermes: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one block per call;
//! - Mistral: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]` and
//!   `[TOOL_CALLS]name[ARGS]{...}`;
//! - Llama 3.x: `{"name": ..., "parameters": {...}}`, optionally after `<|python_tag|>`;
//! - generic (what the worker's generic tool prompt and the forcing grammar ask for): a bare
//!   `{"name": ..., "arguments": {...}}`, an array of them, or `{"tool_calls": [...]}`,
//!   optionally inside a Markdown code fence.
//!
//! A call only counts when it names an offered tool: an answer that happens to be JSON with a
//! `name` field stays text.

use serde_json::{json, Map, Value};

use crate::http::error::ApiError;

/// At most this many tools per request (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;
/// The tools list as JSON, in bytes at most: it is rendered into every choice's prompt.
pub const MAX_TOOLS_BYTES: usize = 64 * 1024;

/// What a request's `tools` and `tool_choice` ask of generation.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolPlan {
    /// The tools list to render into the prompt (none when `tool_choice` is `none`).
    pub tools: Vec<Value>,
    /// The names offered, for reading the answer.
    pub names: Vec<String>,
    /// A JSON schema that forces a call (`required`, or a named function).
    pub force: Option<Value>,
}

/// Checks `tools` and `tool_choice` and decides how to serve them. `None`: no tools.
pub fn plan(tools: Option<&Vec<Value>>, choice: Option<&Value>) -> Result<Option<ToolPlan>, ApiError> {
    let tools = match tools {
        None => {
            return match choice {
                None => Ok(None),
                Some(Value::String(s)) if s == "none" || s == "auto" => Ok(None),
                Some(_) => Err(ApiError::bad_param("tool_choice", "tool_choice needs tools")),
            };
        }
        Some(t) => t,
    };
    if tools.is_empty() {
        return Err(ApiError::bad_param("tools", "tools must not be empty; leave it out instead"));
    }
    if tools.len() > MAX_TOOLS {
        return Err(ApiError::bad_param("tools", format!("at most {MAX_TOOLS} tools, got {}", tools.len())));
    }
    let mut names = Vec::with_capacity(tools.len());
    let mut params = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        let (name, p) = check_tool(i, t)?;
        if names.contains(&name) {
            return Err(ApiError::bad_param("tools", format!("tools[{i}]: the name {name:?} is used twice")));
        }
        names.push(name);
        params.push(p);
    }
    let call = |name: &str, p: &Value| {
        json!({
            "type": "object",
            "properties": { "name": { "const": name }, "arguments": p },
            "required": ["name", "arguments"],
        })
    };
    let force = match choice {
        None => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => None,
            "none" => return Ok(None),
            "required" => Some(if names.len() == 1 {
                call(&names[0], &params[0])
            } else {
                json!({ "anyOf": names.iter().zip(&params).map(|(n, p)| call(n, p)).collect::<Vec<_>>() })
            }),
            other => {
                return Err(ApiError::bad_param(
                    "tool_choice",
                    format!("tool_choice must be none, auto, required or a function, got {other:?}"),
                ))
            }
        },
        Some(v) => {
            let name = v.pointer("/function/name").and_then(Value::as_str).ok_or_else(|| {
                ApiError::bad_param(
                    "tool_choice",
                    r#"tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}"#,
                )
            })?;
            let i = names.iter().position(|n| n == name).ok_or_else(|| {
                ApiError::bad_param("tool_choice", format!("tool_choice names {name:?}, which is not among the tools"))
            })?;
            Some(call(name, &params[i]))
        }
    };
    Ok(Some(ToolPlan { tools: tools.clone(), names, force }))
}

/// A tool's name and argument schema, or why it is not a valid tool.
fn check_tool(i: usize, t: &Value) -> Result<(String, Value), ApiError> {
    let bad = |m: String| ApiError::bad_param("tools", format!("tools[{i}]: {m}"));
    match t.get("type").and_then(Value::as_str) {
        Some("function") => {}
        other => return Err(bad(format!("type must be \"function\", got {other:?}"))),
    }
    let f = t.get("function").filter(|f| f.is_object()).ok_or_else(|| bad("function must be an object".into()))?;
    let name = f.get("name").and_then(Value::as_str).ok_or_else(|| bad("function.name is required".into()))?;
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if !valid {
        return Err(bad(format!("function.name must be 1 to 64 letters, digits, _, - or ., got {name:?}")));
    }
    let params = match f.get("parameters") {
        None | Some(Value::Null) => json!({ "type": "object" }),
        Some(p) if p.is_object() => p.clone(),
        Some(_) => return Err(bad("function.parameters must be a JSON Schema object".into())),
    };
    Ok((name.to_string(), params))
}

/// One call read from an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: String,
    /// JSON text.
    pub arguments: String,
}

/// The calls in `text` naming one of `names`, and the text around them. No calls: the text is
/// returned whole.
pub fn parse(text: &str, names: &[String]) -> (String, Vec<Call>) {
    let known = |c: &Call| names.contains(&c.name);
    // Qwen / Hermes blocks.
    if text.contains("<tool_call>") {
        let mut content = String::new();
        let mut calls = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("<tool_call>") {
            content.push_str(&rest[..start]);
            let body = &rest[start + "<tool_call>".len()..];
            let (inner, after) = match body.find("</tool_call>") {
                Some(end) => (&body[..end], &body[end + "</tool_call>".len()..]),
                None => (body, ""),
            };
            calls.extend(json_calls(inner.trim()));
            rest = after;
        }
        content.push_str(rest);
        if !calls.is_empty() && calls.iter().all(known) {
            return (content.trim().to_string(), calls);
        }
        return (text.to_string(), vec![]);
    }
    // Mistral.
    if let Some(at) = text.find("[TOOL_CALLS]") {
        let body = text[at + "[TOOL_CALLS]".len()..].trim();
        let mut calls = json_calls(body);
        if calls.is_empty() {
            calls = mistral_args_calls(body);
        }
        if !calls.is_empty() && calls.iter().all(known) {
            return (text[..at].trim().to_string(), calls);
        }
        return (text.to_string(), vec![]);
    }
    // Llama 3.x and the generic forms: the whole answer is the call(s).
    let body = text.trim();
    let body = body.strip_prefix("<|python_tag|>").unwrap_or(body).trim();
    let body = strip_fence(body);
    let calls = json_calls(body);
    if !calls.is_empty() && calls.iter().all(known) {
        return (String::new(), calls);
    }
    (text.to_string(), vec![])
}

/// `name[ARGS]{...}` pairs, one after another.
fn mistral_args_calls(body: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find("[ARGS]") {
        let name = rest[..i].trim().trim_start_matches("[TOOL_CALLS]").trim();
        let after = &rest[i + "[ARGS]".len()..];
        let mut stream = serde_json::Deserializer::from_str(after).into_iter::<Value>();
        let Some(Ok(args)) = stream.next() else { return vec![] };
        calls.push(Call { name: name.to_string(), arguments: args.to_string() });
        rest = &after[stream.byte_offset()..];
    }
    calls
}

/// A code fence's content (```json ... ```), or `s` itself.
fn strip_fence(s: &str) -> &str {
    let Some(inner) = s.strip_prefix("```") else { return s };
    let inner = inner.strip_prefix("json").unwrap_or(inner);
    inner.strip_suffix("```").unwrap_or(inner).trim()
}

/// Calls in one JSON text: an object with `name` and `arguments`/`parameters`, an array of
/// them, or an object wrapping them in `tool_calls` / `tool_call` / `function`.
fn json_calls(s: &str) -> Vec<Call> {
    let Ok(v) = serde_json::from_str::<Value>(s) else { return vec![] };
    calls_in(&v)
}

fn calls_in(v: &Value) -> Vec<Call> {
    match v {
        Value::Array(items) => {
            let calls: Vec<Call> = items.iter().filter_map(one_call).collect();
            if calls.len() == items.len() {
                calls
            } else {
                vec![]
            }
        }
        Value::Object(o) => {
            if let Some(inner) = o.get("tool_calls").or_else(|| o.get("tool_call")) {
                return calls_in(inner);
            }
            one_call(v).into_iter().collect()
        }
        _ => vec![],
    }
}

fn one_call(v: &Value) -> Option<Call> {
    let o: &Map<String, Value> = v.as_object()?;
    // OpenAI's own shape, as a model may echo it.
    if let Some(f) = o.get("function").filter(|f| f.is_object()) {
        return one_call(f);
    }
    let name = o.get("name")?.as_str()?;
    let args = o.get("arguments").or_else(|| o.get("parameters")).cloned().unwrap_or_else(|| json!({}));
    let arguments = match args {
        // Already JSON text (OpenAI's form); kept when it parses.
        Value::String(s) if serde_json::from_str::<Value>(&s).is_ok() => s,
        Value::Object(_) => args.to_string(),
        _ => return None,
    };
    Some(Call { name: name.to_string(), arguments })
}

/// Splits a streamed answer into text that can be shown at once and text held back because it
/// may be the start of a tool call. The held text is read with [`parse`] at the end.
#[derive(Debug, Default)]
pub struct StreamSplit {
    held: String,
    /// Something other than whitespace was shown: a bare JSON call can no longer start.
    shown: bool,
    /// A call marker or a JSON start was seen: everything from there on is held.
    holding: bool,
}

/// Markers after which the rest of an answer is a call.
const MARKERS: &[&str] = &["<tool_call>", "[TOOL_CALLS]", "<|python_tag|>"];

impl StreamSplit {
    /// Takes the next piece of the answer; returns what can be shown now.
    pub fn push(&mut self, piece: &str) -> String {
        self.held.push_str(piece);
        if self.holding {
            return String::new();
        }
        if !self.shown {
            let t = self.held.trim_start();
            if t.is_empty() {
                return String::new();
            }
            if t.starts_with('{') || t.starts_with('[') || t.starts_with("```") || "```".starts_with(t) {
                self.holding = true;
                return String::new();
            }
        }
        // Hold from the first marker, or from a tail that could still become one.
        if let Some(at) = MARKERS.iter().filter_map(|m| self.held.find(m)).min() {
            self.holding = true;
            let shown: String = self.held.drain(..at).collect();
            self.shown |= !shown.trim().is_empty();
            return shown;
        }
        let keep = partial_marker_len(&self.held);
        let cut = self.held.len() - keep;
        let shown: String = self.held.drain(..cut).collect();
        self.shown |= !shown.trim().is_empty();
        shown
    }

    /// The held text, at the end of the answer.
    pub fn finish(self) -> String {
        self.held
    }
}

/// The length of the longest suffix of `s` that is a proper prefix of a marker.
fn partial_marker_len(s: &str) -> usize {
    let mut best = 0;
    for m in MARKERS {
        for k in (1..m.len()).rev() {
            if k > best && s.ends_with(&m[..k]) {
                best = k;
                break;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests;
