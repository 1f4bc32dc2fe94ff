//! Completions served in process by in-memory fake workers: the whole path from the request to
//! the worker client and back (routing, fan-out, retry, cancel, whole and streamed rendering),
//! with what the worker received checked too.

use axum::http::{Method, StatusCode};
use http_body_util::BodyExt;
use model_bucket_shared::protocol::{Prompt, ToWorker};
use model_bucket_shared::{Capability, Catalog, ModelInfo};
use serde_json::{json, Value};
use std::time::Duration;
use tower_service::Service;

use super::{app_of, registry_with, request, send};
use crate::worker::fake::{self, Crash, Script, Seen};

const MODEL: &str = "eden_fake_1b_abcdef";

fn catalog() -> Catalog {
    let m = ModelInfo {
        id: MODEL.into(),
        aliases: vec!["fake".into()],
        path: "/nonexistent/fake.gguf".into(),
        size_bytes: 1 << 20,
        sha256: "abcdef".repeat(10) + "abcd",
        architecture: "llama".into(),
        name: "fake".into(),
        parameters: Some("1B".into()),
        quantization: Some("Q4_0".into()),
        context_length: Some(4096),
        has_chat_template: true,
        capabilities: vec![Capability::Chat, Capability::Completion],
        kv_bytes_per_token: Some(1024),
        n_vocab: Some(1000),
        embedding_length: Some(64),
        block_count: Some(2),
        lora: None,
        adapters: Vec::new(),
    };
    Catalog { dir: "/nonexistent".into(), models: vec![m], ..Default::default() }
}

/// The app over one fake model following `script`, and what its workers see.
fn serving(script: Script) -> (axum::Router, Seen) {
    let (launch, seen) = fake::launch(script);
    (app_of(registry_with(catalog(), launch), None), seen)
}

fn chat(extra: Value) -> String {
    let mut body = json!({ "model": MODEL, "messages": [{ "role": "user", "content": "hi" }] });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body.to_string()
}

/// The `data:` payloads of an SSE body, in order.
async fn sse(app: &mut axum::Router, body: &str) -> (StatusCode, Vec<String>) {
    let resp = app.call(request(Method::POST, "/v1/chat/completions", body)).await.expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8(bytes.to_vec()).expect("utf-8");
    let data = text.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_string).collect();
    (status, data)
}

