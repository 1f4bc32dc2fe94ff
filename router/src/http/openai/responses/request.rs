//! OpenAI Responses requests read into a Chat Completions body, which the router serves (and
//! sends to peers) as it serves Chat Completions. Pure functions; unknown fields are ignored.
//!
//! - `input` (a string or items) becomes chat messages: `message` items by role (`developer`
//!   is `system`), `function_call` items the assistant's `tool_calls`, `function_call_output`
//!   items `tool` messages; `reasoning` items are dropped;
//! - `instructions` is the first message (it is not carried to a continued turn, as OpenAI
//!   documents);
//! - function `tools` and `tool_choice` become their chat forms, `text.format` becomes
//!   `response_format`, `max_output_tokens` becomes `max_tokens`.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::http::error::ApiError;
use crate::http::job::translated::{schema_format, set};

#[derive(Debug, Deserialize)]
pub struct ResponsesRequest {
    pub model: String,
    pub input: Option<Input>,
    pub instructions: Option<String>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub text: Option<TextConfig>,
    pub max_output_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// Not OpenAI's; taken as Chat Completions takes them.
    pub seed: Option<i64>,
    pub cache_prompt: Option<bool>,
    #[serde(default)]
    pub stream: bool,
    /// Keep the response (default true), so a later turn may continue it.
    pub store: Option<bool>,
    pub previous_response_id: Option<String>,
    pub metadata: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
}

/// `input`: a string, or items.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Items(Vec<Map<String, Value>>),
}

#[derive(Debug, Deserialize)]
pub struct TextConfig {
    pub format: Option<Value>,
}

fn bad(param: &'static str, m: impl Into<String>) -> ApiError {
    ApiError::bad_param(param, m)
}

fn str_of<'a>(item: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    item.get(key).and_then(Value::as_str)
}

/// The text of a message's content: a string or parts (`input_text`, `output_text`, `text`).
fn content_text(c: Option<&Value>, at: usize) -> Result<String, ApiError> {
    match c {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut s = String::new();
            for p in parts {
                let kind = p.get("type").and_then(Value::as_str).unwrap_or("");
                match (kind, p.get("text").and_then(Value::as_str)) {
                    ("input_text" | "output_text" | "text", Some(t)) => s.push_str(t),
                    ("input_image" | "input_file" | "input_audio", _) => {
                        return Err(bad(
                            "input",
                            format!("input[{at}]: {kind} parts are not supported (no vision or audio models)"),
                        ))
                    }
                    _ => {
                        return Err(bad(
                            "input",
                            format!("input[{at}]: content parts of type {kind:?} are not supported"),
                        ))
                    }
                }
            }
            Ok(s)
        }
        Some(_) => Err(bad("input", format!("input[{at}]: content must be a string or a list of parts"))),
    }
}

/// The chat messages of `input`, appended to `out`.
pub fn input_messages(input: &Input, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let items = match input {
        Input::Text(t) => {
            out.push(json!({ "role": "user", "content": t }));
            return Ok(());
        }
        Input::Items(items) => items,
    };
    for (i, item) in items.iter().enumerate() {
        let kind = str_of(item, "type").unwrap_or(if item.contains_key("role") { "message" } else { "" });
        match kind {
            "message" => {
                let role = match str_of(item, "role") {
                    Some("developer") | Some("system") => "system",
                    Some("user") => "user",
                    Some("assistant") => "assistant",
                    other => {
                        return Err(bad(
                            "input",
                            format!("input[{i}]: role must be user, assistant, system or developer, got {other:?}"),
                        ))
                    }
                };
                out.push(json!({ "role": role, "content": content_text(item.get("content"), i)? }));
            }
            "function_call" => {
                let name = str_of(item, "name")
                    .ok_or_else(|| bad("input", format!("input[{i}]: a function_call needs a name")))?;
                let call = json!({
                    "id": str_of(item, "call_id").unwrap_or(""),
                    "type": "function",
                    "function": { "name": name, "arguments": str_of(item, "arguments").unwrap_or("{}") },
                });
                // Calls made together belong to one assistant message.
                match out.last_mut() {
                    Some(last) if last["role"] == "assistant" => {
                        match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                            Some(calls) => calls.push(call),
                            None => last["tool_calls"] = json!([call]),
                        }
                    }
                    _ => out.push(json!({ "role": "assistant", "content": "", "tool_calls": [call] })),
                }
            }
            "function_call_output" => {
                let output = match item.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    other => content_text(other, i)?,
                };
                out.push(
                    json!({ "role": "tool", "tool_call_id": str_of(item, "call_id").unwrap_or(""), "content": output }),
                );
            }
            "reasoning" => {}
            other => return Err(bad("input", format!("input[{i}]: items of type {other:?} are not supported"))),
        }
    }
    Ok(())
}

/// Function tools in their chat form; other tool types are refused.
fn tools(tools: &[Value]) -> Result<Vec<Value>, ApiError> {
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            match t.get("type").and_then(Value::as_str) {
                Some("function") => {}
                other => {
                    return Err(bad("tools", format!("tools[{i}]: only function tools are supported, got {other:?}")))
                }
            }
            let mut f = json!({ "name": t.get("name").cloned().unwrap_or(Value::Null) });
            for key in ["description", "parameters"] {
                if let Some(v) = t.get(key).filter(|v| !v.is_null()) {
                    f[key] = v.clone();
                }
            }
            Ok(json!({ "type": "function", "function": f }))
        })
        .collect()
}

