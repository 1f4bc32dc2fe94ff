//! The generic tool prompt: how tools reach a model whose chat template does not render a
//! `tools` list (SmolLM2 and Gemma 3, for instance).
//!
//! The tools are described in a system message (joined to the conversation's own system
//! message when it has one), and the model is asked to answer a call with a bare JSON object
//! `{"name": ..., "arguments": {...}}`, the form the router's tool-call parser reads. Earlier
//! calls in the history are written in that same form, and tool results become user messages,
//! so templates that only know `system`, `user` and `assistant` render them.

use model_bucket_shared::protocol::ChatMessage;

/// A call's arguments as a JSON value: the parsed object when the text is JSON (templates print
/// them with `tojson`), else the text itself.
pub fn arguments(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_string()))
}

/// The conversation with the tools described in its system message.
pub fn rewrite(messages: &[ChatMessage], tools: &serde_json::Value) -> Vec<ChatMessage> {
    let intro = describe(tools);
    let mut out = Vec::with_capacity(messages.len() + 1);
    match messages.first() {
        Some(m) if m.role == "system" => {
            out.push(ChatMessage::new("system", format!("{}\n\n{intro}", m.content)));
        }
        _ => out.push(ChatMessage::new("system", intro)),
    }
    let rest = if messages.first().is_some_and(|m| m.role == "system") { &messages[1..] } else { messages };
    for m in rest {
        out.push(match m.role.as_str() {
            "assistant" if !m.tool_calls.is_empty() => {
                let calls: Vec<String> = m
                    .tool_calls
                    .iter()
                    .map(|c| serde_json::json!({ "name": c.name, "arguments": arguments(&c.arguments) }).to_string())
                    .collect();
                let calls = if calls.len() == 1 { calls[0].clone() } else { format!("[{}]", calls.join(", ")) };
                let text = if m.content.is_empty() { calls } else { format!("{}\n{calls}", m.content) };
                ChatMessage::new("assistant", text)
            }
            "tool" => {
                let name = m.name.as_deref().unwrap_or("the tool");
                ChatMessage::new("user", format!("Result of {name}:\n{}", m.content))
            }
            _ => ChatMessage::new(m.role.clone(), m.content.clone()),
        });
    }
    out
}

/// The system text that lists the tools and says how to call one.
fn describe(tools: &serde_json::Value) -> String {
    let mut s = String::from("You can call these tools. Each is a function with a JSON Schema for its arguments:\n");
    for t in tools.as_array().into_iter().flatten() {
        let f = t.get("function").unwrap_or(t);
        let entry = serde_json::json!({
            "name": f.get("name"),
            "description": f.get("description"),
            "parameters": f.get("parameters"),
        });
        s.push_str(&entry.to_string());
        s.push('\n');
    }
    s.push_str(
        "To call a tool, reply with only a JSON object and nothing else: \
         {\"name\": \"<tool name>\", \"arguments\": {<the arguments>}}. \
         To call several, reply with a JSON array of such objects. Otherwise, answer normally.",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use model_bucket_shared::protocol::ToolCall;

    fn tools() -> serde_json::Value {
        serde_json::json!([{ "type": "function", "function": {
            "name": "get_weather", "description": "Weather in a city",
            "parameters": { "type": "object", "properties": { "city": { "type": "string" } } } } }])
    }

    #[test]
    fn tools_join_the_system_message() {
        let msgs = vec![ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Weather in Paris?")];
        let out = rewrite(&msgs, &tools());
        assert_eq!(out.len(), 2);
        assert!(out[0].content.starts_with("Be brief.\n\nYou can call these tools"));
        assert!(out[0].content.contains(r#""name":"get_weather""#));
        assert_eq!(out[1].content, "Weather in Paris?");
        let no_system = rewrite(&msgs[1..], &tools());
        assert_eq!(no_system[0].role, "system");
        assert_eq!(no_system.len(), 2);
    }

    #[test]
    fn calls_and_results_become_plain_turns() {
        let msgs = vec![
            ChatMessage::new("user", "Weather in Paris?"),
            ChatMessage {
                role: "assistant".into(),
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Paris"}"#.into(),
                }],
                ..Default::default()
            },
            ChatMessage {
                role: "tool".into(),
                content: "18C".into(),
                tool_call_id: Some("call_1".into()),
                name: Some("get_weather".into()),
                ..Default::default()
            },
        ];
        let out = rewrite(&msgs, &tools());
        assert_eq!(out[2].role, "assistant");
        assert_eq!(out[2].content, r#"{"name":"get_weather","arguments":{"city":"Paris"}}"#);
        assert_eq!(out[3].role, "user");
        assert_eq!(out[3].content, "Result of get_weather:\n18C");
    }
}
