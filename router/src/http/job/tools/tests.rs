use super::*;

fn weather() -> Value {
    json!({ "type": "function", "function": {
        "name": "get_weather",
        "parameters": { "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] } } })
}

fn names() -> Vec<String> {
    vec!["get_weather".into(), "search".into()]
}

fn call(name: &str, args: &str) -> Call {
    Call { name: name.into(), arguments: args.into() }
}

#[test]
fn no_tools_no_plan() {
    assert_eq!(plan(None, None).unwrap(), None);
    assert_eq!(plan(None, Some(&json!("auto"))).unwrap(), None);
    assert!(plan(None, Some(&json!("required"))).is_err());
}

#[test]
fn choices() {
    let tools = vec![weather()];
    let auto = plan(Some(&tools), None).unwrap().unwrap();
    assert_eq!(auto.names, vec!["get_weather"]);
    assert_eq!(auto.force, None);
    assert_eq!(plan(Some(&tools), Some(&json!("none"))).unwrap(), None);
    let req = plan(Some(&tools), Some(&json!("required"))).unwrap().unwrap();
    let f = req.force.unwrap();
    assert_eq!(f["properties"]["name"]["const"], "get_weather");
    assert_eq!(f["properties"]["arguments"]["required"], json!(["city"]));
    let named =
        plan(Some(&tools), Some(&json!({"type": "function", "function": {"name": "get_weather"}}))).unwrap().unwrap();
    assert!(named.force.is_some());
    let two = vec![weather(), json!({"type": "function", "function": {"name": "search"}})];
    let any = plan(Some(&two), Some(&json!("required"))).unwrap().unwrap().force.unwrap();
    assert_eq!(any["anyOf"].as_array().unwrap().len(), 2);
    assert_eq!(any["anyOf"][1]["properties"]["arguments"], json!({"type": "object"}));
}

#[test]
fn bad_tools_are_400s_naming_the_problem() {
    let cases = [
        (vec![json!({"type": "function", "function": {}})], None, "name"),
        (vec![json!({"type": "function", "function": {"name": ""}})], None, "name"),
        (vec![json!({"type": "function", "function": {"name": "a b"}})], None, "name"),
        (vec![json!({"type": "retrieval"})], None, "type"),
        (vec![json!({"type": "function", "function": {"name": "f", "parameters": 3}})], None, "parameters"),
        (vec![weather(), weather()], None, "twice"),
        (vec![], None, "empty"),
        (vec![weather()], Some(json!("sometimes")), "tool_choice"),
        (vec![weather()], Some(json!({"type": "function", "function": {"name": "nope"}})), "nope"),
    ];
    for (tools, choice, word) in cases {
        let e = plan(Some(&tools), choice.as_ref()).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains(word), "{word}: {}", e.message);
    }
    let many: Vec<Value> =
        (0..129).map(|i| json!({"type": "function", "function": {"name": format!("f{i}")}})).collect();
    assert!(plan(Some(&many), None).is_err());
}

#[test]
fn hermes_blocks() {
    let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>{\"name\": \"search\", \"arguments\": {\"q\": \"x\"}}</tool_call>";
    let (content, calls) = parse(text, &names());
    assert_eq!(content, "Let me check.");
    assert_eq!(calls, vec![call("get_weather", r#"{"city":"Paris"}"#), call("search", r#"{"q":"x"}"#)]);
    // An unclosed block at the end (max_tokens, or a stop) still counts when its JSON is whole.
    let (_, calls) = parse("<tool_call>{\"name\": \"search\", \"arguments\": {}}", &names());
    assert_eq!(calls, vec![call("search", "{}")]);
}

#[test]
fn mistral_forms() {
    let (c, calls) = parse("[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}]", &names());
    assert_eq!(c, "");
    assert_eq!(calls, vec![call("get_weather", r#"{"city":"Oslo"}"#)]);
    let (_, calls) = parse("[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Oslo\"}[TOOL_CALLS]search[ARGS]{}", &names());
    assert_eq!(calls, vec![call("get_weather", r#"{"city":"Oslo"}"#), call("search", "{}")]);
}

#[test]
fn llama3_and_generic_forms() {
    let (_, calls) = parse("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\"}}", &names());
    assert_eq!(calls, vec![call("get_weather", r#"{"city":"Rome"}"#)]);
    let (_, calls) = parse("<|python_tag|>{\"name\": \"search\", \"parameters\": {}}", &names());
    assert_eq!(calls, vec![call("search", "{}")]);
    let (_, calls) = parse("```json\n[{\"name\": \"search\", \"arguments\": \"{\\\"q\\\": 1}\"}]\n```", &names());
    assert_eq!(calls, vec![call("search", r#"{"q": 1}"#)]);
    let (_, calls) = parse(r#"{"tool_calls": [{"function": {"name": "search", "arguments": "{}"}}]}"#, &names());
    assert_eq!(calls, vec![call("search", "{}")]);
    // Keys keep the order the model wrote them in.
    let (_, calls) = parse(r#"{"name": "search", "arguments": {"b": 1, "a": 2}}"#, &names());
    assert_eq!(calls[0].arguments, r#"{"b":1,"a":2}"#);
}

#[test]
fn text_stays_text() {
    for text in [
        "Paris is sunny.",
        r#"{"name": "Alice", "age": 3}"#,
        r#"{"name": "unknown_tool", "arguments": {}}"#,
        "<tool_call>not json</tool_call>",
        "[1, 2, 3]",
        "",
    ] {
        let (content, calls) = parse(text, &names());
        assert!(calls.is_empty(), "{text}");
        assert_eq!(content, text);
    }
}

fn split_all(pieces: &[&str]) -> (String, String) {
    let mut s = StreamSplit::default();
    let shown: String = pieces.iter().map(|p| s.push(p)).collect();
    (shown, s.finish())
}

#[test]
fn streams_show_text_and_hold_calls() {
    assert_eq!(split_all(&["Hello", " there", "."]), ("Hello there.".into(), "".into()));
    let (shown, held) = split_all(&["Let me", " check. <tool", "_call>{\"name\"", ": 1}</tool_call>"]);
    assert_eq!(shown, "Let me check. ");
    assert_eq!(held, "<tool_call>{\"name\": 1}</tool_call>");
    assert_eq!(split_all(&[" ", " {\"na", "me\": 1}"]), ("".into(), "  {\"name\": 1}".into()));
    // A "<" that does not become a marker is shown once it cannot.
    assert_eq!(split_all(&["a <", "b"]), ("a <b".into(), "".into()));
    assert_eq!(split_all(&["x [TOOL", "_CALLS][]"]).1, "[TOOL_CALLS][]");
    // JSON later in a text answer is not a bare call.
    assert_eq!(split_all(&["Here: ", "{\"a\": 1}"]), ("Here: {\"a\": 1}".into(), "".into()));
}
