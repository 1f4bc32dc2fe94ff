//! Nodes on their own loopback addresses (127.0.0.2, 127.0.0.3, ...), each a real
//! `model-bucket serve` with different models, peers of each other: a request to one node for a
//! model only another has is answered by that node, whole and streamed, with the official
//! OpenAI SDK too; a node killed mid-stream ends the stream with an error event, its models
//! leave the others' lists and come back when it restarts; a model nobody has is a 404, not a
//! loop; a peer that refuses this node's key is named in the error; peers found through a DNS
//! name (a small DNS server of the test's own) come and go with its answers.

use model_bucket_tests::server::{eventually, open_at, signal};
use model_bucket_tests::*;
use serde_json::{json, Value};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A node on `ip` (port 0: a free one) serving `dir`, polling `peers` every 300 ms.
fn node(ip: &str, port: u16, dir: &Path, peers: &[String], extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut args: Vec<String> = vec!["--ctx".into(), "512".into(), "--peer-poll-ms".into(), "300".into()];
    for p in peers {
        args.extend(["--peer".to_string(), p.clone()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_at(SocketAddr::new(ip.parse().unwrap(), port), dir, &args, env)
}

/// A folder with one default model.
fn bucket_of(file: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    link_model(file, dir.path(), file);
    dir
}

/// A free port on `ip`.
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// `/v1/models` entry of `id` on `s`, if listed.
fn listed(s: &Server, id: &str) -> Option<Value> {
    let v = s.get_json("/v1/models");
    v["data"].as_array().unwrap().iter().find(|m| m["id"] == id).cloned()
}

/// POST `body` to `path` on `s`: (status, headers lowercased, body as JSON or `Null`).
fn post(s: &Server, path: &str, body: &Value) -> (u16, String, Value) {
    let (status, resp) = s.post(path, &body.to_string()).unwrap();
    let (head, json) = resp.split_once("\r\n\r\n").unwrap_or(("", ""));
    (status, head.to_ascii_lowercase(), serde_json::from_str(json).unwrap_or(Value::Null))
}

/// The SSE `data:` payloads of a streamed POST to `addr`.
fn sse(addr: SocketAddr, path: &str, body: &Value) -> impl Iterator<Item = String> {
    let c = open_at(addr, "POST", path, "", &body.to_string(), Some(Duration::from_secs(60))).unwrap();
    std::io::BufReader::new(c)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| l.strip_prefix("data: ").map(str::to_string))
}

#[test]
fn nodes_answer_for_each_others_models_and_survive_a_peer_dying_mid_stream() {
    let (a_dir, b_dir) = (bucket_of(SMOLLM2_FILE), bucket_of(GEMMA_FILE));
    let (a_port, b_port) = (free_port("127.0.0.2"), free_port("127.0.0.3"));
    let (a_url, b_url) = (format!("http://127.0.0.2:{a_port}"), format!("http://127.0.0.3:{b_port}"));
    // A task on A whose only model is B's.
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "[tasks]\nmemory = [\"eden_gemma3_270m\"]\n").unwrap();
    let a_extra = ["--config", config.path().to_str().unwrap()];
    let a = node("127.0.0.2", a_port, a_dir.path(), std::slice::from_ref(&b_url), &a_extra, &[]);
    let mut b = node("127.0.0.3", b_port, b_dir.path(), std::slice::from_ref(&a_url), &[], &[]);
    let (smol, gemma) = (smol_id(), gemma_id());

    // Each lists the other's model, marked with its node; its own marked local.
    assert!(eventually(Duration::from_secs(10), || listed(&a, &gemma).is_some_and(|m| m["node"] == b_url.as_str())));
    assert!(eventually(Duration::from_secs(10), || listed(&b, &smol).is_some_and(|m| m["node"] == a_url.as_str())));
    assert_eq!(listed(&a, &smol).unwrap()["node"], "local");
    assert_eq!(a.get_json(&format!("/v1/models/{gemma}"))["node"], b_url.as_str());

    // A request to A for B's model is answered by B.
    let body = json!({ "model": gemma, "prompt": "The sky is", "max_tokens": 8, "temperature": 0 });
    let (status, head, v) = post(&a, "/v1/completions", &body);
    assert_eq!(status, 200, "{v}");
    assert!(head.contains(&format!("x-model-bucket-node: {b_url}")), "{head}");
    assert_eq!(v["model"], gemma.as_str());
    let (_, _, direct) = post(&b, "/v1/completions", &body);
    assert_eq!(v["choices"][0]["text"], direct["choices"][0]["text"], "the same answer as B's own");
    // Streamed, too, and embeddings.
    let events: Vec<String> = sse(
        a.addr(),
        "/v1/completions",
        &json!({ "model": gemma, "prompt": "The sky is", "max_tokens": 8, "temperature": 0, "stream": true }),
    )
    .collect();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let text: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .map(|e| e["choices"][0]["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(text, direct["choices"][0]["text"].as_str().unwrap());
    let (status, _, v) = post(&a, "/v1/embeddings", &json!({ "model": gemma, "input": "hello there" }));
    assert_eq!(status, 200, "{v}");
    // A task chain resolves across the fleet.
    let (status, head, v) = post(
        &a,
        "/v1/completions",
        &json!({ "model": "task:memory", "prompt": "The sky is", "max_tokens": 8, "temperature": 0 }),
    );
    assert_eq!(status, 200, "{v}");
    assert!(head.contains(&format!("x-model-bucket-node: {b_url}")), "{head}");
    assert_eq!(v["choices"][0]["text"], direct["choices"][0]["text"]);
    let (status, head, v) = post(&a, "/v1/embeddings", &json!({ "model": "task:memory", "input": "hello there" }));
    assert_eq!(status, 200, "{v}");
    assert!(head.contains(&format!("x-model-bucket-node: {b_url}")), "{head}");

    // The official SDK, through A, for B's model: whole and streamed chat.
    let sdk = r#"
import sys, openai
c = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="none")
whole = c.chat.completions.create(model=sys.argv[2], messages=[{"role": "user", "content": "Say hi"}], max_tokens=8, temperature=0)
parts = [ch.choices[0].delta.content or "" for ch in c.chat.completions.create(model=sys.argv[2], messages=[{"role": "user", "content": "Say hi"}], max_tokens=8, temperature=0, stream=True) if ch.choices]
assert whole.model == sys.argv[2], whole.model
assert "".join(parts) == whole.choices[0].message.content, (parts, whole.choices[0].message.content)
print("ok", whole.choices[0].message.content)
"#;
    let out = Command::new("python3").args(["-c", sdk, &a.base_url(), &smol]).output().expect("python3");
    assert!(out.status.success(), "A's own model: {}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new("python3").args(["-c", sdk, &b.base_url(), &smol]).output().expect("python3");
    assert!(out.status.success(), "A's model through B: {}", String::from_utf8_lossy(&out.stderr));

    // A model nobody has: 404 from both, at once, no loop.
    for s in [&a, &b] {
        let started = std::time::Instant::now();
        let (status, _, v) = post(s, "/v1/completions", &json!({ "model": "eden_nobody_1b_000000", "prompt": "x" }));
        assert_eq!(status, 404, "{v}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    // A request that already made a hop is answered where it lands: A does not pass it on.
    let hop =
        open_at(a.addr(), "POST", "/v1/completions", "x-model-bucket-hop: 1\r\n", &body.to_string(), None).unwrap();
    let (status, resp) = server::read_response(hop).unwrap();
    assert_eq!(status, 404, "{resp}");

    // B dies mid-stream: A's client gets an error event, not a silent end.
    let long = json!({ "model": gemma, "prompt": "Count:", "max_tokens": 4000, "temperature": 0, "stream": true, "logit_bias": { "1": -100, "106": -100 } });
    let mut events = sse(a.addr(), "/v1/completions", &long);
    for _ in 0..3 {
        events.next().expect("tokens before the kill");
    }
    signal(b.child.id(), "KILL");
    let _ = b.child.wait();
    let rest: Vec<String> = events.collect();
    let error = rest.iter().find(|e| e.contains("\"error\"")).unwrap_or_else(|| panic!("no error event: {rest:?}"));
    assert!(error.contains("mid-stream"), "{error}");
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"), "{rest:?}");
    // Its models leave A's list within a few polls, and A still serves its own.
    assert!(eventually(Duration::from_secs(5), || listed(&a, &gemma).is_none()), "B's model still listed");
    let (status, _, v) = post(&a, "/v1/completions", &json!({ "model": gemma, "prompt": "x", "max_tokens": 1 }));
    assert_eq!(status, 404, "{v}");
    let (status, _, _) = post(&a, "/v1/completions", &json!({ "model": smol, "prompt": "x", "max_tokens": 1 }));
    assert_eq!(status, 200);
    // B comes back on its address: so do its models.
    let _b = node("127.0.0.3", b_port, b_dir.path(), std::slice::from_ref(&a_url), &[], &[]);
    assert!(eventually(Duration::from_secs(10), || listed(&a, &gemma).is_some()), "B's model back");
    let (status, head, _) = post(&a, "/v1/completions", &json!({ "model": gemma, "prompt": "x", "max_tokens": 1 }));
    assert_eq!(status, 200);
    assert!(head.contains("x-model-bucket-node"), "{head}");
}

#[test]
fn a_peer_that_refuses_this_nodes_key_is_named() {
    let (a_dir, b_dir) = (bucket_of(SMOLLM2_FILE), bucket_of(GEMMA_FILE));
    let b = node("127.0.0.5", 0, b_dir.path(), &[], &["--api-key", "right-key"], &[]);
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "peer_api_key_env = \"PEER_KEY\"\n").unwrap();
    let a = node(
        "127.0.0.4",
        0,
        a_dir.path(),
        &[b.base_url()],
        &["--config", config.path().to_str().unwrap()],
        &[("PEER_KEY", "wrong-key")],
    );
    assert!(eventually(Duration::from_secs(10), || {
        a.get_json("/admin/peers")["peers"][0]["error"].as_str().is_some_and(|e| e.contains("refused this node's key"))
    }));
    let (status, _, v) = post(&a, "/v1/completions", &json!({ "model": gemma_id(), "prompt": "x", "max_tokens": 1 }));
    assert_eq!(status, 404, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains(&b.base_url()) && message.contains("refused this node's key"), "{message}");
}

/// A DNS server on a free loopback UDP port answering every A query with the addresses in
/// `ips` (as they are when asked), every other query with none.
fn dns_server(ips: std::sync::Arc<std::sync::Mutex<Vec<[u8; 4]>>>) -> SocketAddr {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let q = &buf[..n];
            // The question: labels up to a zero byte, then type and class.
            let mut end = 12;
            while end < n && q[end] != 0 {
                end += q[end] as usize + 1;
            }
            if end + 5 > n {
                continue;
            }
            let qtype = u16::from_be_bytes([q[end + 1], q[end + 2]]);
            let answers: Vec<[u8; 4]> = if qtype == 1 { ips.lock().unwrap().clone() } else { Vec::new() };
            let mut r = q[..end + 5].to_vec();
            r[2] = 0x81; // a response, recursion desired
            r[3] = 0x80; // recursion available, no error
            r[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
            r[8..12].fill(0);
            for ip in answers {
                // The name by pointer to the question, A, IN, TTL 0, 4 bytes.
                r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
                r.extend_from_slice(&ip);
            }
            let _ = sock.send_to(&r, from);
        }
    });
    addr
}

#[test]
fn peers_are_found_through_a_dns_name() {
    let (a_dir, b_dir) = (bucket_of(SMOLLM2_FILE), bucket_of(GEMMA_FILE));
    // Every node on the same port, as the pods behind a headless Service.
    let port = loop {
        let p = free_port("127.0.0.6");
        if std::net::TcpListener::bind(("127.0.0.7", p)).is_ok() {
            break p;
        }
    };
    let ips = std::sync::Arc::new(std::sync::Mutex::new(vec![[127, 0, 0, 6], [127, 0, 0, 7]]));
    let dns = dns_server(ips.clone()).to_string();
    let name = format!("peers.fleet.test.:{port}");
    let flags = ["--peers-dns", name.as_str(), "--peers-dns-server", dns.as_str()];
    let a = node("127.0.0.6", port, a_dir.path(), &[], &flags, &[]);
    let _b = node("127.0.0.7", port, b_dir.path(), &[], &flags, &[]);
    let b_url = format!("http://127.0.0.7:{port}");
    assert!(
        eventually(Duration::from_secs(10), || listed(&a, &gemma_id()).is_some_and(|m| m["node"] == b_url.as_str())),
        "{}",
        a.get_json("/admin/peers")
    );
    // A found itself in the name too, and left itself out.
    let peers = a.get_json("/admin/peers");
    let urls: Vec<&str> = peers["peers"].as_array().unwrap().iter().map(|p| p["url"].as_str().unwrap()).collect();
    assert_eq!(urls, [b_url.as_str()], "{peers}");
    let (status, head, _) =
        post(&a, "/v1/completions", &json!({ "model": gemma_id(), "prompt": "x", "max_tokens": 1 }));
    assert_eq!(status, 200);
    assert!(head.contains(&format!("x-model-bucket-node: {b_url}")), "{head}");
    // The name drops B: so does A.
    *ips.lock().unwrap() = vec![[127, 0, 0, 6]];
    assert!(eventually(Duration::from_secs(10), || listed(&a, &gemma_id()).is_none()), "B still listed");
}

/// A compromised peer on its own address: its model list is `list` (whatever it holds), and
/// every other request gets an HTML page.
fn hostile_peer(list: String) -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind(("127.0.0.9", 0)).unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let list = std::sync::Arc::new(list);
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let list = list.clone();
            std::thread::spawn(move || {
                let mut c = c;
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && c.read(&mut b).unwrap_or(0) == 1 {
                    head.push(b[0]);
                }
                let (ct, body) = if head.starts_with(b"GET /v1/models") {
                    ("application/json", list.as_bytes())
                } else {
                    ("text/html", &b"<html><script>alert(1)</script></html>"[..])
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = c.write_all(body);
            });
        }
    });
    url
}