fn generates(seen: &Seen) -> Vec<model_bucket_shared::protocol::GenerateRequest> {
    seen.messages()
        .into_iter()
        .filter_map(|m| match m {
            ToWorker::Generate(g) => Some(*g),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_chat_is_answered_with_the_workers_text_and_usage() {
    let (mut app, seen) = serving(Script::says(&["Hel", "lo", "!"]));
    let (status, _, body) = send(&mut app, Method::POST, "/v1/chat/completions", &chat(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["choices"][0]["message"], json!({ "role": "assistant", "content": "Hello!" }));
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 3);
    let sent = generates(&seen);
    assert_eq!(sent.len(), 1);
    match &sent[0].prompt {
        Prompt::Chat(m) => assert_eq!((m[0].role.as_str(), m[0].content.as_str()), ("user", "hi")),
        other => panic!("{other:?}"),
    }
    // `max_tokens` reaches the worker, and the answer is cut there.
    let (_, _, body) = send(&mut app, Method::POST, "/v1/chat/completions", &chat(json!({ "max_tokens": 2 }))).await;
    assert_eq!(body["choices"][0]["message"]["content"], "Hello");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(generates(&seen)[1].max_tokens, Some(2));
    assert_eq!(seen.starts(), 1, "one worker serves both");
}

#[tokio::test]
async fn a_stream_has_a_role_chunk_text_chunks_a_finish_usage_and_done() {
    let (mut app, _) = serving(Script::says(&["Hel", "lo"]));
    let body = chat(json!({ "stream": true, "stream_options": { "include_usage": true } }));
    let (status, data) = sse(&mut app, &body).await;
    assert_eq!(status, StatusCode::OK);
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({ "role": "assistant", "content": "" }));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Hello");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 2);
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
}

#[tokio::test]
async fn n_choices_are_separate_worker_requests_with_their_own_seeds() {
    let (mut app, seen) = serving(Script::says(&["a", "b"]));
    let body = json!({ "model": "fake", "prompt": ["x", "y"], "n": 2, "seed": 7 }).to_string();
    let (status, _, v) = send(&mut app, Method::POST, "/v1/completions", &body).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    assert!(choices.iter().enumerate().all(|(i, c)| c["index"] == i && c["text"] == "ab"));
    let sent = generates(&seen);
    let prompts: Vec<_> = sent.iter().map(|g| g.prompt.clone()).collect();
    let text = |t: &str| Prompt::Text(t.into());
    assert_eq!(prompts, vec![text("x"), text("x"), text("y"), text("y")]);
    let seeds: Vec<_> = sent.iter().map(|g| g.sampling.seed).collect();
    assert_eq!(seeds, vec![Some(7), Some(8), Some(7), Some(8)]);
    assert_eq!(v["usage"]["prompt_tokens"], 6, "each prompt counted once");
}

#[tokio::test]
async fn a_tool_call_in_the_text_becomes_tool_calls() {
    let (mut app, seen) = serving(Script::says(&[r#"{"name": "get_weather", "#, r#""arguments": {"city": "Oslo"}}"#]));
    let tools = json!([{ "type": "function", "function": { "name": "get_weather", "parameters": {
        "type": "object", "properties": { "city": { "type": "string" } } } } }]);
    let (status, _, v) = send(&mut app, Method::POST, "/v1/chat/completions", &chat(json!({ "tools": tools }))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let message = &v["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    assert_eq!(message["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(message["tool_calls"][0]["function"]["arguments"], r#"{"city":"Oslo"}"#);
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert!(generates(&seen)[0].tools.as_deref().is_some_and(|t| t.contains("get_weather")));
}

#[tokio::test]
async fn a_worker_dying_before_the_first_token_is_retried_once_on_the_next() {
    let (mut app, seen) = serving(Script { crash: Some(Crash { after: 0, starts: 1 }), ..Script::says(&["ok"]) });
    let (status, _, v) = send(&mut app, Method::POST, "/v1/chat/completions", &chat(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "ok");
    assert_eq!(seen.starts(), 2);

    // Every start dies: one retry, then a 502 naming the cause.
    let (mut app, seen) =
        serving(Script { crash: Some(Crash { after: 0, starts: usize::MAX }), ..Script::says(&["ok"]) });
    let (status, _, v) = send(&mut app, Method::POST, "/v1/chat/completions", &chat(json!({}))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("worker exited"), "{v}");
    assert_eq!(seen.starts(), 2);
}

#[tokio::test]
async fn a_worker_dying_mid_stream_ends_it_with_an_error_event() {
    let (mut app, seen) = serving(Script { crash: Some(Crash { after: 1, starts: 1 }), ..Script::says(&["a", "b"]) });
    let (status, data) = sse(&mut app, &chat(json!({ "stream": true }))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let error: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("worker exited"), "{data:?}");
    let text: String = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, "a", "what was sent stays sent; the request is not retried");
    assert_eq!(seen.starts(), 1);
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_request_in_the_worker() {
    let (mut app, seen) = serving(Script { endless: true, ..Script::says(&["la "]) });
    let resp = app
        .call(request(Method::POST, "/v1/chat/completions", &chat(json!({ "stream": true }))))
        .await
        .expect("infallible");
    let mut body = resp.into_body();
    let first = body.frame().await.expect("a chunk").expect("body");
    assert!(first.data_ref().is_some());
    drop(body);
    let id = generates(&seen)[0].id;
    let cancelled = || seen.messages().iter().any(|m| matches!(m, ToWorker::Cancel { id: c } if *c == id));
    for _ in 0..500 {
        if cancelled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(cancelled(), "{:?}", seen.messages());
    // The worker is free again: the next request is served.
    let (status, _, v) = send(&mut app, Method::POST, "/v1/chat/completions", &chat(json!({ "max_tokens": 1 }))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn too_many_choices_for_the_model_are_refused_before_any_load() {
    let (mut app, seen) = serving(Script::says(&["a"]));
    let (status, _, v) = send(&mut app, Method::POST, "/v1/chat/completions", &chat(json!({ "n": 5 }))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["param"], "n");
    assert_eq!(seen.starts(), 0, "a bad request never costs a model load");
}

#[tokio::test]
async fn loading_progress_shows_in_the_models_list_and_the_event_stream() {
    let (app, _) = serving(Script { load: Duration::from_millis(400), ..Script::says(&["a"]) });
    // Watch the events from the start.
    let mut watcher = app.clone();
    let resp = watcher.call(request(Method::GET, "/admin/events", "")).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut events = resp.into_body();
    // Read as they come, as a page does.
    let reader = tokio::spawn(async move {
        let mut states: Vec<Value> = vec![];
        while !states.iter().any(|s| s["state"] == "ready") {
            let frame = tokio::time::timeout(Duration::from_secs(5), events.frame()).await;
            let frame = frame.expect("an event").expect("a frame").expect("body");
            let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
            for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
                states.push(serde_json::from_str::<Value>(line).unwrap());
            }
        }
        states
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut loader = app.clone();
    let load =
        tokio::spawn(async move { send(&mut loader, Method::POST, &format!("/admin/models/{MODEL}/load"), "").await });
    let mut lister = app.clone();
    let mut seen_half = false;
    for _ in 0..100 {
        let (_, _, v) = send(&mut lister, Method::GET, &format!("/v1/models/{MODEL}"), "").await;
        if v["state"] == "loading" && v["progress"] == 0.5 {
            seen_half = true;
            let (_, _, w) = send(&mut lister, Method::GET, "/admin/workers", "").await;
            assert_eq!(w["workers"][0]["progress"], 0.5, "{w}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen_half, "progress 0.5 never showed while loading");
    let (status, _, v) = load.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, _, v) = send(&mut lister, Method::GET, &format!("/v1/models/{MODEL}"), "").await;
    assert_eq!(v["state"], "ready");
    assert!(v.get("progress").is_none(), "{v}");
    // The stream told the same story, in order.
    let states = reader.await.unwrap();
    let names: Vec<&str> = states.iter().map(|s| s["state"].as_str().unwrap()).collect();
    assert_eq!(names.first(), Some(&"unloaded"), "{states:?}");
    assert!(states.iter().any(|s| s["state"] == "loading" && s["progress"] == 0.5), "{states:?}");
    assert_eq!(names.last(), Some(&"ready"), "{states:?}");
    assert!(states.iter().all(|s| s["model"] == MODEL));
}

#[tokio::test]
async fn a_models_log_streams_once_a_worker_has_started() {
    let (mut app, _) = serving(Script::says(&["a"]));
    let reader = app.clone();
    let read = |path: String| {
        let mut app = reader.clone();
        async move {
            let resp = app.call(request(Method::GET, &path, "")).await.expect("infallible");
            let status = resp.status();
            let mut body = resp.into_body();
            let mut events: Vec<Value> = vec![];
            // The kept lines come at once; a live stream then waits for more.
            while let Ok(Some(Ok(frame))) = tokio::time::timeout(Duration::from_millis(300), body.frame()).await {
                let text = String::from_utf8(frame.into_data().unwrap_or_default().to_vec()).unwrap();
                events.extend(
                    text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()),
                );
            }
            (status, events)
        }
    };
    let logs = format!("/admin/models/{MODEL}/logs");
    let (status, events) = read(logs.clone()).await;
    assert_eq!((status, events), (StatusCode::OK, vec![json!({ "started": false })]), "before any worker");
    let (status, _, v) = send(&mut app, Method::POST, &format!("/admin/models/{MODEL}/load"), "").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, events) = read(logs).await;
    assert_eq!((status, events), (StatusCode::OK, vec![json!({ "line": "fake worker 1 ready" })]));
    let (status, v) = read("/admin/models/eden_nothing_1b_000000/logs".into()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v:?}");
}

#[tokio::test]
async fn ollamas_keep_alive_is_ignored_where_an_admin_key_is_set() {
    let body = json!({ "model": MODEL, "messages": [{ "role": "user", "content": "hi" }], "stream": false,
                       "options": { "num_predict": 1 }, "keep_alive": "1ns" })
    .to_string();
    for (admin_key, taken) in [(Some("adm"), None), (None, Some(Duration::from_nanos(1)))] {
        let (launch, _) = fake::launch(Script::says(&["a", "b"]));
        let registry = registry_with(catalog(), launch);
        let access = crate::http::guard::access::Access { admin_key: admin_key.map(Into::into), ..Default::default() };
        let guard = crate::http::guard::origin::Guard { loopback: true, allowed_hosts: vec![], cors_origins: vec![] };
        let mut app = crate::http::app(registry.clone(), 1 << 20, access, guard, 64, super::memory_store());
        let model = registry.catalog().resolve(MODEL).expect("listed").clone();
        // With an admin key, unloading is its alone: a tiny idle time would unload the model
        // for everyone, so no client's keep_alive is taken.
        let resp = app.call(request(Method::POST, "/api/chat", &body)).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(registry.idle_time(&model), taken, "admin key {admin_key:?}");
    }
}
