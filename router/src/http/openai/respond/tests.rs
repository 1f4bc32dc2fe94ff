use super::body::Chunk;
use super::*;
use model_bucket_shared::protocol::{RequestId, Timings, Usage};
use serde_json::{json, Value};

fn meta(kind: Kind, tools: Option<Vec<String>>, n: usize) -> Meta {
    Meta { id: "x-1".into(), created: 7, model: "eden_m_1b_abcdef".into(), kind, tools, n }
}

fn finished(text: &str, prompt: u32, completion: u32, logprobs: Option<Vec<TokenLogprob>>) -> Finished {
    Finished {
        text: text.into(),
        logprobs,
        done: Box::new(DoneInfo {
            id: RequestId(1),
            finish: FinishReason::Stop,
            usage: Usage { prompt_tokens: prompt, completion_tokens: completion, ..Default::default() },
            timings: Timings::default(),
        }),
    }
}

#[test]
fn token_chunks_match_the_full_rendering() {
    for kind in [Kind::Chat, Kind::Text] {
        let meta = meta(kind, None, 1);
        for index in [0, 3] {
            let chunk = TokenChunk::new(&meta, index);
            let mut buf = Vec::new();
            for text in ["", "Paris", "quote \" and \\ newline\n", "é✓🦀", "\u{0}"] {
                assert_eq!(
                    chunk.render(text, &mut buf),
                    serde_json::to_string(&meta.text_chunk(index, text, None)).unwrap()
                );
            }
        }
    }
}

#[test]
fn tool_calls_make_the_message() {
    let m = meta(Kind::Chat, Some(vec!["get_weather".into()]), 1);
    let body = serde_json::to_value(m.response(&[finished(
        r#"{"name": "get_weather", "arguments": {"city": "Oslo"}}"#,
        5,
        9,
        None,
    )]))
    .unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], r#"{"city":"Oslo"}"#);
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    // Text stays text.
    let body = serde_json::to_value(m.response(&[finished("It is sunny.", 5, 4, None)])).unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["choices"][0]["message"]["content"], "It is sunny.");
    assert!(body["choices"][0]["message"].get("tool_calls").is_none());
}

#[test]
fn usage_counts_each_prompt_once() {
    // Two prompts, n = 2: choices 0 and 1 answer prompt 0 (5 tokens), 2 and 3 prompt 1 (7).
    let m = meta(Kind::Text, None, 2);
    let choices =
        [finished("a", 5, 1, None), finished("b", 5, 2, None), finished("c", 7, 3, None), finished("d", 7, 4, None)];
    let body = serde_json::to_value(m.response(&choices)).unwrap();
    assert_eq!(body["usage"]["prompt_tokens"], 12);
    assert_eq!(body["usage"]["completion_tokens"], 10);
    assert_eq!(body["usage"]["total_tokens"], 22);
    let idx: Vec<_> = body["choices"].as_array().unwrap().iter().map(|c| c["index"].clone()).collect();
    assert_eq!(idx, vec![json!(0), json!(1), json!(2), json!(3)]);
}

#[test]
fn logprob_shapes() {
    let lp = vec![
        TokenLogprob {
            bytes: b"Hi".to_vec(),
            logprob: -0.25,
            top: vec![(b"Hi".to_vec(), -0.25), (b"Yo".to_vec(), -2.0)],
        },
        TokenLogprob { bytes: "é".as_bytes().to_vec(), logprob: -1.0, top: vec![] },
    ];
    let chat = serde_json::to_value(meta(Kind::Chat, None, 1).logprobs(&lp, 0)).unwrap();
    assert_eq!(chat["content"][0]["token"], "Hi");
    assert_eq!(chat["content"][0]["bytes"], json!([72, 105]));
    assert_eq!(chat["content"][0]["top_logprobs"][1]["token"], "Yo");
    assert_eq!(chat["content"][1]["logprob"], -1.0);
    let text = serde_json::to_value(meta(Kind::Text, None, 1).logprobs(&lp, 10)).unwrap();
    assert_eq!(text["tokens"], json!(["Hi", "é"]));
    assert_eq!(text["token_logprobs"], json!([-0.25, -1.0]));
    assert_eq!(text["top_logprobs"][0]["Yo"], -2.0);
    assert_eq!(text["text_offset"], json!([10, 12]));
}

#[test]
fn the_wire_shapes_are_openais() {
    let m = meta(Kind::Chat, None, 1);
    let head = r#"{"id":"x-1","object":"chat.completion.chunk","created":7,"model":"eden_m_1b_abcdef","choices":"#;
    let s = |c: &Chunk| serde_json::to_string(c).unwrap();
    let role = Delta { role: Some("assistant"), content: Some(String::new()), ..Delta::default() };
    assert_eq!(
        s(&m.chunk(0, role, None, None)),
        format!(
            r#"{head}[{{"index":0,"delta":{{"role":"assistant","content":""}},"logprobs":null,"finish_reason":null}}]}}"#
        )
    );
    assert_eq!(
        s(&m.finish_chunk(1, "stop")),
        format!(r#"{head}[{{"index":1,"delta":{{}},"logprobs":null,"finish_reason":"stop"}}]}}"#)
    );
    let call = body::ToolCallDelta {
        index: 0,
        id: Some("call_1".into()),
        kind: Some("function"),
        function: body::FunctionDelta { name: Some("f".into()), arguments: String::new() },
    };
    assert_eq!(
        s(&m.chunk(0, Delta { tool_calls: vec![call], ..Delta::default() }, None, None)),
        format!(
            r#"{head}[{{"index":0,"delta":{{"tool_calls":[{{"index":0,"id":"call_1","type":"function","function":{{"name":"f","arguments":""}}}}]}},"logprobs":null,"finish_reason":null}}]}}"#
        )
    );
    let done = finished("Hi", 3, 1, None);
    assert_eq!(
        s(&m.usage_chunk(&[&done.done])),
        format!(
            r#"{head}[],"usage":{{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4,"prompt_tokens_details":{{"cached_tokens":0}}}}}}"#
        )
    );
    let text = meta(Kind::Text, None, 1);
    assert_eq!(
        serde_json::to_string(&text.finish_chunk(0, "length")).unwrap(),
        r#"{"id":"x-1","object":"text_completion","created":7,"model":"eden_m_1b_abcdef","choices":[{"index":0,"text":"","logprobs":null,"finish_reason":"length"}]}"#
    );
    assert_eq!(
        serde_json::to_string(&m.response(&[done])).unwrap(),
        r#"{"id":"x-1","object":"chat.completion","created":7,"model":"eden_m_1b_abcdef","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4,"prompt_tokens_details":{"cached_tokens":0}},"timings":{"queue_ms":0.0,"prompt_ms":0.0,"decode_ms":0.0,"cache_source":null,"draft_n":0,"draft_n_accepted":0}}"#
    );
}