/// The peak resident memory of process `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn a_compromised_peer_can_neither_bloat_shadow_nor_serve_pages_through_a_node() {
    // Nearly 4 MiB of models: thousands, each with a hundred junk fields (small on the wire,
    // large as parsed JSON), a task and a local name.
    let junk: serde_json::Map<String, Value> = (0..100).map(|k| (format!("k{k}"), json!(1))).collect();
    let mut data: Vec<Value> =
        (0..4000).map(|i| json!({ "id": format!("m{i}"), "junk": junk, "state": "ready" })).collect();
    data.push(json!({ "id": "task:thinking", "state": "ready" }));
    data.push(json!({ "id": "evil", "aliases": [smol_id(), "task:intent"], "state": "ready" }));
    data.push(json!({ "id": "pager", "state": "ready", "capabilities": ["chat"] }));
    data.rotate_right(3);
    let list = json!({ "object": "list", "data": data }).to_string();
    assert!(list.len() < 4 << 20, "{}", list.len());
    let dir = bucket_of(SMOLLM2_FILE);
    let a = node("127.0.0.1", 0, dir.path(), &[hostile_peer(list)], &[], &[]);
    assert!(eventually(Duration::from_secs(10), || listed(&a, "pager").is_some()));
    let before = peak_rss(a.child.id());
    // Sixteen listings at once: each writes the shared entries, none copies them.
    let port = a.port;
    let lists: Vec<_> = (0..16)
        .map(|_| std::thread::spawn(move || model_bucket_tests::server::get(port, "/v1/models").unwrap()))
        .collect();
    for l in lists {
        assert_eq!(l.join().unwrap().0, 200);
    }
    let grew = peak_rss(a.child.id()).saturating_sub(before);
    assert!(grew < 200 << 20, "16 listings grew the router's peak memory by {} MiB", grew >> 20);
    let v = a.get_json("/v1/models");
    let data = v["data"].as_array().unwrap();
    assert!(data.len() <= 4096 + 2, "{}", data.len());
    // Known fields only; no `task:` entry or alias, nothing that shadows this node's own names.
    let pager = data.iter().find(|m| m["id"] == "pager").unwrap();
    assert!(pager.get("junk").is_none(), "{pager}");
    assert!(data.iter().all(|m| m["id"] != "task:thinking" && m["id"] != "evil"), "shadowing entries listed");
    assert_eq!(data.iter().filter(|m| m["id"] == smol_id()).count(), 1);
    // A page instead of an answer is not passed on.
    let (status, head, body) = post(
        &a,
        "/v1/chat/completions",
        &json!({ "model": "pager", "messages": [{ "role": "user", "content": "hi" }] }),
    );
    assert_eq!(status, 502, "{head} {body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("text/html"), "{body}");
    assert!(!head.contains("text/html"));
}