fn tool_choice(c: &Value) -> Result<Value, ApiError> {
    match c {
        Value::String(_) => Ok(c.clone()),
        Value::Object(o) => match (o.get("type").and_then(Value::as_str), o.get("name").and_then(Value::as_str)) {
            (Some("function"), Some(name)) => Ok(json!({ "type": "function", "function": { "name": name } })),
            _ => Err(bad(
                "tool_choice",
                r#"tool_choice must be "auto", "none", "required" or {"type": "function", "name": ...}"#,
            )),
        },
        _ => Err(bad("tool_choice", "tool_choice must be a string or an object")),
    }
}

fn response_format(f: &Value) -> Result<Option<Value>, ApiError> {
    match f.get("type").and_then(Value::as_str) {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({ "type": "json_object" }))),
        Some("json_schema") => {
            let schema = f.get("schema").ok_or_else(|| bad("text", "text.format json_schema needs a schema"))?;
            Ok(Some(schema_format(f.get("name").cloned().unwrap_or(json!("output")), schema)))
        }
        Some(other) => {
            Err(bad("text", format!("text.format type must be text, json_object or json_schema, got {other:?}")))
        }
    }
}

/// The Chat Completions body of `req`, continuing `history` (the messages of the response it
/// continues, without their instructions). Also returns the conversation so far without the
/// instructions: what a stored response keeps, before its answer.
pub fn to_chat(req: &ResponsesRequest, history: Vec<Value>) -> Result<(Value, Vec<Value>), ApiError> {
    let mut conversation = history;
    match &req.input {
        Some(input) => input_messages(input, &mut conversation)?,
        None => return Err(bad("input", "input is required")),
    }
    let mut messages = Vec::with_capacity(conversation.len() + 1);
    if let Some(i) = req.instructions.as_ref().filter(|i| !i.is_empty()) {
        messages.push(json!({ "role": "system", "content": i }));
    }
    messages.extend(conversation.iter().cloned());
    let mut body = json!({ "model": req.model, "messages": messages });
    set(&mut body, "max_tokens", req.max_output_tokens);
    set(&mut body, "temperature", req.temperature);
    set(&mut body, "top_p", req.top_p);
    set(&mut body, "seed", req.seed);
    set(&mut body, "cache_prompt", req.cache_prompt);
    if let Some(t) = req.tools.as_ref().filter(|t| !t.is_empty()) {
        body["tools"] = Value::Array(tools(t)?);
    }
    if let Some(c) = &req.tool_choice {
        body["tool_choice"] = tool_choice(c)?;
    }
    set(
        &mut body,
        "response_format",
        req.text.as_ref().and_then(|t| t.format.as_ref()).map(response_format).transpose()?.flatten(),
    );
    Ok((body, conversation))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(v: Value, history: Vec<Value>) -> Result<(Value, Vec<Value>), ApiError> {
        to_chat(&serde_json::from_value(v).unwrap(), history)
    }

    #[test]
    fn a_string_input_with_instructions() {
        let (b, conv) =
            chat(json!({"model": "m", "input": "hi", "instructions": "Be brief.", "max_output_tokens": 9}), vec![])
                .unwrap();
        assert_eq!(
            b["messages"],
            json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
        );
        assert_eq!(conv, vec![json!({"role": "user", "content": "hi"})]);
        assert_eq!(b["max_tokens"], 9);
    }

    #[test]
    fn items_calls_and_outputs_continue_a_history() {
        let history =
            vec![json!({"role": "user", "content": "earlier"}), json!({"role": "assistant", "content": "ok"})];
        let (b, conv) = chat(
            json!({"model": "m", "instructions": "I", "input": [
                {"role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{\"a\":1}"},
                {"type": "function_call_output", "call_id": "c1", "output": "one"},
                {"type": "reasoning", "summary": []},
            ]}),
            history,
        )
        .unwrap();
        let m = b["messages"].as_array().unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "I"}));
        assert_eq!(m[1]["content"], "earlier");
        assert_eq!(m[3], json!({"role": "system", "content": "rules"}));
        assert_eq!(m[4]["tool_calls"].as_array().unwrap().len(), 2);
        // A call after an assistant's text joins that message.
        let (b, _) = chat(
            json!({"model": "m", "input": [
                {"role": "assistant", "content": "Let me look."},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            ]}),
            vec![],
        )
        .unwrap();
        assert_eq!(b["messages"].as_array().unwrap().len(), 1);
        assert_eq!(b["messages"][0]["tool_calls"][0]["id"], "c1");
        assert_eq!(m[5], json!({"role": "tool", "tool_call_id": "c1", "content": "one"}));
        assert_eq!(conv.len(), 5, "the conversation has no instructions: {conv:?}");
    }

    #[test]
    fn tools_choice_and_format() {
        let (b, _) = chat(
            json!({"model": "m", "input": "x",
                "tools": [{"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}, "strict": true}],
                "tool_choice": {"type": "function", "name": "f"},
                "text": {"format": {"type": "json_schema", "name": "p", "schema": {"type": "object"}}}}),
            vec![],
        )
        .unwrap();
        assert_eq!(
            b["tools"][0],
            json!({"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}})
        );
        assert_eq!(b["tool_choice"], json!({"type": "function", "function": {"name": "f"}}));
        assert_eq!(b["response_format"]["json_schema"]["schema"], json!({"type": "object"}));
        for bad in [
            json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]}),
            json!({"model": "m"}),
            json!({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}),
            json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}),
        ] {
            assert!(chat(bad.clone(), vec![]).is_err(), "{bad}");
        }
    }
}