#[test]
fn a_name_that_means_two_local_models_is_refused_not_forwarded() {
    // Two SmolLM2 files: the hashless alias means both here, and a peer claims it too.
    let dir = bucket_of(SMOLLM2_FILE);
    let other = dir.path().join("smollm2-copy.gguf");
    let mut bytes = std::fs::read(model(SMOLLM2_FILE)).unwrap();
    bytes.extend_from_slice(&[0u8; 32]); // another file, another hash, the same name stem
    std::fs::write(&other, bytes).unwrap();
    let alias = smol_id().rsplit_once('_').unwrap().0.to_string();
    let list = json!({ "data": [{ "id": "peer_model_x", "aliases": [alias.clone()], "state": "ready" }] }).to_string();
    let a = node("127.0.0.1", 0, dir.path(), &[hostile_peer(list)], &[], &[]);
    // The peer was polled: its model is listed (its alias means nothing unique here).
    assert!(eventually(Duration::from_secs(10), || listed(&a, "peer_model_x").is_some()));
    let (status, _, body) = post(&a, "/v1/completions", &json!({ "model": alias, "prompt": "Hi", "max_tokens": 2 }));
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("several models") && message.contains(&smol_id()), "{message}");
}

#[test]
fn anthropic_and_ollama_requests_reach_a_peers_model_in_openai_form() {
    let (a_dir, b_dir) = (bucket_of(GEMMA_FILE), bucket_of(SMOLLM2_FILE));
    let b_port = free_port("127.0.0.3");
    let b_url = format!("http://127.0.0.3:{b_port}");
    let a = node("127.0.0.2", 0, a_dir.path(), std::slice::from_ref(&b_url), &[], &[]);
    let b = node("127.0.0.3", b_port, b_dir.path(), &[], &[], &[]);
    let smol = smol_id();
    assert!(eventually(Duration::from_secs(10), || listed(&a, &smol).is_some()));
    let messages = json!([{ "role": "user", "content": "Name a colour." }]);
    // What the model itself answers, asked on its own node.
    let (status, _, direct) = post(
        &b,
        "/v1/chat/completions",
        &json!({ "model": smol, "messages": messages, "max_tokens": 12, "temperature": 0 }),
    );
    assert_eq!(status, 200, "{direct}");
    let text = direct["choices"][0]["message"]["content"].as_str().unwrap().to_string();

    let ask = json!({ "model": smol, "messages": messages, "max_tokens": 12, "temperature": 0 });
    let (status, _, m) = post(&a, "/v1/messages", &ask);
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["content"][0]["text"], text.as_str());
    assert_eq!(m["usage"]["output_tokens"], direct["usage"]["completion_tokens"]);
    // Streamed: the peer's whole answer comes back as the dialect's events.
    let mut streamed_ask = ask.clone();
    streamed_ask["stream"] = json!(true);
    let streamed: String = sse(a.addr(), "/v1/messages", &streamed_ask)
        .filter_map(|d| serde_json::from_str::<Value>(&d).ok())
        .filter(|e| e["type"] == "content_block_delta")
        .map(|e| e["delta"]["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(streamed, text);
    let ollama = json!({ "model": smol, "messages": messages, "stream": false, "options": { "num_predict": 12, "temperature": 0 } });
    let (status, _, o) = post(&a, "/api/chat", &ollama);
    assert_eq!(status, 200, "{o}");
    assert_eq!(o["message"]["content"], text.as_str());
    // The peer served them: A has no worker for SmolLM2.
    assert!(a.worker_pid(&smol).is_none());
    // B took each as a Chat Completions request: the one asked directly and the three forwarded.
    let chat = format!("model_bucket_requests_total{{model=\"{smol}\",endpoint=\"chat\",status=\"200\"}}");
    assert_eq!(b.metric_sum(&chat), 4, "{}", b.get("/metrics").unwrap().1);
}

#[test]
fn a_stored_response_is_continued_read_and_deleted_through_another_node() {
    // B stores the first turn; the client comes back through A, which stores no such ID.
    let (a_dir, b_dir) = (bucket_of(GEMMA_FILE), bucket_of(SMOLLM2_FILE));
    let (a_port, b_port) = (free_port("127.0.0.2"), free_port("127.0.0.3"));
    let (a_url, b_url) = (format!("http://127.0.0.2:{a_port}"), format!("http://127.0.0.3:{b_port}"));
    let a = node("127.0.0.2", a_port, a_dir.path(), std::slice::from_ref(&b_url), &[], &[]);
    let b = node("127.0.0.3", b_port, b_dir.path(), std::slice::from_ref(&a_url), &[], &[]);
    let smol = smol_id();
    assert!(eventually(Duration::from_secs(10), || listed(&a, &smol).is_some()));
    let turn = |input: &str, previous: Option<&str>| json!({ "model": smol, "input": input, "previous_response_id": previous, "max_output_tokens": 12, "temperature": 0 });
    let (status, _, first) = post(&b, "/v1/responses", &turn("My name is Ada. Say hello.", None));
    assert_eq!(status, 200, "{first}");
    let id = first["id"].as_str().unwrap().to_string();
    let via_a = a.get_json(&format!("/v1/responses/{id}"));
    assert_eq!(via_a["output"], first["output"], "read through A");

    // The same continuation through A and on B itself: the same prompt, so the same text.
    let (status, _, here) = post(&b, "/v1/responses", &turn("What is my name?", Some(&id)));
    assert_eq!(status, 200, "{here}");
    let (status, _, there) = post(&a, "/v1/responses", &turn("What is my name?", Some(&id)));
    assert_eq!(status, 200, "{there}");
    assert_eq!(there["output"][0]["content"], here["output"][0]["content"]);
    assert_eq!(there["usage"]["input_tokens"], here["usage"]["input_tokens"], "the whole history");
    assert_eq!(there["previous_response_id"], id.as_str());
    // The continuation is stored where it was made, A.
    let next = there["id"].as_str().unwrap();
    assert_eq!(a.get(&format!("/v1/responses/{next}/conversation")).unwrap().0, 200);

    // Deleted through A, gone from B; an ID nobody stores is a 404 everywhere.
    let delete = open_at(a.addr(), "DELETE", &format!("/v1/responses/{id}"), "", "", None).unwrap();
    let (status, _) = model_bucket_tests::server::read_response(delete).unwrap();
    assert_eq!(status, 200);
    assert_eq!(b.get(&format!("/v1/responses/{id}")).unwrap().0, 404);
    assert_eq!(a.get(&format!("/v1/responses/{id}")).unwrap().0, 404);
    let (status, _, gone) = post(&a, "/v1/responses", &turn("Again?", Some(&id)));
    assert_eq!((status, gone["error"]["param"].as_str()), (404, Some("previous_response_id")), "{gone}");
}
